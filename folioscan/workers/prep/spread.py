"""Two-page spreads: find the gutter of a landscape scan and split it into left and right pages."""
from __future__ import annotations

import numpy as np

from folioscan.workers.prep.geometry import ink_mask


def find_gutter(small: np.ndarray, min_aspect: float = 1.15) -> int | None:
    """Column (in `small`) of the gutter of a two-page spread, or None for a single page."""
    h, w = small.shape
    if w < min_aspect * h:
        return None
    ink = ink_mask(small)
    cols = ink.mean(axis=0)
    smooth = np.convolve(cols, np.ones(max(3, w // 100)) / max(3, w // 100), mode="same")
    lo, hi = int(w * 0.35), int(w * 0.65)
    window = smooth[lo:hi]
    low = window <= window.min() + 0.1 * (np.median(window) - window.min())
    gutter = lo + _middle_of_longest_run(low)
    left, right = cols[: gutter].mean(), cols[gutter:].mean()
    band = smooth[max(0, gutter - w // 50): gutter + w // 50].mean()
    # both sides carry text, and the gutter band is much emptier than either page
    if min(left, right) < 0.01 or band > 0.25 * min(left, right):
        return None
    return gutter


def _middle_of_longest_run(flags: np.ndarray) -> int:
    best, best_len, start = 0, 0, None
    for i, f in enumerate(np.append(flags, False)):
        if f and start is None:
            start = i
        elif not f and start is not None:
            if i - start > best_len:
                best, best_len = (start + i) // 2, i - start
            start = None
    return best
