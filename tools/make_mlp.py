"""Writes tests/golden/mlp.onnx (Gemm with transB=1 -> Relu -> Gemm with transB=0, random
weights, seed 0) and tests/golden/mlp_x.npy (64 x 16 standard-normal inputs): the smallest
model whose QDQ export onnxruntime runs through QGemm. The integer simulation's golden
(tests/golden/mlp_integer_ort.npy) is onnxruntime's run of qforge's export of it:

    python tools/make_mlp.py
    cargo run --release -- quantize tests/golden/mlp.onnx --calib tests/golden/mlp_x.npy --holdout 0 --integer \
        --out /tmp/mlp --sim-outputs /tmp/mlp/sim.npy
    python tools/check_qdq.py /tmp/mlp/mlp_qdq.onnx tests/golden/mlp_x.npy /tmp/mlp/sim.npy --save tests/golden/mlp_integer_ort.npy
"""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(0)
w1 = rng.normal(0, 0.3, (24, 16)).astype(np.float32)
b1 = rng.normal(0, 0.1, 24).astype(np.float32)
w2 = rng.normal(0, 0.3, (24, 10)).astype(np.float32)
b2 = rng.normal(0, 0.1, 10).astype(np.float32)
graph = helper.make_graph(
    [helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]), helper.make_node("Gemm", ["r", "W2", "b2"], ["y"])],
    "mlp",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
    [numpy_helper.from_array(a, n) for a, n in [(w1, "W1"), (b1, "b1"), (w2, "W2"), (b2, "b2")]],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, "tests/golden/mlp.onnx")
np.save("tests/golden/mlp_x.npy", rng.normal(0, 1, (64, 16)).astype(np.float32))
