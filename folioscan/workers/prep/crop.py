"""Border crop: remove dark scanner margins and thumbs at the edge, keep the printed area plus a margin."""
from __future__ import annotations

import cv2
import numpy as np

DARK = 90  # grey level below which a region touching the edge counts as scanner bed, shadow or thumb


def dark_border_mask(small: np.ndarray) -> np.ndarray:
    """Dark regions connected to the image edge (scanner bed, shadows, fingers)."""
    h, w = small.shape
    edges = np.concatenate([small[0], small[-1], small[:, 0], small[:, -1]])
    if edges.min() >= DARK:
        return np.zeros(small.shape, dtype=bool)  # nothing dark touches the edge: the usual clean page
    dark = (small < DARK).astype(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=8)
    x, y, bw, bh, area = stats.T
    touches = (x == 0) | (y == 0) | (x + bw == w) | (y + bh == h)
    keep = touches & (area >= 0.002 * h * w)  # bigger than any glyph
    keep[0] = False  # label 0 is the background
    return keep[labels]


def content_box(border: np.ndarray, margin: float = 0.02) -> tuple[int, int, int, int] | None:
    """Box (x0, y0, x1, y1) of the paper inside the dark border mask, or None if there is no border."""
    if not border.any():
        return None
    h, w = border.shape
    paper = ~border
    rows = np.nonzero(paper.mean(axis=1) > 0.6)[0]
    cols = np.nonzero(paper.mean(axis=0) > 0.6)[0]
    if len(rows) < h * 0.2 or len(cols) < w * 0.2:
        return None
    pad = int(margin * max(h, w)) // 4
    box = (max(0, cols[0] - pad), max(0, rows[0] - pad), min(w, cols[-1] + 1 + pad), min(h, rows[-1] + 1 + pad))
    if (box[2] - box[0]) * (box[3] - box[1]) > 0.97 * h * w:
        return None
    return tuple(int(v) for v in box)


def apply_crop(gray: np.ndarray, small: np.ndarray, scale: float):
    """(cropped page, cropped analysis copy, crop box in page pixels or None)."""
    border = dark_border_mask(small)
    box = content_box(border)
    if box is None:
        return gray, small, None
    x0, y0, x1, y1 = (int(round(v * scale)) for v in box)
    out = gray[y0:y1, x0:x1].copy()
    out_small = small[box[1]:box[3], box[0]:box[2]].copy()
    # whiten dark edge blobs (a thumb) that reach into the kept area
    mask = border[box[1]:box[3], box[0]:box[2]]
    if mask.any():
        out_small[mask] = 255
        big = cv2.resize(mask.astype(np.uint8), (out.shape[1], out.shape[0]), interpolation=cv2.INTER_NEAREST)
        out[big > 0] = 255
    return out, out_small, (x0, y0, x1, y1)
