"""Makes tests/golden/variadic.onnx (opset 13): Sum, Mean, Max and Min with one to four
broadcasting inputs (ResNet-50's and ShuffleNet's Sum among them), and onnxruntime's outputs
(tests/golden/variadic_x.npy, and variadic_y.npy: the outputs stacked in order).

    python tools/make_variadic.py
"""
import os
import numpy as np
import onnx
from onnx import helper as h, TensorProto as T, numpy_helper as nh
import onnxruntime as ort

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "golden")
rng = np.random.default_rng(7)
inits = [
    nh.from_array(rng.normal(size=(1, 3, 1, 5)).astype(np.float32), "c1"),
    nh.from_array(rng.normal(size=(5,)).astype(np.float32), "c2"),
    nh.from_array(rng.normal(size=(2, 3, 4, 5)).astype(np.float32), "c3"),
]
cases = [
    ("Sum", ["x", "c1", "c2"]), ("Sum", ["x"]), ("Sum", ["x", "c3"]), ("Mean", ["x", "c1", "c2", "c3"]),
    ("Mean", ["x"]), ("Max", ["x", "c1", "c2"]), ("Max", ["x", "c3"]), ("Min", ["c2", "x", "c1", "c3"]),
    ("Min", ["x"]),
]
nodes = [h.make_node(op, ins, [f"y{k}"]) for k, (op, ins) in enumerate(cases)]
outs = [h.make_tensor_value_info(f"y{k}", T.FLOAT, [2, 3, 4, 5]) for k in range(len(cases))]
g = h.make_graph(nodes, "variadic", [h.make_tensor_value_info("x", T.FLOAT, [2, 3, 4, 5])], outs, inits)
m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
m.ir_version = 8
onnx.checker.check_model(m, full_check=True)
onnx.save(m, os.path.join(OUT, "variadic.onnx"))
x = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
ys = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
np.save(os.path.join(OUT, "variadic_x.npy"), x)
np.save(os.path.join(OUT, "variadic_y.npy"), np.stack(ys))
print(len(cases), "cases; onnxruntime", ort.__version__)
