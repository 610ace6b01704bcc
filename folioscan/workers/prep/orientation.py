"""Page orientation (0/90/180/270) from text-line geometry.

Horizontal vs vertical: text lines give a far sharper projection profile along them.
Upright vs upside down: Latin text has more ascenders (b d f h k l t and capitals) than
descenders (g j p q y), so inside each line more ink sits above the x-height band than below.
"""
from __future__ import annotations

import cv2
import numpy as np

from folioscan.workers.prep.deskew import estimate_skew
from folioscan.workers.prep.geometry import ink_mask, rot90


def _line_bands(profile: np.ndarray) -> list[tuple[int, int]]:
    """Runs of rows whose ink is above a fraction of the typical line's ink."""
    if profile.max() == 0:
        return []
    on = profile > 0.15 * np.percentile(profile[profile > 0], 90)
    bands, start = [], None
    for i, v in enumerate(on):
        if v and start is None:
            start = i
        elif not v and start is not None:
            bands.append((start, i))
            start = None
    if start is not None:
        bands.append((start, len(on)))
    return [b for b in bands if b[1] - b[0] >= 3]


def ascender_balance(ink: np.ndarray) -> tuple[float, int, float]:
    """(balance, lines, median line height): balance > 0 when more ink sits above the x-height
    band than below it (upright), < 0 when upside down."""
    above = below = 0.0
    bands = _line_bands(ink.sum(axis=1).astype(np.float64))
    for y0, y1 in bands:
        rows = ink[y0:y1].sum(axis=1).astype(np.float64)
        core = np.nonzero(rows >= 0.5 * rows.max())[0]  # the x-height band: the densest rows
        if len(core) == 0:
            continue
        above += rows[: core[0]].sum()
        below += rows[core[-1] + 1:].sum()
    total = above + below
    height = float(np.median([b - a for a, b in bands])) if bands else 0.0
    return (0.0 if total == 0 else (above - below) / total), len(bands), height


MIN_LINE_PX = 20  # below this, ascenders are a pixel or two: measure on a larger copy


def detect_orientation(small: np.ndarray, full: np.ndarray | None = None) -> tuple[int, float]:
    """(degrees clockwise to rotate the page to make it upright, confidence 0..1).
    `full` (the page at full resolution) sharpens the up/down decision when lines are small."""
    ink = ink_mask(small)  # a quarter turn of the mask is the mask of the turned page
    _, sharp_h = estimate_skew(small, max_angle=3, ink=ink, fine=False)
    _, sharp_v = estimate_skew(small, max_angle=3, ink=rot90(ink, 90), fine=False)
    if max(sharp_h, sharp_v) < 1.05:
        return 0, 0.0  # no text lines to go by
    base = 0 if sharp_h >= sharp_v else 90
    balance, lines, height = ascender_balance(rot90(ink, base))
    if full is not None and 0 < height < MIN_LINE_PX and full.shape[0] > small.shape[0]:
        factor = min(full.shape[0] / small.shape[0], MIN_LINE_PX / height)
        size = (round(small.shape[1] * factor), round(small.shape[0] * factor))
        larger = cv2.resize(full, size, interpolation=cv2.INTER_AREA)
        balance, lines, height = ascender_balance(ink_mask(rot90(larger, base)))
    turn = base if balance >= 0 else (base + 180) % 360
    margin = abs(sharp_h - sharp_v) / max(sharp_h, sharp_v)
    evidence = min(1.0, lines / 6)  # a handful of lines is weak evidence for up versus down
    return turn, float(min(1.0, abs(balance) * 4) * min(1.0, margin * 5 + 0.2) * evidence)
