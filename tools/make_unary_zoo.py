"""Makes tests/golden/unary_zoo.onnx (opset 18): every elementwise unary op qforge runs, each
applied to one input that spans its domain (negatives, zeros, huge and tiny values; qforge
refuses non-finite inputs, whose propagation tests/suite/nn_kernels.rs covers), one output per op,
and onnxruntime's outputs (tests/golden/unary_zoo_x.npy, unary_zoo_y.npy).

    python tools/make_unary_zoo.py
"""
import os
import numpy as np
import onnx
from onnx import helper as h, TensorProto as T
import onnxruntime as ort

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "golden")
ops = [
    ("Relu", {}), ("LeakyRelu", {"alpha": 0.1}), ("Sigmoid", {}), ("HardSigmoid", {"alpha": 0.2, "beta": 0.5}),
    ("HardSwish", {}), ("Tanh", {}), ("Erf", {}), ("Exp", {}), ("Sqrt", {}), ("Neg", {}),
    ("Abs", {}), ("Sign", {}), ("Floor", {}), ("Ceil", {}), ("Round", {}), ("Reciprocal", {}),
    ("Log", {}), ("Softplus", {}), ("Softsign", {}), ("Elu", {"alpha": 0.7}), ("Selu", {}),
    ("Celu", {"alpha": 1.3}), ("Mish", {}), ("Shrink", {"bias": 0.2, "lambd": 0.6}),
    ("ThresholdedRelu", {"alpha": 0.4}),
]
nodes = [h.make_node(op, ["x"], [f"y_{op}"], **attrs) for op, attrs in ops]
outs = [h.make_tensor_value_info(f"y_{op}", T.FLOAT, [2, 64]) for op, _ in ops]
g = h.make_graph(nodes, "unary_zoo", [h.make_tensor_value_info("x", T.FLOAT, [2, 64])], outs)
m = h.make_model(g, opset_imports=[h.make_opsetid("", 18)])
m.ir_version = 8
onnx.checker.check_model(m, full_check=True)
onnx.save(m, os.path.join(OUT, "unary_zoo.onnx"))

special = [0.0, -0.0, 1e-30, -1e-30, 0.5, -0.5, 1.5, 2.5, -2.5, 1e-3, -1e-3, 30.0, -30.0, 100.0, -100.0, 88.0]
x = np.concatenate([np.linspace(-6, 6, 128 - len(special) - 3, dtype=np.float32),
                    np.array(special + [3e38, -3e38, 2e-38], dtype=np.float32)]).reshape(2, 64).astype(np.float32)
s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
ys = s.run(None, {"x": x})
np.save(os.path.join(OUT, "unary_zoo_x.npy"), x)
np.save(os.path.join(OUT, "unary_zoo_y.npy"), np.stack(ys))
print("ops:", len(ops), "onnxruntime", ort.__version__)
