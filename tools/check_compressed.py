"""Checks a compressed model qforge wrote: onnx's full checker, onnxruntime runs it, its outputs
match qforge's own run of the same file (`qforge run --output`), and how it compares with the
original model (top-1 agreement, and accuracy when labels are given).

    python tools/check_compressed.py ORIGINAL.onnx COMPRESSED.onnx INPUT.npy QFORGE_OUT.npy [LABELS.npy]
"""
import sys
import numpy as np
import onnx
import onnxruntime as ort

orig, comp, inp, ours = sys.argv[1:5]
onnx.checker.check_model(onnx.load(comp), full_check=True)
x = np.load(inp)
def run(p):
    s = ort.InferenceSession(p, providers=["CPUExecutionProvider"])
    i = s.get_inputs()[0]
    if i.shape[0] == 1:  # a model exported with batch 1: one sample at a time
        return np.concatenate([s.run(None, {i.name: x[k:k + 1]})[0] for k in range(len(x))])
    return s.run(None, {i.name: x})[0]
a, b, q = run(orig), run(comp), np.load(ours)
sqnr = 10 * np.log10((b ** 2).sum() / max(((b - q) ** 2).sum(), 1e-30))
print(f"checker ok; onnxruntime vs qforge on the compressed model: max |diff| {np.abs(b - q).max():.3g}, SQNR {sqnr:.1f} dB, top-1 agreement {(b.argmax(1) == q.argmax(1)).mean():.3f}")
vs = 10 * np.log10((a ** 2).sum() / max(((a - b) ** 2).sum(), 1e-30))
print(f"onnxruntime: compressed vs original top-1 agreement {(a.argmax(1) == b.argmax(1)).mean():.3f}, logits SQNR {vs:.2f} dB on {len(x)} inputs")
if len(sys.argv) > 5:
    y = np.load(sys.argv[5])
    print(f"accuracy: original {(a.argmax(1) == y).mean():.4f}, compressed {(b.argmax(1) == y).mean():.4f}")
