"""Border crop: remove dark scanner margins and thumbs at the edge, keep the printed area plus a margin."""
from __future__ import annotations

import cv2
import numpy as np

DARK = 90  # grey level below which a region touching the edge counts as scanner bed, shadow or thumb


def dark_border_mask(small: np.ndarray) -> np.ndarray:
    """Dark regions connected to the image edge (scanner bed, shadows, fingers)."""
    dark = (small < DARK).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=8)
    h, w = small.shape
    mask = np.zeros_like(dark, dtype=bool)
    min_area = 0.002 * h * w  # bigger than any glyph
    for i in range(1, n):
        x, y, bw, bh, area = stats[i]
        touches = x == 0 or y == 0 or x + bw == w or y + bh == h
        if touches and area >= min_area:
            mask |= labels == i
    return mask


def content_box(small: np.ndarray, margin: float = 0.02) -> tuple[int, int, int, int] | None:
    """Box (x0, y0, x1, y1) in `small` of the paper inside dark borders, or None if there is no border."""
    border = dark_border_mask(small)
    if not border.any():
        return None
    h, w = small.shape
    paper = ~border
    rows = np.nonzero(paper.mean(axis=1) > 0.6)[0]
    cols = np.nonzero(paper.mean(axis=0) > 0.6)[0]
    if len(rows) < h * 0.2 or len(cols) < w * 0.2:
        return None
    x0, x1, y0, y1 = cols[0], cols[-1] + 1, rows[0], rows[-1] + 1
    # inside the paper area, whiten what is left of the border (a thumb on the page edge)
    pad = int(margin * max(h, w))
    box = (max(0, x0 - pad // 4), max(0, y0 - pad // 4), min(w, x1 + pad // 4), min(h, y1 + pad // 4))
    if (box[2] - box[0]) * (box[3] - box[1]) > 0.97 * h * w:
        return None
    return box


def apply_crop(gray: np.ndarray, small: np.ndarray, scale: float) -> tuple[np.ndarray, tuple[int, int, int, int] | None]:
    box = content_box(small)
    if box is None:
        return gray, None
    full = tuple(int(round(v * scale)) for v in box)
    x0, y0, x1, y1 = full
    out = gray[y0:y1, x0:x1].copy()
    # whiten dark edge blobs (thumbs) that reach into the kept area
    mask = dark_border_mask(small)[box[1]:box[3], box[0]:box[2]]
    if mask.any():
        big = cv2.resize(mask.astype(np.uint8), (out.shape[1], out.shape[0]), interpolation=cv2.INTER_NEAREST)
        out[big > 0] = 255
    return out, full
