"""Dewarping: text lines that bend (a page photographed in an open book) are made straight again.

Text lines are found as blobs of horizontally joined ink; each line's centre is sampled across
its length. One smooth vertical-displacement sheet is fitted to all of them at once:

    y_observed = o_i + sum_{j=1..3, k=0..2} c_jk X^j Y^k        (X, Y the normalised position)

with one free offset o_i per line (where the line sits once straight) and nine shared
coefficients (a cubic in x whose shape varies smoothly down the page, like the cubic sheet of
page-dewarp and the per-line quadratics of Leptonica's dewarp, which fits each line and then
smooths the coefficients down the page). The page is then resampled with cv2.remap so each line
lies at its o_i, and, where glyph widths show the text crowding towards the spine, widened there
(`x_stretch`). Curvature is the largest departure of the fitted lines from straight lines, in
x-heights; pages under `min_curvature` are left alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from folioscan.workers.prep.geometry import Ink, ink_mask

POWERS = [(j, k) for j in (1, 2, 3) for k in (0, 1, 2)]


@dataclass
class Sheet:
    coef: np.ndarray  # len(POWERS)
    width: int
    height: int
    curvature: float  # x-heights
    lines: int
    span: tuple[float, float] | None = None  # x range of the text lines the sheet was fitted to

    def displacement(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        X, Y = xs / self.width * 2 - 1, ys / self.height * 2 - 1
        return sum(c * X ** j * Y ** k for c, (j, k) in zip(self.coef, POWERS))


def line_samples(small: np.ndarray, ink: Ink | None = None) -> tuple[list[np.ndarray], float]:
    """Centre points (x, y) along each text line of the analysis copy, and the median glyph height.
    `ink`: the copy's shared mask and components (geometry.Ink), when the caller has them."""
    n, labels, stats = (ink or Ink(small)).components
    heights = stats[1:, 3]
    xh = _glyph_height(heights, small.shape[0])
    if not xh:
        return [], 0.0
    keep = np.zeros(n, dtype=bool)
    keep[1:] = (heights > 2) & (heights < 3 * xh)  # glyphs only: no rules, no pictures, no specks
    glyph_ink = keep[labels].astype(np.uint8)
    joined = cv2.morphologyEx(glyph_ink, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (max(3, int(2 * xh)), 1)))
    n, blobs, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    w = small.shape[1]
    step = max(2, int(xh))
    wide = np.zeros(n, dtype=bool)
    wide[1:] = (stats[1:, 2] >= 0.2 * w) & (stats[1:, 2] >= 10 * xh)
    ys, xs = np.nonzero(glyph_ink & wide[blobs])
    if not len(ys):
        return [], xh
    # per (line blob, column bin): the top and bottom of its ink, vectorised
    nbins = w // step + 1
    key = blobs[ys, xs].astype(np.int64) * nbins + xs // step
    top = np.full(n * nbins, np.iinfo(np.int64).max)
    bottom = np.full(n * nbins, -1)
    np.minimum.at(top, key, ys)
    np.maximum.at(bottom, key, ys)
    hit = np.nonzero((bottom >= 0) & (bottom - top <= 2.5 * xh))[0]  # two lines run together: skip the bin
    # `hit` is sorted, so each line's bins are one run of it
    points = np.stack([(hit % nbins) * step + step / 2, (top[hit] + bottom[hit]) / 2], axis=1).astype(np.float64)
    _, starts = np.unique(hit // nbins, return_index=True)
    return [p for p in np.split(points, starts[1:]) if len(p) >= 8], xh


def _glyph_height(heights: np.ndarray, rows: int) -> float:
    """Median height of the glyph-sized components (not specks, rules or pictures), 0 if under 30."""
    glyphs = heights[(heights > 2) & (heights < rows / 10)]
    return float(np.median(glyphs)) if len(glyphs) >= 30 else 0.0


def fit_sheet(lines: list[np.ndarray], xh: float, width: int, height: int) -> Optional[Sheet]:
    if len(lines) < 4:
        return None
    pts = np.concatenate(lines)
    idx = np.concatenate([np.full(len(l), i) for i, l in enumerate(lines)])
    X = pts[:, 0] / width * 2 - 1
    offsets = np.array([l[:, 1].mean() for l in lines])
    use = np.ones(len(pts), dtype=bool)
    for _ in range(3):  # Y at the straightened line position, refitted once that is known; outliers dropped
        Y = offsets[idx] / height * 2 - 1
        F = np.stack([X ** j * Y ** k for j, k in POWERS], axis=1)
        # the per-line offsets drop out when each line's points are taken about their own mean
        coef = np.linalg.lstsq(_demean(F[use], idx[use], len(lines)), _demean(pts[use, 1], idx[use], len(lines)), rcond=None)[0]
        rest = pts[:, 1] - F @ coef
        offsets = np.bincount(idx[use], rest[use], len(lines)) / np.maximum(np.bincount(idx[use], minlength=len(lines)), 1)
        resid = np.abs(rest - offsets[idx])
        use = resid < max(1.0, 3 * float(np.median(resid)) + 0.5)
    sheet = Sheet(coef, width, height, 0.0, len(lines), (float(pts[:, 0].min()), float(pts[:, 0].max())))
    sheet.curvature = _curvature(sheet, lines, offsets, xh)
    return sheet


def _demean(a: np.ndarray, idx: np.ndarray, groups: int) -> np.ndarray:
    counts = np.maximum(np.bincount(idx, minlength=groups), 1)
    if a.ndim == 1:
        return a - (np.bincount(idx, a, groups) / counts)[idx]
    means = np.stack([np.bincount(idx, a[:, c], groups) for c in range(a.shape[1])], axis=1) / counts[:, None]
    return a - means[idx]


def _curvature(sheet: Sheet, lines: list[np.ndarray], offsets: np.ndarray, xh: float) -> float:
    """Largest distance, in x-heights, between a fitted line and the straight chord between its ends."""
    ends = np.array([(line[:, 0].min(), line[:, 0].max()) for line in lines])
    xs = np.linspace(ends[:, 0], ends[:, 1], 24, axis=1)  # one row per line
    ys = offsets[:, None] + sheet.displacement(xs, np.broadcast_to(offsets[:, None], xs.shape))
    span = np.maximum(xs[:, -1:] - xs[:, :1], 1e-9)
    chord = ys[:, :1] + (ys[:, -1:] - ys[:, :1]) * (xs - xs[:, :1]) / span
    return round(float(np.abs(ys - chord).max()) / max(xh, 1e-9), 3)


def measure(small: np.ndarray, ink: Ink | None = None) -> Optional[Sheet]:
    lines, xh = line_samples(small, ink)
    return fit_sheet(lines, xh, small.shape[1], small.shape[0]) if lines else None


MIN_GAIN = 0.8  # the fitted foreshortening must explain a fifth of the glyph-width variation across the page
MAX_STRETCH = 3.0


def x_stretch(image: np.ndarray, sheet: Sheet, scale: float = 1.0, bands: int = 16) -> Optional[np.ndarray]:
    """Per column of the analysis copy, how much wider the page surface is there than it looks
    (1 on its flattest part), or None when the text shows no foreshortening.

    A surface turning away from the camera is foreshortened by 1 / sqrt(1 + z'^2), and the fitted
    sheet's vertical displacement follows the depth z up to the camera's geometry, so the stretch
    is modelled as sqrt(1 + (k g)^2) with g the sheet's slope along x. The one unknown, k, is fitted
    to the widths of x-height glyphs across the page (the same letters are narrower where crowded)."""
    h, w = sheet.height, sheet.width
    x0, x1 = sheet.span or (0.0, float(w))
    xs = np.arange(w) + 0.5
    ys = np.linspace(0.1, 0.9, 9)[:, None] * h
    slope = np.gradient(sheet.displacement(xs[None, :], ys), axis=1)
    g = np.sqrt((slope ** 2).mean(axis=0))
    g = g[np.clip(xs, x0, x1 - 1).astype(int)]  # held constant beyond the text, where the sheet was not fitted
    left, right = max(0, int((x0 - 8) * scale)), min(image.shape[1], int((x1 + 8) * scale))  # the text's columns only
    n, _, stats, centres = cv2.connectedComponentsWithStats(ink_mask(image[:, left:right]).astype(np.uint8), connectivity=8)
    heights, widths, cx = stats[1:, 3], stats[1:, 2], (centres[1:, 0] + left) / scale
    xh = _glyph_height(heights, image.shape[0])
    pick = (heights >= 0.6 * xh) & (heights <= 1.3 * xh) & (widths <= 1.6 * xh)  # x-height letters, not merged runs
    edges = np.linspace(x0, x1, bands + 1)
    band = np.digitize(cx[pick], edges) - 1
    mean_w, count, centre = [], [], []
    for b in range(bands):
        wb = np.sort(widths[pick][band == b])
        if len(wb) >= 12:
            cut = len(wb) // 10
            mean_w.append(wb[cut:len(wb) - cut].mean())
            count.append(len(wb))
            centre.append(int((edges[b] + edges[b + 1]) / 2))
    if len(mean_w) < 4:
        return None
    mean_w, count, gb = np.array(mean_w), np.array(count, dtype=np.float64), g[np.array(centre)]
    lo = g[int(x0):int(x1) + 1].min()

    def shrink(k: float, at: np.ndarray) -> np.ndarray:  # apparent / true width
        return np.sqrt(1 + (k * lo) ** 2) / np.sqrt(1 + (k * at) ** 2)

    def sse(k: float) -> float:
        p = shrink(k, gb)
        w0 = (count * mean_w * p).sum() / (count * p * p).sum()
        return float((count * (mean_w - w0 * p) ** 2).sum())

    ks = np.r_[0.0, np.geomspace(0.25, 64, 49)]
    errs = np.array([sse(k) for k in ks])
    k = float(ks[int(np.argmin(errs))])
    stretch = 1 / shrink(k, g)
    if k == 0 or errs.min() > MIN_GAIN * errs[0] or stretch.max() < 1.03:
        return None
    return np.minimum(stretch, MAX_STRETCH)


def remap_maps(sheet: Sheet, shape: tuple[int, int], scale: float,
               stretch: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """Full-resolution maps for cv2.remap (output pixel -> source pixel), from the sheet fitted on
    the analysis copy (`scale` = full / analysis). With `stretch` (per analysis-copy column) the
    crowded columns are widened too, so the output is wider than the input."""
    h, w = shape
    src_x = np.arange(w, dtype=np.float64)
    if stretch is not None:
        per_px = np.interp((src_x + 0.5) / scale, np.arange(len(stretch)) + 0.5, stretch)
        edges = np.r_[0.0, np.cumsum(per_px)]  # output edge coordinate of each source pixel edge
        src_x = np.interp(np.arange(int(round(edges[-1]))) + 0.5, edges, np.arange(w + 1.0)) - 0.5
    out_w = len(src_x)
    gy, gx = np.mgrid[0:h:16, 0:out_w:16].astype(np.float64)
    dy = sheet.displacement(src_x[gx.astype(int)] / scale, gy / scale) * scale
    dy = cv2.resize(dy.astype(np.float32), (out_w, h), interpolation=cv2.INTER_LINEAR)
    map_x = np.broadcast_to(src_x.astype(np.float32)[None, :], (h, out_w)).copy()
    map_y = np.arange(h, dtype=np.float32)[:, None] + dy
    return map_x, map_y


def dewarp(gray: np.ndarray, small: np.ndarray, scale: float, sheet: Sheet):
    """(flattened page, flattened analysis copy, maps used on the page)."""
    stretch = x_stretch(gray, sheet, scale)  # glyph widths at full resolution: a few pixels on the analysis copy
    map_x, map_y = remap_maps(sheet, gray.shape, scale, stretch)
    flat = cv2.remap(gray, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=255)
    sx, sy = remap_maps(sheet, small.shape, 1.0, stretch)
    flat_small = cv2.remap(small, sx, sy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=255)
    return flat, flat_small, (map_x, map_y)
