"""ONNX's backend conformance cases as files qforge's conformance test reads.

Usage:
    python tools/make_conformance.py OUT_DIR [--only-ops FILE] [--max-bytes N] [--pack]

The committed subset (tests/conformance/cases) was made with
    python tools/make_conformance.py tests/conformance/cases \
        --only-ops tests/conformance/ops.txt --max-bytes 250000 --pack

Writes every case the installed onnx package carries, in the layout of ONNX's own
backend test data (each case a folder: model.onnx, test_data_set_0/input_K.pb and
output_K.pb as TensorProto, and data.json with its tolerances):

- OUT_DIR/node/<case>: the node tests `onnx.backend.test.case.node.collect_testcases`
  generates (one model per op and attribute combination, its expected outputs from ONNX's
  reference implementation, with each case's rtol/atol);
- OUT_DIR/pytorch-converted, pytorch-operator, simple/<case>: copied from the wheel's
  backend/test/data;
- OUT_DIR/light/<case>: the wheel's light models (AlexNet, ResNet-50, VGG-19 ... with
  generated weights) and the wheel's expected output; no input files: data.json says
  "generated_inputs": "arange", the input ONNX's runner feeds them (arange(n) / n).

A case whose inputs or outputs are not tensors (sequences, optionals, maps) gets its
model and a data.json saying so ("values": "non-tensor") and no data; the conformance test
lists it as excluded.

--only-ops FILE keeps only cases whose every op is named in FILE (one op per line; the
ops qforge's README lists in scope) and writes the others' data.json alone, so that the
committed subset stays small while the test still lists every case. --max-bytes drops
the data of cases larger than N bytes the same way (their data.json says "too large").

qforge itself never runs Python: the test reads the files this writes
(tests/suite/conformance.rs; the committed subset is under tests/conformance/).

--pack stores each kind's folder as one file, OUT_DIR/<kind>.pack.gz (gzip of records:
u32 LE path length, the path relative to the kind's folder, u64 LE data length, the data),
instead of thousands of small files.
"""

from __future__ import annotations

import argparse
import gzip
import json
import struct
import os
import shutil
import warnings

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.backend.test.case.node import collect_testcases

DATA = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")


def ops_of(model: onnx.ModelProto) -> set[str]:
    """Every op type in the model's main graph and its subgraphs (If/Loop bodies)."""
    out: set[str] = set()

    def walk(g: onnx.GraphProto) -> None:
        for n in g.node:
            out.add(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}")
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)
                for sub in a.graphs:
                    walk(sub)

    walk(model.graph)
    return out


def is_tensor(vi: onnx.ValueInfoProto) -> bool:
    return vi.type.HasField("tensor_type")


def write_json(path: str, data: dict) -> None:
    with open(path, "w") as f:
        json.dump(data, f, sort_keys=True, indent=1)


class Writer:
    def __init__(self, out: str, only_ops: set[str] | None, max_bytes: int | None):
        self.out = out
        self.only_ops = only_ops
        self.max_bytes = max_bytes
        self.count = 0

    def write(self, kind: str, name: str, model: onnx.ModelProto, data_sets, rtol, atol, generated=False):
        d = os.path.join(self.out, kind, name)
        os.makedirs(d, exist_ok=True)
        meta = {"kind": kind, "rtol": rtol, "atol": atol, "values": "tensor"}
        if generated:
            meta["generated_inputs"] = "arange"
        g = model.graph
        inits = {i.name for i in g.initializer}
        runtime_inputs = [i for i in g.input if i.name not in inits]
        if not all(is_tensor(v) for v in list(runtime_inputs) + list(g.output)):
            meta["values"] = "non-tensor"
        ops = ops_of(model)
        if self.only_ops is not None and not ops <= self.only_ops:
            meta["values"] = "not kept"
            meta["ops"] = sorted(ops)
        blobs = []
        if meta["values"] == "tensor":
            for k, (inputs, outputs) in enumerate(data_sets):
                for j, x in enumerate(inputs):
                    t = x if isinstance(x, onnx.TensorProto) else numpy_helper.from_array(
                        np.asarray(x), runtime_inputs[j].name
                    )
                    blobs.append((f"test_data_set_{k}/input_{j}.pb", t.SerializeToString()))
                for j, y in enumerate(outputs):
                    t = y if isinstance(y, onnx.TensorProto) else numpy_helper.from_array(
                        np.asarray(y), g.output[j].name
                    )
                    blobs.append((f"test_data_set_{k}/output_{j}.pb", t.SerializeToString()))
            size = model.ByteSize() + sum(len(b) for _, b in blobs)
            if self.max_bytes is not None and size > self.max_bytes:
                meta["values"] = "too large"
                meta["bytes"] = size
                meta["ops"] = sorted(ops)
                blobs = []
        if meta["values"] in ("tensor", "non-tensor"):
            with open(os.path.join(d, "model.onnx"), "wb") as f:
                f.write(model.SerializeToString())
        for rel, b in blobs:
            os.makedirs(os.path.dirname(os.path.join(d, rel)), exist_ok=True)
            with open(os.path.join(d, rel), "wb") as f:
                f.write(b)
        write_json(os.path.join(d, "data.json"), meta)
        self.count += 1


def load_pb(path: str) -> onnx.TensorProto:
    t = onnx.TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return t


def data_dir_sets(case_dir: str):
    sets = []
    for ds in sorted(x for x in os.listdir(case_dir) if x.startswith("test_data_set_")):
        p = os.path.join(case_dir, ds)
        ins = sorted((f for f in os.listdir(p) if f.startswith("input_")), key=lambda f: int(f[6:-3]))
        outs = sorted((f for f in os.listdir(p) if f.startswith("output_")), key=lambda f: int(f[7:-3]))
        sets.append(([load_pb(os.path.join(p, f)) for f in ins], [load_pb(os.path.join(p, f)) for f in outs]))
    return sets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--only-ops")
    ap.add_argument("--max-bytes", type=int)
    ap.add_argument("--pack", action="store_true")
    a = ap.parse_args()
    only = None
    if a.only_ops:
        with open(a.only_ops) as f:
            only = {line.strip() for line in f if line.strip() and not line.startswith("#")}
    if os.path.exists(a.out):
        shutil.rmtree(a.out)
    w = Writer(a.out, only, a.max_bytes)
    warnings.filterwarnings("ignore")
    for c in collect_testcases(None):
        w.write("node", c.name, c.model, c.data_sets, c.rtol, c.atol)
    for kind in ("pytorch-converted", "pytorch-operator", "simple"):
        root = os.path.join(DATA, kind)
        for name in sorted(os.listdir(root)):
            case_dir = os.path.join(root, name)
            if not os.path.exists(os.path.join(case_dir, "model.onnx")):
                continue
            rtol, atol = 1e-3, 1e-7
            if os.path.exists(os.path.join(case_dir, "data.json")):
                with open(os.path.join(case_dir, "data.json")) as f:
                    j = json.load(f)
                rtol, atol = j.get("rtol", rtol), j.get("atol", atol)
            model = onnx.load(os.path.join(case_dir, "model.onnx"))
            w.write(kind, name, model, data_dir_sets(case_dir), rtol, atol)
    light = os.path.join(DATA, "light")
    for f in sorted(os.listdir(light)):
        if not f.endswith(".onnx"):
            continue
        stem = f[: -len(".onnx")]
        model = onnx.load(os.path.join(light, f))
        outs = [load_pb(os.path.join(light, f"{stem}_output_{i}.pb")) for i in range(len(model.graph.output))]
        # No input files: the test feeds what ONNX's runner feeds the light models
        # (generate_dummy_data, random=False: arange(n) / n at the declared shape).
        w.write("light", stem, model, [([], outs)], 1e-3, 1e-7, generated=True)
    if a.pack:
        for kind in sorted(os.listdir(a.out)):
            root = os.path.join(a.out, kind)
            files = []
            for dirpath, _, names in os.walk(root):
                for n in names:
                    full = os.path.join(dirpath, n)
                    files.append(os.path.relpath(full, root).replace(os.sep, "/"))
            with gzip.GzipFile(os.path.join(a.out, f"{kind}.pack.gz"), "wb", mtime=0) as out:
                for rel in sorted(files):
                    with open(os.path.join(root, rel), "rb") as f:
                        data = f.read()
                    name = rel.encode()
                    out.write(struct.pack("<I", len(name)) + name + struct.pack("<Q", len(data)) + data)
            shutil.rmtree(root)
    print(f"wrote {w.count} cases to {a.out}")


if __name__ == "__main__":
    main()
