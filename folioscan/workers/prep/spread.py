"""Two-page spreads: find the gutter of a landscape scan and split it into left and right pages.

Two kinds of evidence, either enough: the gutter's shadow (a narrow band darker than the paper
beside it down most of the sheet: found even when one page is nearly blank, as a copyright page
is), or an empty band between two pages that both carry text. Either is refused when a line of
text runs across the would-be gutter (a caption or running head centred on one page with a large
figure: no line crosses the gutter of a spread), and `text_like` refuses halves whose ink is
mostly long strokes or solid areas (a picture: hatching turned a quarter looks like lines).
"""
from __future__ import annotations

import numpy as np

from folioscan.workers.prep.geometry import ink_mask

MIN_SHADOW = 18  # grey levels the gutter's columns sit below the paper beside it
MIN_EMPTY_GUTTER = 0.025  # of the width: an empty band narrower than this is a gap between lines


MIN_SPREAD_PX = 32


def find_gutter(small: np.ndarray, min_aspect: float = 1.15) -> int | None:
    """Column (in `small`) of the gutter of a two-page spread, or None for a single page."""
    band = gutter_band(small, min_aspect)
    return None if band is None else (band[0] + band[1]) // 2


def gutter_band(small: np.ndarray, min_aspect: float = 1.15) -> tuple[int, int] | None:
    """Columns [x0, x1) of `small` that belong to neither page (the gutter), or None."""
    h, w = small.shape
    if w < min_aspect * h or h < MIN_SPREAD_PX:  # a strip a few pixels high is no spread to measure
        return None
    band = _shadow(small) or _empty_band(small)
    if band is None or crossed(small, band):
        return None
    return band


LINE_REACH = 0.03  # of the width: the stretch either side of the gutter's middle where a crossing line is looked for


def crossed(small: np.ndarray, band: tuple[int, int]) -> bool:
    """Whether a line of text runs across the gutter band: a band of rows a text line high whose
    ink, near the band's middle, has no gap wider than two line heights around it (a space between
    words; the gutter of a spread is many line heights wide with the margins beside it)."""
    h, w = small.shape
    c = (band[0] + band[1]) // 2
    reach = max(4, int(LINE_REACH * w))
    x0 = max(0, c - reach)
    ink = ink_mask(small)[:, x0: c + reach]
    mid = c - x0
    rows = ink.any(axis=1)
    start = None
    for y, on in enumerate(np.append(rows, False)):
        if on and start is None:
            start = y
        elif not on and start is not None:
            height = y - start
            if 2 <= height <= h / 15:
                cols = np.nonzero(ink[start:y].any(axis=0))[0]
                left, right = cols[cols < mid], cols[cols >= mid]
                if len(left) and len(right) and right[0] - left[-1] <= 2 * height:
                    return True
            start = None
    return False


LONG_RUN = 20  # analysis-copy pixels: a run of ink along a row this long is no letter
MAX_LONG_RUN_SHARE = 0.25  # text halves of old_books spreads: at most 0.19 (a dark-bordered page); hatching 0.95


def text_like(ink: np.ndarray) -> bool:
    """Whether a would-be page's ink is text rather than picture: the share of its ink in runs
    along a row of LONG_RUN pixels or more stays under MAX_LONG_RUN_SHARE (letters are short
    runs; an engraving's hatching, a photo's dark areas are long ones)."""
    m = ink.astype(np.int8)
    total = int(m.sum())
    if total == 0:
        return True  # a blank page is no picture
    d = np.diff(np.pad(m, ((0, 0), (1, 1))), axis=1)
    length = np.nonzero(d.ravel() == -1)[0] - np.nonzero(d.ravel() == 1)[0]
    return float(length[length >= LONG_RUN].sum()) / total < MAX_LONG_RUN_SHARE


def _shadow(small: np.ndarray) -> tuple[int, int] | None:
    h, w = small.shape
    rows = small[int(h * 0.1): int(h * 0.9)]
    # a column through text has paper between the glyphs; a shadow is dark nearly all the way down
    profile = np.percentile(rows, 80, axis=0)
    k = max(3, w // 200)
    profile = np.convolve(profile, np.ones(k) / k, mode="same")
    lo, hi = int(w * 0.35), int(w * 0.65)
    x = lo + int(np.argmin(profile[lo:hi]))
    reach = max(4, w // 20)
    paper = min(np.percentile(profile[max(0, x - 2 * reach): max(1, x - reach)], 50),
                np.percentile(profile[x + reach: x + 2 * reach], 50))
    depth = paper - profile[x]
    if depth < MIN_SHADOW:
        return None
    dark = profile < paper - 0.25 * depth
    x0, x1 = x, x + 1
    while x0 > 0 and dark[x0 - 1]:
        x0 -= 1
    while x1 < w and dark[x1]:
        x1 += 1
    if x1 - x0 > 0.08 * w:  # a wide dark area is a picture or a shadowed margin, not a gutter
        return None
    return x0, x1


def _empty_band(small: np.ndarray) -> tuple[int, int] | None:
    h, w = small.shape
    ink = ink_mask(small)
    cols = ink.mean(axis=0)
    k = max(3, w // 100)
    smooth = np.convolve(cols, np.ones(k) / k, mode="same")
    lo, hi = int(w * 0.35), int(w * 0.65)
    window = smooth[lo:hi]
    low = window <= window.min() + 0.1 * (np.median(window) - window.min())
    start, length = _longest_run(low)
    if length < MIN_EMPTY_GUTTER * w:
        return None
    gutter = lo + start + length // 2
    left, right = cols[:gutter].mean(), cols[gutter:].mean()
    band = smooth[max(0, gutter - w // 50): gutter + w // 50].mean()
    # both sides carry text, and the gutter band is much emptier than either page
    if min(left, right) < 0.01 or band > 0.25 * min(left, right):
        return None
    return gutter, gutter + 1


def _longest_run(flags: np.ndarray) -> tuple[int, int]:
    best, best_len, start = 0, 0, None
    for i, f in enumerate(np.append(flags, False)):
        if f and start is None:
            start = i
        elif not f and start is not None:
            if i - start > best_len:
                best, best_len = start, i - start
            start = None
    return best, best_len
