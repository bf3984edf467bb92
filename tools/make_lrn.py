"""Makes tests/golden/lrn.onnx (opset 13): LRN as AlexNet and Inception-v1 use it (size 5),
sizes 3 and 1, and a window wider than the channels (9 of 7), with onnxruntime's outputs
(tests/golden/lrn_x.npy, lrn_y.npy stacked in output order). onnxruntime takes odd sizes
only; qforge follows ONNX's window for even ones too (floor before, ceil after the channel).

    python tools/make_lrn.py
"""
import os
import numpy as np
import onnx
from onnx import helper as h, TensorProto as T
import onnxruntime as ort

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "golden")
shape = [2, 7, 5, 6]
cases = [dict(size=5, alpha=1e-4, beta=0.75, bias=1.0), dict(size=3, alpha=0.5, beta=0.6, bias=2.0),
         dict(size=1, alpha=1.0, beta=1.0, bias=1.0), dict(size=9, alpha=0.3, beta=0.75, bias=1.5)]
nodes = [h.make_node("LRN", ["x"], [f"y{k}"], **c) for k, c in enumerate(cases)]
outs = [h.make_tensor_value_info(f"y{k}", T.FLOAT, shape) for k in range(len(cases))]
g = h.make_graph(nodes, "lrn", [h.make_tensor_value_info("x", T.FLOAT, shape)], outs)
m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
m.ir_version = 8
onnx.checker.check_model(m, full_check=True)
onnx.save(m, os.path.join(OUT, "lrn.onnx"))
x = (np.random.default_rng(11).normal(size=shape) * 3).astype(np.float32)
ys = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
np.save(os.path.join(OUT, "lrn_x.npy"), x)
np.save(os.path.join(OUT, "lrn_y.npy"), np.stack(ys))
print(len(cases), "cases; onnxruntime", ort.__version__)
