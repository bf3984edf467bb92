"""Makes the golden files of the real public models in models/real (tests/suite/real_models.rs).

Run from the repository root with a Python that has onnx, onnxruntime and numpy:
    python tools/make_real_goldens.py
Writes tests/golden/real/<model>_*.npy: seeded small inputs and onnxruntime's outputs on them
(CPU, graph optimisations off, i.e. the models as written). The layout detector's input is
1x3x800x608 (fixed in the model); to keep the committed file small its seeded input is a
1x3x50x38 array, repeated 16 times along each spatial axis (tests/suite/real_models.rs repeats it the
same way). models/real/SOURCES.md says which package each model comes from.

With --calib DIR it writes calibration sets for `qforge quantize` instead (README, "Real
models"): DIR/det.npy (64 text images 3x96x128), rec.npy (64 text lines 3x48x160), layout.npy
(16 text pages 3x800x608), centerface.npy (80 photos 3x32x32 from CROPS.npy, the
crops example's 224x224 crops of data/images, averaged 7x7 and back to 0..255) and
silero.npy (128 windows of 576 samples), and silero_decoder.npz (the decoder's two inputs on
those windows; `--silero-decoder DIR` makes it alone from DIR/silero.npy):
    cargo run --release --example crops -- data/images 1 3 /tmp/crops224.npy
    python tools/make_real_goldens.py --calib /tmp/real_calib /tmp/crops224.npy
trueocr's reading-order model needs the package's own feature function, read from its wheel
(`pip download --no-deps trueocr==0.1.1`): `--trueocr WHEEL` writes its goldens, `--trueocr
WHEEL DIR` its calibration set DIR/trueocr.npz (64 seeded pages).
The project itself never needs Python.
"""
import os
import sys
import numpy as np
import onnxruntime as ort

ort.set_default_logger_severity(3)

# A 5x7 bitmap font for a few capitals: text-like inputs for the OCR models.
GLYPHS = {
    "Q": ["01110", "10001", "10001", "10001", "10101", "10010", "01101"],
    "F": ["11111", "10000", "10000", "11110", "10000", "10000", "10000"],
    "O": ["01110", "10001", "10001", "10001", "10001", "10001", "01110"],
    "R": ["11110", "10001", "10001", "11110", "10100", "10010", "10001"],
    "G": ["01110", "10001", "10000", "10111", "10001", "10001", "01110"],
    "E": ["11111", "10000", "10000", "11110", "10000", "10000", "11111"],
    "N": ["10001", "11001", "10101", "10011", "10001", "10001", "10001"],
    "X": ["10001", "10001", "01010", "00100", "01010", "10001", "10001"],
    "U": ["10001", "10001", "10001", "10001", "10001", "10001", "01110"],
    " ": ["00000"] * 7,
}


def text_image(h, w, lines, scale, rng):
    """Dark text on a light, slightly noisy background: 3 x h x w in [0, 255]."""
    img = np.full((h, w), 235.0)
    for top, left, text in lines:
        for k, ch in enumerate(text):
            g = np.array([[int(c) for c in row] for row in GLYPHS[ch]], np.float64)
            g = np.kron(g, np.ones((scale, scale)))
            y, x = top, left + k * 6 * scale
            gh, gw = g.shape
            gh, gw = min(gh, h - y), min(gw, w - x)
            if gh > 0 and gw > 0:
                img[y : y + gh, x : x + gw] -= 200.0 * g[:gh, :gw]
    img = img + rng.normal(0.0, 4.0, size=img.shape)
    return np.clip(np.stack([img, img * 0.98, img * 1.01]), 0, 255)

ROOT = os.path.join(os.path.dirname(__file__), "..")
MODELS = os.path.join(ROOT, "models", "real")
OUT = os.path.join(ROOT, "tests", "golden", "real")


def session(name):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(os.path.join(MODELS, name), so, providers=["CPUExecutionProvider"])


def save(name, a):
    np.save(os.path.join(OUT, name), np.ascontiguousarray(a))


LETTERS = [c for c in GLYPHS if c != " "]
MEAN = np.array([0.485, 0.456, 0.406]).reshape(3, 1, 1)
STD = np.array([0.229, 0.224, 0.225]).reshape(3, 1, 1)


def words(rng, n):
    return "".join(rng.choice(LETTERS + [" "], size=n, p=[0.85 / len(LETTERS)] * len(LETTERS) + [0.15]))


def tone(rng, n):
    t = np.arange(n) / 16000.0
    f, am = rng.uniform(80, 600), rng.uniform(0.5, 6)
    level = rng.choice([0.0, 0.05, 0.3])
    y = level * np.sin(2 * np.pi * f * t) * np.sin(2 * np.pi * am * t)
    return y + rng.uniform(0.005, 0.05) * rng.normal(size=n)


def calib(out, crops):
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(190)
    det = []
    for _ in range(64):
        lines = [(int(rng.integers(4, 30)) + 36 * i, int(rng.integers(0, 24)), words(rng, 8)) for i in range(2)]
        det.append((text_image(96, 128, lines, 2, rng) / 255.0 - MEAN) / STD)
    np.save(os.path.join(out, "det.npy"), np.stack(det).astype(np.float32))
    rec = [text_image(48, 160, [(10, int(rng.integers(0, 12)), words(rng, 6))], 4, rng) / 127.5 - 1.0 for _ in range(64)]
    np.save(os.path.join(out, "rec.npy"), np.stack(rec).astype(np.float32))
    pages = []
    for _ in range(16):
        lines = [(40 + 30 * i, int(rng.integers(20, 120)), words(rng, int(rng.integers(10, 40)))) for i in range(24)]
        pages.append((text_image(800, 608, lines, 3, rng) / 255.0 - MEAN) / STD)
    np.save(os.path.join(out, "layout.npy"), np.stack(pages).astype(np.float32))
    x = np.load(crops)[:80]
    x = x.reshape(80, 3, 32, 7, 32, 7).mean(axis=(3, 5))
    np.save(os.path.join(out, "centerface.npy"), np.clip((x * STD + MEAN) * 255.0, 0, 255).astype(np.float32))
    windows = np.stack([tone(rng, 576) for _ in range(128)]).astype(np.float32)
    np.save(os.path.join(out, "silero.npy"), windows)
    silero_decoder(out, windows)


def silero_decoder(out, windows):
    """The decoder's inputs as it runs: the encoder's features of 8 streams of 16 windows, each
    stream stepped from a zero state; every step's features and the state it starts from."""
    enc = session("silero_encoder_v5.onnx").run(None, {"input": windows})[0][:, :, 0]
    dec = session("silero_decoder_v5.onnx")
    states = []
    for s in range(8):
        state = np.zeros((2, 1, 128), np.float32)
        for i in range(16 * s, 16 * s + 16):
            states.append(state)
            state = dec.run(None, {"input": enc[i : i + 1], "state": state})[1]
    np.savez(os.path.join(out, "silero_decoder.npz"), input=enc, state=np.concatenate(states, axis=1))


def trueocr_features(wheel):
    """trueocr's own feature function (trueocr/order.py), loaded from its wheel: the package's
    __init__ imports OpenCV, which the reading-order features do not need."""
    import types
    import zipfile

    source = zipfile.ZipFile(wheel).read("trueocr/order.py").decode()
    module = types.ModuleType("trueocr_order")
    exec(compile(source, "trueocr/order.py", "exec"), module.__dict__)
    return module.line_features


def page_lines(rng, n, real):
    """`n` text lines of a seeded page (a header, two columns of body lines, a footer), the
    last `n - real` of them padding: boxes (x0, y0, x1, y1) on a 1240x1754 page and texts."""
    boxes, texts = [], []
    for i in range(real):
        if i == 0:
            x0, y0, w = 300, 120, 640
        elif i == real - 1:
            x0, y0, w = 560, 1660, 120
        else:
            col, row = (i - 1) % 2, (i - 1) // 2
            x0, y0, w = 100 + 560 * col, 220 + 44 * row, int(rng.integers(300, 500))
        x0 += int(rng.integers(-6, 6))
        boxes.append((x0, y0, x0 + w, y0 + int(rng.integers(24, 32))))
        t = "".join(rng.choice(list("abcdefghij klmnopqrstuvwxyz0123456789"), size=int(rng.integers(8, 60))))
        texts.append(("1. " if rng.random() < 0.1 else "") + t.strip().capitalize() + ("." if rng.random() < 0.5 else ""))
    boxes += [(0, 0, 1, 1)] * (n - real)
    texts += [""] * (n - real)
    mask = np.arange(n) < real
    return np.array(boxes, np.float32), texts, mask


def trueocr_pages(wheel, rng, count, n):
    """Features and masks of `count` seeded pages of `n` lines (some padded), as trueocr
    computes them, stacked on the batch dim."""
    features = trueocr_features(wheel)
    feats, masks = [], []
    for _ in range(count):
        real = int(rng.integers(n - 6, n + 1))
        boxes, texts, mask = page_lines(rng, n, real)
        f = features(boxes, (1240.0, 1754.0), texts)
        f[~mask] = 0.0
        feats.append(f)
        masks.append(mask)
    return np.stack(feats).astype(np.float32), np.stack(masks)


def trueocr(wheel, calib_dir=None):
    """trueocr 0.1.1's reading-order model (a transformer encoder over text lines): goldens on
    one seeded page of 24 lines (4 of them padding), or with `calib_dir` a calibration set of
    64 pages (trueocr.npz: feats and mask)."""
    rng = np.random.default_rng(187)
    if calib_dir:
        feats, mask = trueocr_pages(wheel, rng, 64, 24)
        np.savez(os.path.join(calib_dir, "trueocr.npz"), feats=feats, mask=mask)
        return
    boxes, texts, mask = page_lines(rng, 24, 20)
    feats = trueocr_features(wheel)(boxes, (1240.0, 1754.0), texts)
    feats[~mask] = 0.0
    feats, mask = feats[None].astype(np.float32), mask[None]
    save("trueocr_feats.npy", feats)
    save("trueocr_mask.npy", mask)
    ys = session("trueocr_order.onnx").run(None, {"feats": feats, "mask": mask})
    for name, y in zip(["a", "cls", "same", "tab"], ys):
        save(f"trueocr_{name}.npy", y.astype(np.float32))


def main():
    os.makedirs(OUT, exist_ok=True)

    # PP-OCRv4 text detection (DBNet): a probability map per pixel.
    # Two lines of text, normalised as PP-OCR's detector expects (ImageNet mean and std).
    rng = np.random.default_rng(180)
    img = text_image(96, 128, [(16, 8, "QFORGE"), (56, 20, "RUN ONNX")], 2, rng)
    mean = np.array([0.485, 0.456, 0.406]).reshape(3, 1, 1)
    std = np.array([0.229, 0.224, 0.225]).reshape(3, 1, 1)
    x = ((img / 255.0 - mean) / std)[None].astype(np.float32)
    save("ppocr_det_x.npy", x)
    save("ppocr_det_y.npy", session("ch_PP-OCRv4_det_infer.onnx").run(None, {"x": x})[0])

    # PP-OCRv4 text recognition (SVTR-LCNet): per time step, a softmax over 6,625 characters.
    # One line of text, normalised to [-1, 1] as PP-OCR's recogniser expects.
    rng = np.random.default_rng(181)
    img = text_image(48, 160, [(10, 6, "QFORGE"), ], 4, rng)
    x = (img / 127.5 - 1.0)[None].astype(np.float32)
    save("ppocr_rec_x.npy", x)
    save("ppocr_rec_y.npy", session("ch_PP-OCRv4_rec_infer.onnx").run(None, {"x": x})[0])

    # PicoDet layout detector: class scores and box distributions on four strides.
    rng = np.random.default_rng(182)
    small = rng.normal(0.0, 1.0, size=(1, 3, 50, 38)).astype(np.float32)
    save("layout_x_small.npy", small)
    x = np.repeat(np.repeat(small, 16, axis=2), 16, axis=3)
    s = session("layout_cdla.onnx")
    ys = s.run(None, {"image": x})
    for o, y in zip(s.get_outputs(), ys):
        print("layout output", o.name, y.shape)
    # Scores (first four outputs) and box distributions (last four), each concatenated over strides.
    save("layout_scores.npy", np.concatenate(ys[:4], axis=1))
    save("layout_boxes.npy", np.concatenate(ys[4:], axis=1))

    # CenterFace: heatmap, box scales, offsets and five landmarks, batch 10 of 32x32 (fixed).
    rng = np.random.default_rng(183)
    x = rng.uniform(0.0, 255.0, size=(10, 3, 32, 32)).astype(np.float32)
    save("centerface_x.npy", x)
    for i, y in enumerate(session("centerface.onnx").run(None, {"input.1": x})):
        save(f"centerface_y{i}.npy", y)

    # Silero VAD v5 as faster-whisper runs it: the encoder on 4 windows of 512 samples with 64
    # samples of context, then the decoder (an unrolled LSTM cell) stepped over them with its state.
    rng = np.random.default_rng(184)
    t = np.arange(4 * 576) / 16000.0
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t)
    audio = (tone + 0.05 * rng.normal(size=t.shape)).astype(np.float32).reshape(4, 576)
    save("silero_audio.npy", audio)
    enc = session("silero_encoder_v5.onnx").run(None, {"input": audio})[0]
    save("silero_encoded.npy", enc)
    dec = session("silero_decoder_v5.onnx")
    state = np.zeros((2, 1, 128), np.float32)
    probs = []
    for i in range(4):
        p, state = dec.run(None, {"input": enc[i : i + 1, :, 0], "state": state})
        probs.append(p.reshape(-1))
    save("silero_probs.npy", np.concatenate(probs).astype(np.float32))
    save("silero_state.npy", state)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--calib":
        calib(sys.argv[2], sys.argv[3])
    elif len(sys.argv) in (3, 4) and sys.argv[1] == "--trueocr":
        trueocr(sys.argv[2], sys.argv[3] if len(sys.argv) == 4 else None)
    elif len(sys.argv) == 3 and sys.argv[1] == "--silero-decoder":
        silero_decoder(sys.argv[2], np.load(os.path.join(sys.argv[2], "silero.npy")))
    else:
        main()
