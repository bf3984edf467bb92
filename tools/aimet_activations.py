"""onnxruntime's values of chosen activations in AIMET's calibration model, and libpymo's
tf-enhanced encoding of them (dev only; a venv with aimet-onnx 2.42.0).

    python tools/aimet_activations.py AIMET_RUN_DIR CALIB.npy NAME... 

AIMET_RUN_DIR is a tools/run_aimet.py output (its model_prepared.onnx; the weights are
fake-quantized with its model.encodings as AIMET calibrates). Writes act_NAME.npy
([samples, 1, ...], one forward per sample) and prints libpymo's encoding next to AIMET's export.
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper as nh, helper
from aimet_onnx.common import libpymo
d=sys.argv[1].rstrip('/')+'/'
m=onnx.load(d+'model_prepared.onnx')
enc=json.load(open(d+'model.encodings'))
P={e['name']:e for e in enc['param_encodings']}
for t in m.graph.initializer:
    if t.name in P:
        e=P[t.name]; w=nh.to_array(t).astype(np.float32)
        s=np.float32(e['scale'][0]); o=np.float32(e['offset'][0]); n=2**e['bw']-1
        q=np.clip(np.floor(w/s - o + np.float32(0.5)),0,n); wq=((q+o)*s).astype(np.float32)
        t.CopyFrom(nh.from_array(wq,t.name))
names=sys.argv[3:]
for nm in names:
    m.graph.output.append(helper.make_tensor_value_info(nm, onnx.TensorProto.FLOAT, None))
so=ort.SessionOptions(); so.graph_optimization_level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL
s=ort.InferenceSession(m.SerializeToString(),so,providers=['CPUExecutionProvider'])
calib=np.load(sys.argv[2])
A={e['name']:e for e in enc['activation_encodings']}
for nm in names:
    acts=[s.run([nm],{'input':calib[i:i+1]})[0] for i in range(16)]
    np.save(f'act_{nm}.npy', np.stack(acts))
    tq=libpymo.BlockTensorQuantizer([1], 8, libpymo.QuantizationMode.QUANTIZATION_TF_ENHANCED)
    for a in acts:
        tq.updateStats(np.ascontiguousarray(a))
    e=tq.computeEncodings(False)[0]
    print(nm, 'libpymo on these activations:', e.delta, e.offset, ' AIMET export:', A[nm]['scale'][0], A[nm]['offset'][0])
