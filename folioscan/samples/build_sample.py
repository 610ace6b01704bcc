"""Build the bundled demo book, `sample_book.pdf`, from four real scans (see README.md in this folder).

    python folioscan/samples/build_sample.py [--eval ../shared/eval/old_books]

Four page scans of Charles G. Harper's *Half-Hours with the Highwaymen* (1908, public domain),
binarised at 300 dpi, become three PDF pages that show what folioscan's cleaning is for:

1. a clean page, as scanned;
2. a page photographed in an open book: turned 2.5 degrees and curled towards the spine
   (`bench/degrade.py`'s curl, the same the dewarp benchmarks use), with the gutter's shadow;
3. a two-page spread: the next two pages side by side on one sheet with a grey gutter between them.

Each image is embedded once at 300 dpi (lossless: 1-bit for the binarised scan, 8-bit grey for the
others), so folioscan extracts the scan rather than rendering the page. Deterministic: the same eval
files give the same PDF.
"""
from __future__ import annotations

import argparse
import io
import os
import sys

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PAGES = ("f020", "f021", "f022", "f023")  # manifest page names (book f of old_books)
DPI = 300


def load(folder: str, name: str) -> np.ndarray:
    img = cv2.imread(os.path.join(folder, "pages", f"{name}.png"), cv2.IMREAD_GRAYSCALE)
    if img is None:
        sys.exit(f"{folder}/pages/{name}.png not found: pass --eval with the old_books folder")
    return img


def skewed_and_curled(img: np.ndarray) -> np.ndarray:
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import degrade

    curled = degrade.curl(img, 0.8, spine="left")
    h, w = curled.shape
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), 2.5, 1.0)
    return cv2.warpAffine(curled, turn, (w, h), flags=cv2.INTER_LINEAR, borderValue=255)


def spread(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    h = max(left.shape[0], right.shape[0])
    pad = lambda im: np.vstack([im, np.full((h - im.shape[0], im.shape[1]), 255, np.uint8)])  # noqa: E731
    gutter = np.tile(np.concatenate([np.linspace(235, 150, 30), np.linspace(150, 235, 30)]).astype(np.uint8), (h, 1))
    return np.hstack([pad(left), gutter, pad(right)])


def png(img: np.ndarray, bilevel: bool) -> bytes:
    from PIL import Image

    im = Image.fromarray(img)
    buf = io.BytesIO()
    (im.convert("1") if bilevel else im).save(buf, format="PNG", optimize=True, dpi=(DPI, DPI))
    return buf.getvalue()


def build(eval_dir: str, out: str) -> None:
    import pymupdf

    p = [load(eval_dir, n) for n in PAGES]
    images = [(p[0], True), (skewed_and_curled(p[1]), False), (spread(p[2], p[3]), False)]
    doc = pymupdf.open()
    for img, bilevel in images:
        h, w = img.shape
        page = doc.new_page(width=w * 72 / DPI, height=h * 72 / DPI)
        page.insert_image(page.rect, stream=png(img, bilevel))
    doc.set_metadata({"title": "Half-Hours with the Highwaymen (1908), three pages: folioscan demo sample",
                      "author": "Charles G. Harper", "creationDate": "D:20261205000000Z", "modDate": "D:20261205000000Z"})
    doc.save(out, garbage=4, deflate=True, no_new_id=True)
    print(f"{out}: {os.path.getsize(out) / 1e3:.0f} kB, {len(images)} pages")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--eval", default=os.path.join(ROOT, "..", "shared", "eval", "old_books"))
    ap.add_argument("--out", default=os.path.join(HERE, "book", "sample_book.pdf"))
    args = ap.parse_args()
    build(args.eval, args.out)


if __name__ == "__main__":
    main()
