"""Page orientation (0/90/180/270) from text-line geometry.

Horizontal vs vertical: text lines give a far sharper projection profile along them.
Upright vs upside down: Latin text has more ascenders (b d f h k l t and capitals) than
descenders (g j p q y), so inside each line more ink sits above the x-height band than below.
"""
from __future__ import annotations

import cv2
import numpy as np

from folioscan.workers.prep.deskew import estimate_skew
from folioscan.workers.prep.geometry import Ink, ink_mask, line_bands, rot90, rotate


def ascender_balance(ink: np.ndarray) -> tuple[float, int, float]:
    """(balance, lines, median line height): balance > 0 when more ink sits just above the
    x-height band than just below the baseline (upright), < 0 when upside down. Only a zone of
    ~half an x-height on each side counts, so with tight leading the neighbouring lines'
    ascenders and descenders stay out of it."""
    profile = ink.sum(axis=1).astype(np.float64)
    above = below = 0.0
    bands = line_bands(profile)
    for y0, y1 in bands:
        rows = profile[y0:y1]
        core = np.nonzero(rows >= 0.5 * rows.max())[0]  # the x-height band: the densest rows
        if len(core) == 0:
            continue
        top, bottom = y0 + core[0], y0 + core[-1] + 1
        zone = max(1, int(round(0.45 * (bottom - top))))
        above += profile[max(0, top - zone):top].sum()
        below += profile[bottom:bottom + zone].sum()
    total = above + below
    height = float(np.median([b - a for a, b in bands])) if bands else 0.0
    return (0.0 if total == 0 else (above - below) / total), len(bands), height


MIN_LINE_PX = 20  # below this, ascenders are a pixel or two: measure on a larger copy ...
DECISIVE = 0.2  # ... unless the analysis copy's balance is already this clear (bench/orientation_copies.py:
# the two copies disagree only where the balance is under 0.14)


def line_axes(small: np.ndarray, ink: Ink | None = None) -> tuple[np.ndarray, float, float, float, float]:
    """(ink mask, tilt and sharpness of the lines taken as running across, the same taken as
    running down): how sharply the ink piles up into lines either way. `ink`: the analysis copy's
    shared mask (geometry.Ink), when the caller has one."""
    mask = (ink or Ink(small)).mask  # a quarter turn of the mask is the mask of the turned page
    angle_h, sharp_h = estimate_skew(small, max_angle=15, ink=mask, fine=False, coarse_step=1.0)
    angle_v, sharp_v = estimate_skew(small, max_angle=15, ink=rot90(mask, 90), fine=False, coarse_step=1.0)
    return mask, angle_h, sharp_h, angle_v, sharp_v


def detect_orientation(small: np.ndarray, full: np.ndarray | None = None, axes=None) -> tuple[int, float]:
    """(degrees clockwise to rotate the page to make it upright, confidence 0..1).
    The up/down test runs on a straightened copy (tilted lines smear the x-height band), and on
    a larger copy taken from `full` when the lines are small and the analysis copy undecided.
    `axes`: `line_axes(small, ink)` when the caller has it (or the page's shared mask) already."""
    mask, angle_h, sharp_h, angle_v, sharp_v = axes or line_axes(small)
    if max(sharp_h, sharp_v) < 1.05:
        return 0, 0.0  # no text lines to go by
    base, tilt = (0, angle_h) if sharp_h >= sharp_v else (90, angle_v)
    balance, lines, height = _upright_balance(small, mask, base, tilt)
    undecided = abs(balance) < DECISIVE or lines < 6
    if full is not None and 0 < height < MIN_LINE_PX and full.shape[0] > small.shape[0] and undecided:
        factor = min(full.shape[0] / small.shape[0], MIN_LINE_PX / height)
        source = cv2.resize(full, (round(small.shape[1] * factor), round(small.shape[0] * factor)), interpolation=cv2.INTER_AREA)
        balance, lines, _ = _upright_balance(source, None, base, tilt)
    turn = base if balance >= 0 else (base + 180) % 360
    margin = abs(sharp_h - sharp_v) / max(sharp_h, sharp_v)
    evidence = min(1.0, lines / 6)  # a handful of lines is weak evidence for up versus down
    return turn, float(min(1.0, abs(balance) * 4) * min(1.0, margin * 5 + 0.2) * evidence)


def _upright_balance(img: np.ndarray, mask: np.ndarray | None, base: int, tilt: float) -> tuple[float, int, float]:
    """ascender_balance of `img` turned by `base` and straightened by `tilt` degrees."""
    if abs(tilt) >= 0.5:
        return ascender_balance(ink_mask(rotate(rot90(img, base), -tilt)))
    return ascender_balance(rot90(ink_mask(img) if mask is None else mask, base))
