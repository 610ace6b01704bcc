"""Runs the cleaning steps on one page in order and records each decision in PrepInfo.

Order: dark-border crop -> spread split (a landscape sheet is straightened first so that a
tilted gutter is found) -> per page: orientation, illumination, deskew, dewarp, blank check,
segmentation, upscale of small text. Orientation is decided per page, after the split: a spread whose one page is
nearly blank has no text lines on that side to go by, and its gutter looks like a line.
Every step can be switched off by name (`skip`).
"""
from __future__ import annotations

import copy
import time
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, field_validator

from folioscan.records import PageWork, PrepInfo
from folioscan.workers.prep.crop import apply_crop
from folioscan.workers.prep import dewarp
from folioscan.workers.prep.deskew import estimate_skew
from folioscan.workers.prep.geometry import Ink, analysis_copy, rot90, rotate
from folioscan.workers.prep.illumination import binarize, flatten
from folioscan.workers.prep.orientation import detect_orientation
from folioscan.workers.prep.resolution import enlarge, upscale_factor
from folioscan.workers.prep.segment import segment
from folioscan.workers.prep import transform
from folioscan.workers.prep.spread import gutter_band

STEPS = ("crop", "orientation", "spread", "illumination", "deskew", "dewarp", "blank", "segment", "upscale")


class PrepOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    skip: list[str] = []
    output: Literal["gray", "binary"] = "gray"  # what the engine is handed
    min_deskew: float = 0.3  # degrees; smaller skews are left alone (rotation blurs a little)
    min_orientation_confidence: float = 0.25
    blank_max_chars: int = 8  # a page with no text line, or fewer estimated characters, is blank
    # pages whose measured x-height (pixels) is under `upscale_below` are enlarged towards `target_x_height`
    upscale_below: float = 10.0
    target_x_height: float = 16.0
    max_upscale: float = 4.0
    dewarp_above: float = 0.5  # x-heights: pages whose lines bend further from straight than this are flattened

    @field_validator("skip")
    @classmethod
    def _known_steps(cls, skip: list[str]) -> list[str]:
        unknown = sorted(set(skip) - set(STEPS))
        if unknown:
            raise ValueError(f"unknown cleaning step(s) {unknown}; valid steps: {', '.join(STEPS)}")
        return skip

    def on(self, step: str) -> bool:
        return self.enabled and step not in self.skip


def prepare_page(work: PageWork, opts: PrepOptions) -> list[PageWork]:
    """The page is downscaled once; the analysis copy then follows every crop, turn and split."""
    if work.error or work.image is None or not opts.enabled:
        return [work]
    t0 = time.perf_counter()
    gray = work.image
    small, scale = analysis_copy(gray)
    if opts.on("crop"):
        gray, small, work.prep.crop_box = apply_crop(gray, small, scale)
        if work.prep.crop_box:
            x0, y0 = work.prep.crop_box[:2]
            work.prep.transforms.append(transform.crop("crop", x0, y0, x0 + gray.shape[1], y0 + gray.shape[0]))
    halves = [(None, gray, small)]
    if opts.on("spread"):
        h, w = gray.shape
        gray, small, work.prep.deskew_angle, band = _find_spread(gray, small, opts)
        if work.prep.deskew_angle:
            work.prep.transforms.append(transform.rotation("spread-deskew", -work.prep.deskew_angle, w, h))
        if band is not None:  # the gutter band itself belongs to neither page
            x0, x1 = int(band[0] * scale), int(band[1] * scale)
            halves = [("left", gray[:, :x0], small[:, :band[0]]), ("right", gray[:, x1:], small[:, band[1]:])]
            split = {"left": transform.crop("spread", 0, 0, x0, h), "right": transform.crop("spread", x1, 0, w, h)}
    out = []
    for side, page, page_small in halves:
        part = copy.copy(work)
        part.prep = copy.deepcopy(work.prep)
        part.side, part.parts = side, len(halves)
        if side:
            part.prep.transforms.append(split[side])
        page, page_small = np.ascontiguousarray(page), np.ascontiguousarray(page_small)
        ink = Ink(page_small)
        if opts.on("orientation"):
            turn, conf = detect_orientation(page_small, page, ink)
            part.prep.orientation_confidence = round(conf, 3)
            if turn and conf >= opts.min_orientation_confidence:
                part.prep.transforms.append(transform.quarter_turn("orientation", turn, page.shape[1], page.shape[0]))
                page, ink = rot90(page, turn), ink.turned(turn)
                page_small = ink.small
                part.prep.orientation = turn
        part.image = _clean(page, page_small, scale, part.prep, opts, ink)
        out.append(part)
    elapsed = (time.perf_counter() - t0) * 1000 / len(out)
    for part in out:
        part.prep.prep_ms = elapsed
    return out


def _find_spread(gray: np.ndarray, small: np.ndarray, opts: PrepOptions):
    """(sheet, analysis copy, tilt undone, gutter band in the copy or None). A landscape sheet is
    straightened on a trial copy first; the full page is turned only when a gutter is found."""
    h, w = small.shape
    if w < 1.15 * h:
        return gray, small, 0.0, None
    angle, sharpness = estimate_skew(small)
    if abs(angle) >= opts.min_deskew and sharpness > 1.2:
        straight = rotate(small, -angle)
        band = gutter_band(straight)
        if band is not None:
            return rotate(gray, -angle), straight, angle, band
    return gray, small, 0.0, gutter_band(small)


def _clean(gray: np.ndarray, small: np.ndarray, scale: float, info: PrepInfo, opts: PrepOptions, ink: Ink) -> np.ndarray:
    """`ink` is the analysis copy's shared mask and components; each step that changes the pixels starts a new one."""
    if opts.on("illumination"):
        gray, small, changed = flatten(gray, small)
        info.illumination = "flattened" if changed else "even"
        ink = Ink(small) if changed else ink
    if opts.on("deskew"):
        angle, _ = estimate_skew(small, ink=ink.mask)
        if abs(angle) >= opts.min_deskew:
            info.transforms.append(transform.rotation("deskew", -angle, gray.shape[1], gray.shape[0]))
            gray, small = rotate(gray, -angle), rotate(small, -angle)  # undo the measured tilt
            ink = Ink(small)
            info.deskew_angle = round(info.deskew_angle + angle, 2)  # on top of a spread's straightening
    if opts.on("dewarp"):
        sheet = dewarp.measure(small, ink)
        info.curvature = sheet.curvature if sheet else 0.0
        if sheet and sheet.curvature >= opts.dewarp_above:
            gray, small, (map_x, map_y) = dewarp.dewarp(gray, small, scale, sheet)
            ink = Ink(small)
            info.transforms.append(transform.Grid.from_maps("dewarp", map_x, map_y))
            info.dewarped = True
    if opts.on("segment") or opts.on("blank"):
        layout = segment(small, ink)
        info.ink_ratio = round(layout.ink_ratio, 5)
        info.n_columns, info.n_lines, info.est_chars = layout.n_columns, len(layout.lines), layout.est_chars
        info.blocks = [tuple(int(v * scale) for v in b) for b in layout.blocks]
        info.text_density = round(layout.est_chars / (gray.size / 1e6), 1)
        info.x_height = round(layout.x_height * scale, 1)
        if opts.on("blank"):
            # ink share alone misleads: a lone chapter title has less ink than heavy foxing
            info.is_blank = not layout.lines or layout.est_chars <= opts.blank_max_chars
    if opts.on("upscale") and not info.is_blank:
        factor = upscale_factor(info.x_height, opts.upscale_below, opts.target_x_height, opts.max_upscale, gray.size / 1e6)
        if factor > 1:
            h, w = gray.shape
            gray = enlarge(gray, factor)
            info.transforms.append(transform.scaling("upscale", w, h, gray.shape[1], gray.shape[0]))
            info.upscale = factor
            info.blocks = [tuple(int(v * factor) for v in b) for b in info.blocks]
    if opts.output == "binary":
        gray = binarize(gray)
    return gray
