"""Random crops of the bundled photos for evaluation (dev only; not needed to build or test).

python tools/make_crops.py data/photos N OUT.npy [SEED]
Each crop: a random square covering 35-100% of the shorter side at a random position, random
horizontal flip, resized to 224x224 (bilinear), ImageNet mean/std; N x 3 x 224 x 224 float32.
"""
import sys
import numpy as np
from PIL import Image
import pathlib

src, n, out = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rng = np.random.default_rng(int(sys.argv[4]) if len(sys.argv) > 4 else 0)
photos = sorted(p for p in src.iterdir() if p.suffix.lower() in (".jpg", ".png"))
mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
xs = []
for i in range(n):
    im = Image.open(photos[i % len(photos)]).convert("RGB")
    w, h = im.size
    side = int(min(w, h) * rng.uniform(0.35, 1.0))
    x0, y0 = rng.integers(0, w - side + 1), rng.integers(0, h - side + 1)
    im = im.crop((x0, y0, x0 + side, y0 + side)).resize((224, 224), Image.BILINEAR)
    if rng.random() < 0.5:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    a = (np.asarray(im, dtype=np.float64) / 255.0 - mean) / std
    xs.append(a.transpose(2, 0, 1).astype(np.float32))
np.save(out, np.stack(xs))
print(out, np.stack(xs).shape)
