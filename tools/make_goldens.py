"""Makes the golden files tests compare against (onnxruntime on the CPU).

Run from the repository root with a Python that has onnx, onnxruntime, numpy and Pillow:
    python tools/make_goldens.py
Writes tests/golden/*.npy and tests/golden/photos_top1.txt. The project itself never needs Python.
"""
import os
import numpy as np
import onnxruntime as ort
from PIL import Image

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")
OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "golden")
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def session(path):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def preprocess(path, size=224, short=256):
    img = Image.open(path).convert("RGB")
    w, h = img.size
    s = short / min(w, h)
    img = img.resize((round(w * s), round(h * s)), Image.BILINEAR)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    img = img.crop((left, top, left + size, top + size))
    x = (np.asarray(img, dtype=np.float32) / 255.0 - MEAN) / STD
    return x.transpose(2, 0, 1)


def main():
    os.makedirs(OUT, exist_ok=True)
    mnv2 = session(os.path.join(SHARED, "models", "mobilenet_v2.onnx"))
    ev = np.load(os.path.join(SHARED, "reference", "mobilenet_v2", "eval.npy"))[:4]
    logits = np.concatenate([mnv2.run(None, {"input": ev[i : i + 1]})[0] for i in range(4)])
    np.save(os.path.join(OUT, "mobilenet_v2_eval4_logits.npy"), logits.astype(np.float32))

    photos = sorted(os.listdir(os.path.join(SHARED, "data", "photos")))
    lines = []
    for p in photos:
        x = preprocess(os.path.join(SHARED, "data", "photos", p))[None]
        y = mnv2.run(None, {"input": x})[0][0]
        top = np.argsort(-y)
        lines.append(f"{p} {top[0]} {y[top[0]] - y[top[1]]:.4f}")
    with open(os.path.join(OUT, "photos_top1.txt"), "w") as f:
        f.write("# photo, onnxruntime top-1 class, margin to the second logit\n" + "\n".join(lines) + "\n")

    fm = session(os.path.join(SHARED, "models", "fmnist_cnn.onnx"))
    rng = np.random.default_rng(7)
    x = rng.normal(0.0, 1.0, size=(8, 1, 28, 28)).astype(np.float32)
    np.save(os.path.join(OUT, "fmnist_input8.npy"), x)
    np.save(os.path.join(OUT, "fmnist_logits8.npy"), fm.run(None, {"input": x})[0].astype(np.float32))


if __name__ == "__main__":
    main()
