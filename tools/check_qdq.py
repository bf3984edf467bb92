"""Runs qforge's QDQ export in onnxruntime and compares it with qforge's own simulation.

    qforge quantize [--integer] --calib CALIB --eval EVAL.npy --sim-outputs out/sim.npy
    python tools/check_qdq.py out/mobilenet_v2_qdq.onnx EVAL.npy|EVAL.npz [out/sim.npy] [--fp32 FP32.npy | --fp32-model MODEL.onnx] [--save ORT.npy] [--labels LABELS-idx1-ubyte.gz]

Without qforge's outputs (out/sim.npy) it reports onnxruntime's figures alone, e.g. the accuracy
of an export on a test set qforge never evaluated it on.

onnxruntime runs the model twice: as it runs by default (graph optimizations on: with int32
biases, DequantizeLinear -> op -> QuantizeLinear groups become integer kernels, which
`--integer` simulates) and with optimizations off (every op in f32 between its dequantize and
quantize nodes, as AIMET's float simulation computes). `--save` writes the default run's
outputs (tests/golden/integer/mobilenet_v2_integer_ort4.npy was made this way, on an x86-64 CPU
with AVX-512 VNNI: onnxruntime's integer kernels on CPUs without VNNI saturate u8s8 products
and differ).
"""
import argparse
import numpy as np
import onnx
import onnxruntime as ort


def sqnr(ref, x):
    noise = ((ref.astype(np.float64) - x) ** 2).sum()
    return float("inf") if noise == 0 else 10 * np.log10((ref.astype(np.float64) ** 2).sum() / noise)


p = argparse.ArgumentParser()
p.add_argument("qdq")
p.add_argument("inputs")
p.add_argument("sim", nargs="?", help="qforge's simulated outputs on the same inputs")
p.add_argument("--fp32", help="FP32 outputs on the same inputs (.npy)")
p.add_argument("--fp32-model", help="the FP32 model, run in onnxruntime for the FP32 outputs")
p.add_argument("--save")
p.add_argument("--labels", help="IDX labels of the inputs (.gz): print accuracies too")
a = p.parse_args()
onnx.checker.check_model(onnx.load(a.qdq), full_check=True)
# An .npz holds one array per input (a model with several): the whole set runs as one batch
# (sample by sample where the model fixes its batch at 1).
many = a.inputs.endswith(".npz")
x = dict(np.load(a.inputs)) if many else np.load(a.inputs)


def run(s):
    if many:
        if all(i.shape and i.shape[0] == 1 for i in s.get_inputs()):
            # A model that fixes its batch at 1 runs sample by sample.
            n = len(next(iter(x.values())))
            return np.concatenate([s.run(None, {k: v[i : i + 1] for k, v in x.items()})[0] for i in range(n)])
        return s.run(None, x)[0]
    name = s.get_inputs()[0].name
    return np.concatenate([s.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])


q = np.load(a.sim) if a.sim else None
f = np.load(a.fp32) if a.fp32 else None
if a.fp32_model:
    f = run(ort.InferenceSession(a.fp32_model, providers=["CPUExecutionProvider"]))
for label, level in [("default (optimized)", ort.GraphOptimizationLevel.ORT_ENABLE_ALL), ("unoptimized", ort.GraphOptimizationLevel.ORT_DISABLE_ALL)]:
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.log_severity_level = 3
    try:
        s = ort.InferenceSession(a.qdq, so, providers=["CPUExecutionProvider"])
    except Exception as e:  # e.g. onnxruntime's Clip/QuantizeLinear fusion refuses 4-bit zero points
        print(f"onnxruntime {label}: the session does not load: {str(e).splitlines()[0][:300]}")
        continue
    y = run(s)
    if q is None:
        print(f"onnxruntime {label}: ran {len(y)} samples")
    else:
        print(f"onnxruntime {label} vs qforge simulation: SQNR {sqnr(y, q):.2f} dB, top-1 agreement {(q.argmax(1) == y.argmax(1)).mean():.4f}, "
              f"bit-identical {(q == y).mean():.4f}")
    if f is not None:
        print(f"  vs FP32: onnxruntime {sqnr(f, y):.2f} dB / top-1 {(f.argmax(1) == y.argmax(1)).mean():.3f}"
              + ("" if q is None else f"; qforge {sqnr(f, q):.2f} dB / {(f.argmax(1) == q.argmax(1)).mean():.3f}"))
    if a.labels:
        import gzip
        raw = gzip.open(a.labels).read()
        n = int.from_bytes(raw[4:8], "big")
        lab = np.frombuffer(raw[8:8 + n], dtype=np.uint8)[: len(x)]
        acc = lambda o: (o.argmax(1) == lab).mean()
        print(f"  accuracy: onnxruntime {acc(y):.4f}" + ("" if q is None else f", qforge {acc(q):.4f}")
              + (f", FP32 {acc(f):.4f}" if f is not None else ""))
    if a.save and level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL:
        np.save(a.save, y)
