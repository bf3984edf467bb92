"""Runs qforge's QDQ export in onnxruntime and compares it with qforge's own simulation.

    qforge quantize --calib CALIB --eval EVAL.npy --sim-outputs out/sim.npy
    python tools/check_qdq.py out/mobilenet_v2_qdq.onnx EVAL.npy out/sim.npy [FP32_OUTPUTS.npy]
"""
import sys
import numpy as np
import onnx
import onnxruntime as ort


def sqnr(ref, x):
    return 10 * np.log10((ref.astype(np.float64) ** 2).sum() / ((ref.astype(np.float64) - x) ** 2).sum())


qdq, inp, sim = sys.argv[1:4]
onnx.checker.check_model(onnx.load(qdq), full_check=True)
x = np.load(inp)
so = ort.SessionOptions()
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
s = ort.InferenceSession(qdq, so, providers=["CPUExecutionProvider"])
name = s.get_inputs()[0].name
y = np.concatenate([s.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])
q = np.load(sim)
print(f"onnxruntime(QDQ) vs qforge simulation: SQNR {sqnr(q, y):.2f} dB, top-1 agreement {(q.argmax(1) == y.argmax(1)).mean():.4f}, "
      f"bit-exact fraction {(q == y).mean():.4f}")
if len(sys.argv) > 4:
    f = np.load(sys.argv[4])
    print(f"vs FP32: onnxruntime(QDQ) {sqnr(f, y):.2f} dB / top-1 {(f.argmax(1) == y.argmax(1)).mean():.3f}; qforge sim {sqnr(f, q):.2f} dB / {(f.argmax(1) == q.argmax(1)).mean():.3f}")
