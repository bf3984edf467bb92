"""Where a low-bit classifier's accuracy goes: its input quantizer and its output quantizer.

    python tools/qat_gap.py models/fmnist_cnn.onnx out/fmnist_cnn_qdq.onnx out/eval.npy \
        $F/t10k-labels-idx1-ubyte.gz

For a QDQ export (from `qforge quantize`) of a model with one input and one output, onnxruntime
(optimizations off) reports:
- the FP32 model's accuracy, then with only its input rounded onto a grid of the export's input
  bitwidth: the min-max grid of the evaluation images (AIMET's rule: scale (max - min) / levels,
  offset round(min / scale), so the minimum itself may fall off the grid), the narrowest grid
  that holds the minimum exactly, and the export's own input encoding (the one QAT learned, for
  a QAT export);
- the export's accuracy, how many outputs tie at the top (argmax takes the first), the
  export's accuracy with its output quantizer bypassed, and the output grid against the
  logits (how often the top logit is above the grid, how many ties are at its top).
"""
import argparse
import gzip

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper


def session(model):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def run(model, x):
    s = session(model)
    name = s.get_inputs()[0].name
    return np.concatenate([s.run(None, {name: x[i:i + 500]})[0] for i in range(0, len(x), 500)])


def grid(x, scale, offset, levels):
    """x rounded onto the grid (q + offset) * scale, q in 0..levels."""
    return ((np.clip(np.round(x / scale) - offset, 0, levels) + offset) * scale).astype(np.float32)


p = argparse.ArgumentParser()
p.add_argument("fp32")
p.add_argument("qdq")
p.add_argument("inputs", help=".npy of the evaluation images, as the model takes them")
p.add_argument("labels", help="IDX labels (.gz or plain)")
a = p.parse_args()

x = np.load(a.inputs).astype(np.float32)
opener = gzip.open if a.labels.endswith(".gz") else open
with opener(a.labels, "rb") as f:
    y = np.frombuffer(f.read()[8:], np.uint8)[: len(x)]


def acc(out):
    return 100 * (out.argmax(1) == y).mean()


fp32 = onnx.load(a.fp32)
qdq = onnx.load(a.qdq)
g = qdq.graph
inits = {i.name: i for i in g.initializer}
q_in = next(n for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] == g.input[0].name)
scale = float(numpy_helper.to_array(inits[q_in.input[1]]))
T = onnx.TensorProto
# Integer range of each zero-point type a QDQ export writes.
QRANGE = {T.UINT4: (0, 15), T.INT4: (-8, 7), T.UINT8: (0, 255), T.INT8: (-128, 127)}
qmin, levels = QRANGE[inits[q_in.input[2]].data_type]
if qmin != 0:
    raise SystemExit("the input's grid must be unsigned (uint4 or uint8 zero point)")
zp = int(numpy_helper.to_array(inits[q_in.input[2]]))
bits = 4 if levels == 15 else 8

print(f"FP32 model: {acc(run(fp32, x)):.2f}%")
lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
mm_scale = (hi - lo) / levels
mm_offset = np.round(lo / mm_scale)
print(f"FP32, input on the {bits}-bit min-max grid (scale {mm_scale:.4f}, offset {mm_offset:.0f}; "
      f"min {lo:.4f} -> {mm_offset * mm_scale:.4f}): {acc(run(fp32, grid(x, mm_scale, mm_offset, levels))):.2f}%")
if lo < 0:
    # The narrowest grid holding both ends with the minimum (an image's background) on it.
    fits = [(lo / o, o) for o in range(-1, -levels - 1, -1) if (levels + o) * lo / o >= hi]
    if fits:
        ex_scale, ex_offset = min(fits)
        print(f"FP32, input on the narrowest grid with the minimum on it (scale {ex_scale:.4f}, "
              f"offset {ex_offset}): {acc(run(fp32, grid(x, ex_scale, ex_offset, levels))):.2f}%")
print(f"FP32, input on the export's grid (scale {scale:.4f}, offset {-zp}; min {lo:.4f} -> "
      f"{grid(np.array([lo]), scale, -zp, levels)[0]:.4f}): "
      f"{acc(run(fp32, grid(x, scale, -zp, levels))):.2f}%")

out = run(qdq, x)
top = out.max(1)
tied = (out == top[:, None]).sum(1) > 1
print(f"export: {acc(out):.2f}%, {tied.sum()} of {len(x)} outputs tie at the top")
# Bypass the output's QuantizeLinear -> DequantizeLinear pair.
dq_out = next(n for n in g.node if n.op_type == "DequantizeLinear" and n.output[0] == g.output[0].name)
q_out = next(n for n in g.node if n.op_type == "QuantizeLinear" and n.output[0] == dq_out.input[0])
bypass = onnx.ModelProto()
bypass.CopyFrom(qdq)
for n in list(bypass.graph.node):
    if n.output[0] == dq_out.output[0]:
        bypass.graph.node.remove(n)
    elif n.output[0] == q_out.output[0]:
        n.op_type, n.domain = "Identity", ""
        del n.input[1:]
        del n.attribute[:]
        n.output[0] = dq_out.output[0]
logits = run(bypass, x)
print(f"export with its output quantizer bypassed: {acc(logits):.2f}%")
o_scale = float(numpy_helper.to_array(inits[q_out.input[1]]))
o_zp = int(numpy_helper.to_array(inits[q_out.input[2]]))
o_min, o_max = QRANGE[inits[q_out.input[2]].data_type]
o_lo, o_hi = (o_min - o_zp) * o_scale, (o_max - o_zp) * o_scale
print(f"output grid [{o_lo:.2f}, {o_hi:.2f}] in steps of {o_scale:.2f}; logits span "
      f"[{logits.min():.2f}, {logits.max():.2f}]; the top logit is above the grid for "
      f"{100 * (logits.max(1) > o_hi).mean():.1f}% of the images; {(tied & (top >= o_hi - o_scale / 2)).sum()} "
      f"of the ties are at the grid's top")
