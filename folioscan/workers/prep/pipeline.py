"""Runs the cleaning steps on one page in order and records each decision in PrepInfo.

Order: dark-border crop -> orientation -> spread split -> per page: illumination, deskew,
blank check, segmentation. Every step can be switched off by name (`skip`).
"""
from __future__ import annotations

import copy
import time
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, field_validator

from folioscan.records import PageWork, PrepInfo
from folioscan.workers.prep.crop import apply_crop
from folioscan.workers.prep.deskew import estimate_skew
from folioscan.workers.prep.geometry import analysis_copy, rot90, rotate
from folioscan.workers.prep.illumination import binarize, flatten
from folioscan.workers.prep.orientation import detect_orientation
from folioscan.workers.prep.segment import segment
from folioscan.workers.prep.spread import find_gutter

STEPS = ("crop", "orientation", "spread", "illumination", "deskew", "blank", "segment")


class PrepOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    skip: list[str] = []
    output: Literal["gray", "binary"] = "gray"  # what the engine is handed
    min_deskew: float = 0.3  # degrees; smaller skews are left alone (rotation blurs a little)
    min_orientation_confidence: float = 0.25
    blank_max_chars: int = 8  # a page with no text line, or fewer estimated characters, is blank

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
    if opts.on("orientation"):
        turn, conf = detect_orientation(small, gray)
        if turn and conf >= opts.min_orientation_confidence:
            gray, small = rot90(gray, turn), rot90(small, turn)
            work.prep.orientation = turn
    halves = [(None, gray, small)]
    if opts.on("spread"):
        gutter = find_gutter(small)
        if gutter is not None:
            cut = int(gutter * scale)
            halves = [("left", gray[:, :cut], small[:, :gutter]), ("right", gray[:, cut:], small[:, gutter:])]
    out = []
    for side, page, page_small in halves:
        part = copy.copy(work)
        part.prep = copy.deepcopy(work.prep)
        part.side, part.parts = side, len(halves)
        part.image = _clean(np.ascontiguousarray(page), np.ascontiguousarray(page_small), scale, part.prep, opts)
        out.append(part)
    elapsed = (time.perf_counter() - t0) * 1000 / len(out)
    for part in out:
        part.prep.prep_ms = elapsed
    return out


def _clean(gray: np.ndarray, small: np.ndarray, scale: float, info: PrepInfo, opts: PrepOptions) -> np.ndarray:
    if opts.on("illumination"):
        gray, small, changed = flatten(gray, small)
        info.illumination = "flattened" if changed else "even"
    if opts.on("deskew"):
        angle, _ = estimate_skew(small)
        if abs(angle) >= opts.min_deskew:
            gray, small = rotate(gray, -angle), rotate(small, -angle)  # undo the measured tilt
            info.deskew_angle = angle
    if opts.on("segment") or opts.on("blank"):
        layout = segment(small)
        info.ink_ratio = round(layout.ink_ratio, 5)
        info.n_columns, info.n_lines, info.est_chars = layout.n_columns, len(layout.lines), layout.est_chars
        info.blocks = [tuple(int(v * scale) for v in b) for b in layout.blocks]
        info.text_density = round(layout.est_chars / (gray.size / 1e6), 1)
        if opts.on("blank"):
            # ink share alone misleads: a lone chapter title has less ink than heavy foxing
            info.is_blank = not layout.lines or layout.est_chars <= opts.blank_max_chars
    if opts.output == "binary":
        gray = binarize(gray)
    return gray
