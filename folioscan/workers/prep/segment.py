"""Segmentation of a cleaned page: text blocks, columns, lines in reading order, and a text-density
estimate (characters per megapixel) that the VLM engines use to pick their vision-token budget."""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from folioscan.workers.prep.geometry import Ink, line_bands

CHAR_ADVANCE = 0.72  # mean character advance / measured line-band height (median fit on old_books pages)


@dataclass
class Layout:
    blocks: list[tuple[int, int, int, int]] = field(default_factory=list)  # reading order
    n_columns: int = 0
    lines: list[tuple[int, int, int, int]] = field(default_factory=list)
    est_chars: int = 0
    ink_ratio: float = 0.0
    x_height: float = 0.0  # median height of the lines' x-height band (the rows of densest ink), pixels


def _columns(ink: np.ndarray, blocks) -> int:
    """Columns = runs of text separated by vertical white gutters spanning most of the text height."""
    if not blocks:
        return 0
    x0 = min(b[0] for b in blocks)
    x1 = max(b[2] for b in blocks)
    cover = np.zeros(ink.shape[1], dtype=bool)
    for b in blocks:
        if (b[3] - b[1]) > 0.15 * ink.shape[0]:  # only tall blocks define columns
            cover[b[0]:b[2]] = True
    runs = np.diff(np.concatenate([[0], cover[x0:x1].astype(np.int8), [0]]))
    return max(1, int((runs == 1).sum()))


def segment(gray: np.ndarray, shared: Ink | None = None) -> Layout:
    """`shared`: the page's mask and components (geometry.Ink), when the caller has them."""
    shared = shared or Ink(gray)
    ink = shared.mask
    h, w = gray.shape
    layout = Layout(ink_ratio=float(ink.mean()))
    n, _, stats = shared.components
    heights = stats[1:, 3]
    glyphs = heights[(heights > 3) & (heights < h / 10)]
    if len(glyphs) < 3:  # a lone short title still counts
        return layout
    xh = float(np.median(glyphs))
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (max(3, int(xh * 2.5)), max(3, int(xh * 1.2))))
    merged = cv2.dilate(ink.astype(np.uint8), kernel)
    n, _, stats, _ = cv2.connectedComponentsWithStats(merged, connectivity=8)
    blocks = []
    for x, y, bw, bh, area in stats[1:]:
        if bh >= xh and bw >= 2 * xh and ink[y:y + bh, x:x + bw].mean() > 0.02:
            blocks.append((int(x), int(y), int(x + bw), int(y + bh)))
    layout.n_columns = _columns(ink, blocks)
    colw = (max(b[2] for b in blocks) - min(b[0] for b in blocks)) / max(layout.n_columns, 1) if blocks else w
    x_min = min((b[0] for b in blocks), default=0)
    layout.blocks = sorted(blocks, key=lambda b: (int((b[0] - x_min) // max(colw, 1)), b[1]))
    for x0, y0, x1, y1 in layout.blocks:
        region = ink[y0:y1, x0:x1]
        for a, b in line_bands(region.sum(axis=1).astype(np.float64)):
            cols = np.nonzero(region[a:b].any(axis=0))[0]
            if len(cols) and b - a >= 0.6 * xh:
                layout.lines.append((x0 + int(cols[0]), y0 + a, x0 + int(cols[-1]) + 1, y0 + b))
    layout.x_height = _x_height(ink, layout.lines)
    line_h = np.median([l[3] - l[1] for l in layout.lines]) if layout.lines else xh * 2
    layout.est_chars = int(sum((l[2] - l[0]) / (CHAR_ADVANCE * line_h) for l in layout.lines))
    return layout


def _x_height(ink: np.ndarray, lines) -> float:
    """Per line, the band of rows holding at least half the line's densest row's ink (the
    lower-case letters' body, without ascenders and descenders); the median over lines."""
    heights = []
    for x0, y0, x1, y1 in lines:
        rows = ink[y0:y1, x0:x1].sum(axis=1)
        if rows.max() > 0:
            core = np.nonzero(rows >= 0.5 * rows.max())[0]
            heights.append(core[-1] - core[0] + 1)
    return float(np.median(heights)) if heights else 0.0
