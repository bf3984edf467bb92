"""Quantizes the bundled MobileNetV2 from Python and checks the QDQ export with onnxruntime.

    pip install onnxruntime   # for the check only; qforge itself needs numpy alone
    python python/examples/quantize_mobilenet.py [OUT]

Calibrates on three quarters of the bundled photos (every fourth photo is held out, so the
figures are on photos calibration never saw), prints qforge's fidelity figures, writes the
encodings and the QDQ model, then runs the QDQ model in onnxruntime on the held-out photos and
compares it with FP32 and with qforge's simulation.
"""

import sys
from pathlib import Path

import numpy as np

import qforge

root = Path(__file__).resolve().parents[2]
out = Path(sys.argv[1] if len(sys.argv) > 1 else "out_python")
model = root / "models" / "mobilenet_v2.onnx"

names, x = qforge.load_data(root / "data" / "images")
held = np.arange(len(x)) % 4 == 3
calib, evaluation = x[~held], x[held]
print(f"adapter: {qforge.adapter()}")
print(f"{len(calib)} calibration photos, {len(evaluation)} held out")

sim = qforge.QuantSim(model)
sim.compute_encodings(
    (calib[i:i + 8] for i in range(0, len(calib), 8)),
    progress=lambda n: print(f"\rcalibrated {n} batches of 8", end="", flush=True),
)
print()
e = sim.evaluate(evaluation)
print(f"qforge, held out: SQNR {e['sqnr_db']:.2f} dB, top-1 agreement {100 * e['top1_agreement']:.1f}%")
sim.export(out, "mobilenet_v2")
sim.export_qdq(out, "mobilenet_v2")
print(f"wrote {out}/mobilenet_v2.onnx, .encodings, _qdq.onnx")

try:
    import onnxruntime as ort
except ImportError:
    sys.exit("onnxruntime is not installed: skipping the check of the QDQ export")


def ort_run(path):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return np.concatenate([s.run(None, {name: evaluation[i:i + 1]})[0] for i in range(len(evaluation))])


def sqnr(ref, y):
    ref = ref.astype(np.float64)
    return 10 * np.log10((ref ** 2).sum() / ((ref - y) ** 2).sum())


fp32 = ort_run(model)
qdq = ort_run(out / "mobilenet_v2_qdq.onnx")
simulated = sim.simulate(evaluation)[0]
agree = (fp32.argmax(1) == qdq.argmax(1)).mean()
print(f"onnxruntime on the QDQ export, held out: SQNR {sqnr(fp32, qdq):.2f} dB, top-1 agreement {100 * agree:.1f}%")
print(f"onnxruntime vs qforge's simulation: {sqnr(qdq, simulated):.2f} dB")
