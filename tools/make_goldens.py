"""Makes the golden files tests compare against (onnxruntime on the CPU).

Run from the repository root with a Python that has onnx, onnxruntime and numpy, after
writing the evaluation crops of the bundled photos (tests/suite/common::photo_crops makes the same):
    cargo run --release --example crops -- data/photos 4 1 /tmp/eval.npy --random-only
    python tools/make_goldens.py /tmp/eval.npy
Writes tests/golden/mobilenet_v2_eval4_logits.npy, fmnist_input8.npy, fmnist_logits8.npy and
fmnist_extreme_input6.npy / fmnist_extreme_logits6.npy (inputs near the f32 limit, where every
Conv overflows; onnxruntime with its graph optimisations off, i.e. the model as written).
The project itself never needs Python.
"""
import os
import numpy as np
import onnxruntime as ort

ROOT = os.path.join(os.path.dirname(__file__), "..")
import sys
OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "golden")


def session(path):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def main():
    os.makedirs(OUT, exist_ok=True)
    mnv2 = session(os.path.join(ROOT, "models", "mobilenet_v2.onnx"))
    ev = np.load(sys.argv[1])[:4]
    logits = np.concatenate([mnv2.run(None, {"input": ev[i : i + 1]})[0] for i in range(4)])
    np.save(os.path.join(OUT, "mobilenet_v2_eval4_logits.npy"), logits.astype(np.float32))

    fm = session(os.path.join(ROOT, "models", "fmnist_cnn.onnx"))
    rng = np.random.default_rng(7)
    x = rng.normal(0.0, 1.0, size=(8, 1, 28, 28)).astype(np.float32)
    np.save(os.path.join(OUT, "fmnist_input8.npy"), x)
    np.save(os.path.join(OUT, "fmnist_logits8.npy"), fm.run(None, {"input": x})[0].astype(np.float32))

    rng = np.random.default_rng(11)
    full = lambda v: np.full((1, 1, 28, 28), v, np.float32)
    uniform = lambda scale: (rng.uniform(-1, 1, (2, 1, 28, 28)) * scale).astype(np.float32)
    x = np.concatenate([full(3e38), full(-3e38), uniform(3e38), uniform(1e19)])
    np.save(os.path.join(OUT, "fmnist_extreme_input6.npy"), x)
    y = fm.run(None, {"input": x})[0].astype(np.float32)
    np.save(os.path.join(OUT, "fmnist_extreme_logits6.npy"), y)


if __name__ == "__main__":
    main()
