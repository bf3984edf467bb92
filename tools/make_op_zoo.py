"""Makes tests/golden/op_zoo.onnx (opset 14): one small graph that uses every op qforge runs,
including a Shape/Gather/Concat chain that must fold away, and its onnxruntime outputs.

    python tools/make_op_zoo.py
"""
import os
import numpy as np
import onnx
from onnx import helper as h, TensorProto as T, numpy_helper as nh
import onnxruntime as ort

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "golden")
rng = np.random.default_rng(3)
inits = []


def w(name, *shape):
    inits.append(nh.from_array(rng.normal(0, 0.5, size=shape).astype(np.float32), name))
    return name


def c(name, values, dtype=np.int64):
    inits.append(nh.from_array(np.array(values, dtype=dtype), name))
    return name


nodes = [
    h.make_node("Conv", ["x", w("w1", 8, 3, 3, 3), w("b1", 8)], ["c1"], pads=[1, 0, 2, 1], strides=[1, 2], dilations=[2, 1]),
    h.make_node("BatchNormalization", ["c1", w("g", 8), w("be", 8), w("m", 8), c("v", np.abs(rng.normal(1, 0.2, 8)), np.float32)], ["bn"]),
    h.make_node("LeakyRelu", ["bn"], ["a1"], alpha=0.2),
    h.make_node("Conv", ["a1", w("w2", 8, 2, 3, 3)], ["c2"], pads=[1, 1, 1, 1], group=4),
    h.make_node("HardSwish", ["c2"], ["a2"]),
    h.make_node("MaxPool", ["a2"], ["p1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
    h.make_node("AveragePool", ["a2"], ["p2"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1),
    h.make_node("Concat", ["p1", "p2"], ["cat"], axis=1),
    h.make_node("Split", ["cat", c("split", [6, 10])], ["s1", "s2"], axis=1),
    h.make_node("PRelu", ["s1", w("slope", 6, 1, 1)], ["pr"]),
    h.make_node("Sigmoid", ["s2"], ["sg"]),
    h.make_node("Slice", ["sg", c("st", [0, 1]), c("en", [100, 100]), c("ax", [1, 3]), c("sp", [2, 2])], ["sl"]),
    h.make_node("Pad", ["sl", c("pads", [0, 0, 1, 0, 0, 1, 0, 2])], ["pd"], mode="constant"),
    h.make_node("Transpose", ["pr"], ["tr"], perm=[0, 2, 3, 1]),
    h.make_node("Softmax", ["tr"], ["sm"], axis=2),
    h.make_node("ReduceMean", ["sm"], ["rm"], axes=[1, 2], keepdims=0),
    h.make_node("Shape", ["pd"], ["shp"]),
    h.make_node("Gather", ["shp", c("i0", [0])], ["n"], axis=0),
    h.make_node("Concat", ["n", c("m1", [-1])], ["newshape"], axis=0),
    h.make_node("Reshape", ["pd", "newshape"], ["flat"]),
    h.make_node("Gemm", ["flat", w("wg", 12, 0), w("bg", 12)], ["gm"], transB=1),
    h.make_node("MatMul", ["rm", w("wm", 6, 12)], ["mm"]),
    h.make_node("Add", ["gm", "mm"], ["sum"]),
    h.make_node("Erf", ["sum"], ["erf"]),
    h.make_node("Div", ["erf", c("two", [2.0], np.float32)], ["half"]),
    h.make_node("Tanh", ["half"], ["th"]),
    h.make_node("Unsqueeze", ["th", c("uax", [1])], ["u"]),
    h.make_node("Squeeze", ["u", c("sax", [1])], ["y"]),
    h.make_node("Clip", ["c2", c("lo", 0.0, np.float32), c("hi", 0.5, np.float32)], ["y2"]),
    h.make_node("ConvTranspose", ["a2", w("wt", 8, 3, 3, 3), w("bt", 6)], ["ct"], strides=[2, 2], pads=[1, 0, 1, 1], output_padding=[1, 0], group=2),
    h.make_node("Resize", ["ct", "", c("scales", [1, 1, 2, 1.5], np.float32)], ["rz"], mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
    h.make_node("Resize", ["rz", "", "", c("sizes", [2, 6, 50, 33])], ["y3"], mode="linear", coordinate_transformation_mode="half_pixel"),
]


def main():
    x = rng.normal(0, 1, size=(2, 3, 21, 17)).astype(np.float32)
    # The Gemm weight's input size depends on the padded, sliced tensor: find it with onnxruntime.
    probe = [n for n in nodes]
    graph = h.make_graph(probe[:20], "probe", [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, 21, 17])], [h.make_tensor_value_info("flat", T.FLOAT, None)], [i for i in inits if i.name != "wg"])
    flat = ort.InferenceSession(h.make_model(graph, opset_imports=[h.make_opsetid("", 14)]).SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    for i, t in enumerate(inits):
        if t.name == "wg":
            inits[i] = nh.from_array(rng.normal(0, 0.1, size=(12, flat.shape[1])).astype(np.float32), "wg")
    graph = h.make_graph(nodes, "op_zoo", [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, 21, 17])],
                         [h.make_tensor_value_info("y", T.FLOAT, ["N", 12]), h.make_tensor_value_info("y2", T.FLOAT, ["N", 8, 20, 8]), h.make_tensor_value_info("y3", T.FLOAT, [2, 6, 50, 33])], inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 14)], producer_name="make_op_zoo")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, os.path.join(OUT, "op_zoo.onnx"))
    y, y2, y3 = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.save(os.path.join(OUT, "op_zoo_x.npy"), x)
    np.save(os.path.join(OUT, "op_zoo_y.npy"), y)
    np.save(os.path.join(OUT, "op_zoo_y2.npy"), y2)
    np.save(os.path.join(OUT, "op_zoo_y3.npy"), y3)
    print("op_zoo:", y.shape, y2.shape, y3.shape)


if __name__ == "__main__":
    main()
