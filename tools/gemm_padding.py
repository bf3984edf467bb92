"""Multiply-adds the GPU tiled GEMM executes for a model's dense convolutions and Gemm/MatMul
layers against the useful ones, with 64 x 64 tiles and with the tiles `ops::gemm::tile_side`
picks by shape (16, 32 or 64 rows and columns: the fewest padded rows weighed by (t + 8) / t).
Convolutions run as one GEMM per image: M = output channels, N = output positions, K = input
channels x kernel size. Usage: python tools/gemm_padding.py MODEL.onnx [--batch B]"""
import argparse
import math

import onnx
from onnx import numpy_helper, shape_inference


def tile_side(d):
    return min([64, 32, 16], key=lambda t: math.ceil(d / t) * (t + 8))


def padded(d, side):
    return math.ceil(d / side) * side


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=1, help="rows of a Gemm/MatMul layer")
    args = ap.parse_args()
    m = shape_inference.infer_shapes(onnx.load(args.model))
    shapes = {
        vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
        for vi in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output)
    }
    weights = {i.name: numpy_helper.to_array(i).shape for i in m.graph.initializer}
    useful = old = new = 0
    for n in m.graph.node:
        if n.op_type == "Conv":
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            if group != 1:
                continue
            w, o = weights[n.input[1]], shapes[n.output[0]]
            mm, nn, k = w[0], o[2] * o[3], int(w[1] * w[2] * w[3])
        elif n.op_type in ("Gemm", "MatMul") and n.input[1] in weights:
            w = weights[n.input[1]]
            mm, nn, k = args.batch, max(w), min(w)
        else:
            continue
        useful += mm * nn * k
        old += padded(mm, 64) * padded(nn, 64) * k
        new += padded(mm, tile_side(mm)) * padded(nn, tile_side(nn)) * k
    print(f"useful {2 * useful / 1e9:.3f} GFLOP per image")
    print(f"64 x 64 tiles: {2 * old / 1e9:.3f} GFLOP, {old / useful:.2f}x")
    print(f"tiles by shape: {2 * new / 1e9:.3f} GFLOP, {new / useful:.2f}x")


if __name__ == "__main__":
    main()
