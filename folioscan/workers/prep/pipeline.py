"""Runs the cleaning steps on one page in order and records each decision in PrepInfo.

Order: dark-border crop -> spread split (a landscape sheet is straightened first so that a
tilted gutter is found) -> per page: orientation, illumination, deskew, dewarp, blank check,
segmentation, upscale of small text. Orientation is decided per page, after the split: a spread whose one page is
nearly blank has no text lines on that side to go by, and its gutter looks like a line. A tall
sheet whose lines run down it (a spread scanned sideways) is turned before the gutter search; the
pages of a spread then pool their up/down evidence, which also puts them in reading order.
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
from folioscan.workers.prep.orientation import detect_orientation, line_axes
from folioscan.workers.prep.resolution import enlarge, upscale_factor
from folioscan.workers.prep.segment import segment
from folioscan.workers.prep import transform
from folioscan.workers.prep.spread import gutter_band, text_like

# a tall sheet is searched for a sideways gutter when its lines pile up running down it at least this
# sharply relative to running across: on a sideways spread the two pages' lines need not line up
# and the gutter and page edges sharpen the other axis, so "down" can lose narrowly (measured on
# old_books: sideways spreads 0.80-1.42; single pages 177 of 178 under 0.80, the other a plan)
SIDEWAYS_SHARPNESS = 0.85

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
    gray, small = np.ascontiguousarray(gray), np.ascontiguousarray(small)
    # (side, page, its analysis copy's shared mask and components (geometry.Ink), split transform)
    halves = [(None, gray, Ink(small), None)]
    found, measured = None, None  # per page (turn, confidence); the whole sheet's, reused when it stays one page
    if opts.on("spread"):
        h, w = gray.shape
        turn = 0
        sheet, sheet_small, tilt, band = _find_spread(gray, small, opts)
        pages = _halves(sheet, sheet_small, scale, band) if band is not None else None
        if pages and all(text_like(ink.mask) for _, _, ink, _ in pages):
            found = [_orientation(page, ink) for _, page, ink, _ in pages] if opts.on("orientation") else None
            if found and _all_sideways(found, opts.min_orientation_confidence):
                # a picture or a page printed sideways cut in two: no page's lines run across
                found, tilt = None, 0.0
            else:
                halves = pages
        elif pages:  # a picture cut in two
            tilt = 0.0
        elif opts.on("orientation") and h >= 1.15 * w:
            turn, tilt, halves, found, measured = _sideways(gray, halves[0][2], scale, opts)
        if turn:
            work.prep.transforms.append(transform.quarter_turn("spread-orientation", turn, w, h))
            work.prep.orientation, (h, w) = turn, (w, h)
        if tilt:
            work.prep.deskew_angle = tilt
            work.prep.transforms.append(transform.rotation("spread-deskew", -tilt, w, h))
    if opts.on("orientation"):
        found = found or [measured or _orientation(page, ink) for _, page, ink, _ in halves]
        if len(halves) == 2:
            found, upside_down = _same_way_up(found, opts.min_orientation_confidence)
            if upside_down:  # the sheet is upside down: its left page is on the right
                halves = [("left", *halves[1][1:]), ("right", *halves[0][1:])]
                found = found[::-1]
    found = found or [None] * len(halves)
    out = []
    for (side, page, ink, split), turn_conf in zip(halves, found):
        part = copy.copy(work)
        part.prep = copy.deepcopy(work.prep)
        part.side, part.parts = side, len(halves)
        if split:
            part.prep.transforms.append(split)
        if turn_conf is not None:
            turn, conf = turn_conf
            part.prep.orientation_confidence = round(conf, 3)
            if turn and conf >= opts.min_orientation_confidence:
                part.prep.transforms.append(transform.quarter_turn("orientation", turn, page.shape[1], page.shape[0]))
                page, ink = rot90(page, turn), ink.turned(turn)
                part.prep.orientation = (part.prep.orientation + turn) % 360
        part.image = _clean(page, scale, part.prep, opts, ink)
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


def _halves(sheet: np.ndarray, sheet_small: np.ndarray, scale: float, band: tuple[int, int]) -> list:
    """The two pages either side of the gutter band (which belongs to neither), with their crops."""
    h, w = sheet.shape
    x0, x1 = int(band[0] * scale), int(band[1] * scale)
    return [("left", np.ascontiguousarray(sheet[:, :x0]), Ink(np.ascontiguousarray(sheet_small[:, :band[0]])),
             transform.crop("spread", 0, 0, x0, h)),
            ("right", np.ascontiguousarray(sheet[:, x1:]), Ink(np.ascontiguousarray(sheet_small[:, band[1]:])),
             transform.crop("spread", x1, 0, w, h))]


def _orientation(page: np.ndarray, ink: Ink) -> tuple[int, float]:
    return detect_orientation(ink.small, page, line_axes(ink.small, ink))


def _sideways(gray: np.ndarray, ink: Ink, scale: float, opts: PrepOptions):
    """A tall sheet: (turn, tilt, pages, their orientations or None, the sheet's own orientation).
    Its orientation is measured as for any page; only when its lines run down it (or nearly as
    sharply as across) is it turned and searched for a gutter. The split stands only if the pages
    it gives stand upright or upside down: pieces of one page turned on its side do not."""
    small = ink.small
    axes = line_axes(small, ink)
    measured = detect_orientation(small, gray, axes)
    one_page = (0, 0.0, [(None, gray, ink, None)], None, measured)
    if axes[4] < SIDEWAYS_SHARPNESS * axes[2]:
        return one_page
    turn = measured[0] if measured[0] in (90, 270) else 90  # up/down is settled by the pages themselves
    sheet, sheet_small, tilt, band = _find_spread(rot90(gray, turn), rot90(small, turn), opts)
    if band is None:
        return one_page
    halves = _halves(sheet, sheet_small, scale, band)
    if not all(text_like(page_ink.mask) for _, _, page_ink, _ in halves):
        return one_page  # a picture cut in two (an engraving's hatching turned a quarter runs across)
    found = [_orientation(page, page_ink) for _, page, page_ink, _ in halves]
    sure = [t for t, c in found if c >= opts.min_orientation_confidence]
    if not sure or any(t in (90, 270) for t in sure):
        return one_page
    return turn, tilt, halves, found, None


def _all_sideways(found: list[tuple[int, float]], min_conf: float) -> bool:
    """A landscape sheet's would-be pages: each whose orientation is sure has its lines running down
    (at least one is sure). A spread keeps a page printed sideways beside one upright."""
    sure = [t for t, c in found if c >= min_conf]
    return bool(sure) and all(t in (90, 270) for t in sure)


def _same_way_up(found: list[tuple[int, float]], min_conf: float) -> tuple[list[tuple[int, float]], bool]:
    """The two pages of a spread are the same way up, so their up/down evidence is pooled (a nearly
    blank page has none of its own, and a sheet turned a quarter the wrong way has both pages upside
    down). A page found turned a quarter on its own (a plate printed sideways) keeps its turn.
    Returns each page's (turn, confidence of the turn given it) and whether the sheet is upside down."""
    vote = sum(c if t == 0 else -c if t == 180 else 0.0 for t, c in found)
    upside_down = -vote >= min_conf
    pooled, strength = (180 if upside_down else 0), min(1.0, abs(vote))
    return [(t, c) if t in (90, 270) and c >= min_conf else (pooled, max(c, strength) if t == pooled else strength)
            for t, c in found], upside_down


def _clean(gray: np.ndarray, scale: float, info: PrepInfo, opts: PrepOptions, ink: Ink) -> np.ndarray:
    """`ink` holds the analysis copy with its shared mask and components; each step that changes the
    pixels starts a new one."""
    small = ink.small
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
