"""Greedy CTC decoding of PP-OCRv4 rec's FP32 outputs (onnxruntime) and of qforge's simulated
outputs on the same held-out lines: how many lines read the same (README, "Real models").

    qforge quantize models/real/ch_PP-OCRv4_rec_infer.onnx --calib rec.npy \\
        --eval-inputs held.npy --sim-outputs sim.npy
    python tools/check_ocr_rec.py held.npy sim.npy
Development check only; the project itself never needs Python.
"""
import sys
import numpy as np
import onnx
import onnxruntime as ort

MODEL = "models/real/ch_PP-OCRv4_rec_infer.onnx"


def decode(y, chars):
    lines = []
    for row in y.argmax(-1):
        keep = [c for k, c in enumerate(row) if c != 0 and (k == 0 or c != row[k - 1])]
        lines.append("".join(chars[c] for c in keep))
    return lines


def main():
    meta = {p.key: p.value for p in onnx.load(MODEL).metadata_props}
    chars = ["<blank>"] + meta["character"].splitlines() + [" "]
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(MODEL, so, providers=["CPUExecutionProvider"])
    x, q = np.load(sys.argv[1]), np.load(sys.argv[2])
    f = np.concatenate([s.run(None, {"x": x[i : i + 1]})[0] for i in range(len(x))])
    fp32, sim = decode(f, chars), decode(q, chars)
    same = sum(a == b for a, b in zip(fp32, sim))
    steps = float((f.argmax(-1) == q.argmax(-1)).mean())
    print(f"lines read the same: {same}/{len(fp32)}; time steps with the same character: {steps:.3f}")
    for a, b in zip(fp32, sim):
        print(f"  FP32 {a!r:12} simulated {b!r}")


if __name__ == "__main__":
    main()
