"""Makes tests/golden/auto_pad.onnx (opset 13): Conv, MaxPool and AveragePool with auto_pad
SAME_UPPER, SAME_LOWER and VALID at strides 1 and 2 and odd and even kernels (as
TensorFlow-converted models use them), and onnxruntime's outputs (tests/golden/auto_pad_x.npy,
auto_pad_y.npy: the outputs flattened and concatenated in order).

    python tools/make_auto_pad.py
"""
import os
import numpy as np
import onnx
from onnx import helper as h, TensorProto as T, numpy_helper as nh
import onnxruntime as ort

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "golden")
rng = np.random.default_rng(5)
shape = [2, 3, 11, 10]
inits, nodes, outs = [], [], []
k = 0
for mode in ["SAME_UPPER", "SAME_LOWER", "VALID"]:
    for stride in [1, 2]:
        for ker in [(3, 3), (2, 4)]:
            w = f"w{k}"
            inits.append(nh.from_array(rng.normal(size=(4, 3, *ker)).astype(np.float32), w))
            nodes.append(h.make_node("Conv", ["x", w], [f"c{k}"], auto_pad=mode, strides=[stride, stride]))
            nodes.append(h.make_node("MaxPool", ["x"], [f"m{k}"], auto_pad=mode, kernel_shape=list(ker), strides=[stride, stride]))
            nodes.append(h.make_node("AveragePool", ["x"], [f"a{k}"], auto_pad=mode, kernel_shape=list(ker), strides=[stride, stride]))
            outs += [f"c{k}", f"m{k}", f"a{k}"]
            k += 1
g = h.make_graph(nodes, "auto_pad", [h.make_tensor_value_info("x", T.FLOAT, shape)],
                 [h.make_tensor_value_info(o, T.FLOAT, ["n", "c", "h", "w"]) for o in outs], inits)
m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
m.ir_version = 8
onnx.checker.check_model(m)
onnx.save(m, os.path.join(OUT, "auto_pad.onnx"))
x = rng.normal(size=shape).astype(np.float32)
ys = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
np.save(os.path.join(OUT, "auto_pad_x.npy"), x)
np.save(os.path.join(OUT, "auto_pad_y.npy"), np.concatenate([y.ravel() for y in ys]))
print(len(outs), "outputs; onnxruntime", ort.__version__, [y.shape for y in ys[:6]])
