"""Loads qforge's encodings strictly into aimet-onnx's QuantizationSimModel (dev only; not needed to build or test).

    qforge quantize --placement aimet-onnx --out out ...
    python tools/check_aimet_load.py out/mobilenet_v2.onnx out/mobilenet_v2.encodings [--config CONFIG.json] [--eval EVAL.npy --sim out/sim.npy]

Builds aimet-onnx's simulation of the exported FP32 model with the config qforge used (default:
aimet-onnx's per-channel default), calls `load_encodings_to_sim(sim, encodings, strict=True)` and
prints the mismatches it reports (none: the file loads; --lenient: strict=False, where aimet-onnx
disables the quantizers without an encoding). With --eval/--sim, also runs aimet-onnx's
simulation with the loaded encodings and compares it with qforge's simulated outputs (SQNR).
Needs `pip install aimet-onnx==2.42.0` (it pulls in torch).
"""
import argparse
import copy

import numpy as np
import onnx
from aimet_onnx.quantsim import QuantizationSimModel, load_encodings_to_sim

p = argparse.ArgumentParser()
p.add_argument("model")
p.add_argument("encodings")
p.add_argument("--config", default=None, help="quantsim config JSON (default: aimet-onnx's per-channel default)")
p.add_argument("--param-type", default="int8")
p.add_argument("--act-type", default="int8")
p.add_argument("--lenient", action="store_true", help="strict=False: aimet-onnx disables the quantizers the file has no encoding for")
p.add_argument("--eval")
p.add_argument("--sim")
a = p.parse_args()
if a.config is None:
    import os
    import aimet_onnx
    a.config = os.path.join(os.path.dirname(aimet_onnx.__file__), "common", "quantsim_config", "default_config_per_channel.json")
model = onnx.load(a.model)
sim = QuantizationSimModel(copy.deepcopy(model), param_type=a.param_type, activation_type=a.act_type,
                           quant_scheme="min_max", config_file=a.config)
try:
    mismatches = load_encodings_to_sim(sim, a.encodings, strict=not a.lenient)
    print(f"{'lenient' if a.lenient else 'strict'} load: {len(mismatches)} mismatches"
          + (f" ({sum(1 for m in mismatches if m.enabled_mismatch)} quantizers without an encoding, disabled)" if a.lenient else ""))
except Exception as e:  # aimet-onnx raises on the first strict mismatch report
    print(f"strict load refused: {str(e)[:2000]}")
    raise SystemExit(1)
if a.eval and a.sim:
    x = np.load(a.eval)
    name = model.graph.input[0].name
    y = np.concatenate([sim.session.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])
    q = np.load(a.sim)
    noise = ((y.astype(np.float64) - q) ** 2).sum()
    print(f"aimet-onnx simulation with these encodings vs qforge's: SQNR {10 * np.log10((y.astype(np.float64) ** 2).sum() / noise):.1f} dB, "
          f"top-1 agreement {(y.argmax(1) == q.argmax(1)).mean():.3f}")
