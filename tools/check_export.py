"""Checks an ONNX file qforge wrote: onnx's full checker, then onnxruntime's outputs against
the original model's on the same input.

    python tools/check_export.py ORIGINAL.onnx EXPORTED.onnx INPUT.npy
"""
import sys
import numpy as np
import onnx
import onnxruntime as ort

orig, exported, inp = sys.argv[1:4]
onnx.checker.check_model(onnx.load(exported), full_check=True)
x = np.load(inp)
run = lambda p: ort.InferenceSession(p, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
a, b = run(orig), run(exported)
print(f"checker ok; max |diff| {np.abs(a - b).max():.3g}; top-1 agreement {(a.argmax(1) == b.argmax(1)).mean():.3f}")
