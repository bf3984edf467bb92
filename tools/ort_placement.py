"""Which activations onnxruntime's static quantizer quantizes (dev only; not needed to build or test).

    python tools/ort_placement.py OUT.json LABEL=MODEL.onnx [LABEL=MODEL.onnx ...]

Runs `onnxruntime.quantization.quantize_static` (QDQ format, per channel, uint8 activations,
int8 weights, defaults otherwise) on each model with 4 seeded random calibration inputs and
lists, per label, the runtime tensors a QuantizeLinear reads: the quantizers onnxruntime's
deployment has. tests/golden/placement/ort_mobilenet_v2.json was made this way from the
BN-folded MobileNetV2 and its cross-layer-equalized form (`qforge quantize [--cle]` writes both
as mobilenet_v2.onnx).
"""
import json
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

out = {"onnxruntime": onnxruntime.__version__}
for arg in sys.argv[2:]:
    label, path = arg.split("=", 1)
    m = onnx.load(path)
    inp = m.graph.input[0]
    shape = [d.dim_value or 1 for d in inp.type.tensor_type.shape.dim]
    rng = np.random.default_rng(0)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{inp.name: rng.standard_normal(shape).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.it, None)

    with tempfile.NamedTemporaryFile(suffix=".onnx") as f:
        quantize_static(path, f.name, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        q = onnx.load(f.name)
    consts = {i.name for i in q.graph.initializer} | {o for n in q.graph.node if n.op_type == "Constant" for o in n.output}
    producer = {o: n.op_type for n in q.graph.node for o in n.output}
    out[label] = sorted({n.input[0] for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in consts})
    out[label + "_producers"] = {t: producer.get(t, "input") for t in out[label]}
json.dump(out, open(sys.argv[1], "w"), indent=1, sort_keys=True)
