"""Cleaning steps recover known transforms of a rendered book page (ground truth by construction)."""
import os

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from folioscan.records import PageWork
from folioscan.workers.prep.crop import apply_crop
from folioscan.workers.prep.deskew import estimate_skew
from folioscan.workers.prep.geometry import analysis_copy, rot90, rotate
from folioscan.workers.prep.illumination import flatten
from folioscan.workers.prep.orientation import detect_orientation
from folioscan.workers.prep.pipeline import PrepOptions, prepare_page
from folioscan.workers.prep.segment import segment
from folioscan.workers.prep.spread import find_gutter
from tests.helpers import PARAGRAPHS, text_page_image


@pytest.fixture(scope="module")
def page():
    return text_page_image(" ".join(PARAGRAPHS * 4), dpi=150, fontsize=12)


@pytest.fixture(scope="module")
def two_columns():
    import pymupdf

    doc = pymupdf.open()
    p = doc.new_page(width=612, height=792)
    text = " ".join(PARAGRAPHS * 2)
    p.insert_textbox(pymupdf.Rect(50, 60, 290, 740), text, fontsize=10, fontname="tiro")
    p.insert_textbox(pymupdf.Rect(322, 60, 562, 740), text, fontsize=10, fontname="tiro")
    pix = p.get_pixmap(dpi=150, colorspace=pymupdf.csGRAY)
    return np.frombuffer(pix.samples, np.uint8).reshape(pix.height, pix.stride)[:, : pix.width].copy()


def small(img):
    return analysis_copy(img)[0]


@pytest.mark.parametrize("angle", [0.0, 0.7, -2.5, 6.0, -11.0, 15.0])
def test_deskew_recovers_a_known_angle_within_a_fifth_of_a_degree(page, angle):
    est, _ = estimate_skew(small(rotate(page, angle)))
    assert est == pytest.approx(angle, abs=0.2)


@pytest.mark.parametrize("turn", [0, 90, 180, 270])
def test_orientation_recovers_quarter_turns(page, turn):
    turned = rot90(page, turn)
    found, conf = detect_orientation(small(turned), turned)
    assert (found + turn) % 360 == 0 and conf > 0.25


@pytest.mark.parametrize("turn", [0, 90, 180, 270])
def test_orientation_of_a_short_page_is_right_or_left_alone(turn):
    """Three lines at 150 dpi: too little to be sure, so the page is turned only when confident."""
    short = rot90(text_page_image(PARAGRAPHS[1]), turn)
    [w] = prepare_page(PageWork("d", "u", 0, 1, image=short), PrepOptions())
    assert (w.prep.orientation + turn) % 360 == 0 or w.prep.orientation == 0


def test_dark_scanner_border_and_thumb_are_cropped(page):
    h, w = page.shape
    scan = np.full((h + 200, w + 160), 25, np.uint8)  # dark scanner bed around the sheet
    scan[100:100 + h, 80:80 + w] = page
    scan[h // 2: h // 2 + 120, 60:140] = 30  # a thumb over the left page edge
    cropped, _, box = apply_crop(scan, *analysis_copy(scan))
    x0, y0, x1, y1 = box
    assert abs(x0 - 80) < 30 and abs(y0 - 100) < 30 and abs(x1 - (80 + w)) < 30 and abs(y1 - (100 + h)) < 30
    assert (cropped < 60).mean() < (page < 60).mean() + 0.005  # no dark border or thumb left, only the text


def test_clean_page_is_not_cropped(page):
    assert apply_crop(page, *analysis_copy(page))[2] is None


def test_two_page_spread_is_found_and_split_in_reading_order(page):
    other = np.fliplr(page)  # a different-looking right page
    gap = np.full((page.shape[0], 40), 255, np.uint8)
    spread = np.hstack([page, gap, other])
    s, scale = analysis_copy(spread)
    gutter = find_gutter(s) * scale
    assert abs(gutter - (page.shape[1] + 20)) < 0.04 * spread.shape[1]
    parts = prepare_page(PageWork("d", "u", 3, 9, image=spread), PrepOptions())
    assert [p.side for p in parts] == ["left", "right"] and all(p.parts == 2 and p.page_index == 3 for p in parts)
    assert find_gutter(small(page)) is None


def test_gradient_is_flattened(page):
    h, w = page.shape
    shade = np.linspace(0.45, 1.0, w)[None, :]
    dim = (page.astype(np.float64) * shade).astype(np.uint8)
    flat, _, changed = flatten(dim, analysis_copy(dim)[0])
    assert changed
    paper = page > 250
    assert np.percentile(flat[paper], 5) > 220  # the dark side's paper is white again
    assert flat[page < 80].mean() < 120  # and the ink is still dark


def test_blank_pages_are_detected_and_skip_ocr(page):
    rng = np.random.default_rng(1)
    blank = np.clip(rng.normal(235, 6, page.shape), 0, 255).astype(np.uint8)  # paper grain
    blank[400:404, 300:303] = 40  # a speck
    [b] = prepare_page(PageWork("d", "u", 0, 1, image=blank), PrepOptions())
    [t] = prepare_page(PageWork("d", "u", 0, 1, image=page), PrepOptions())
    title = text_page_image("CHAPTER XII.", dpi=150, fontsize=18)  # a lone title is not blank
    [c] = prepare_page(PageWork("d", "u", 0, 1, image=title), PrepOptions())
    assert b.prep.is_blank and not t.prep.is_blank and not c.prep.is_blank


def test_segmentation_finds_columns_lines_and_density(page, two_columns):
    one = segment(small(page))
    two = segment(small(two_columns))
    assert one.n_columns == 1 and two.n_columns == 2
    assert len(one.lines) >= 20
    true_chars = len(" ".join(PARAGRAPHS * 4))
    assert 0.6 < one.est_chars / true_chars < 1.5
    first_col = [b for b in two.blocks if b[2] < small(two_columns).shape[1] / 2]
    assert two.blocks[: len(first_col)] == first_col  # reading order: left column first


def test_every_step_can_be_switched_off(page):
    tilted = rotate(page, 4.0)
    [on] = prepare_page(PageWork("d", "u", 0, 1, image=tilted), PrepOptions())
    [off] = prepare_page(PageWork("d", "u", 0, 1, image=tilted), PrepOptions(skip=["deskew"]))
    [none] = prepare_page(PageWork("d", "u", 0, 1, image=tilted), PrepOptions(enabled=False))
    assert on.prep.deskew_angle == pytest.approx(4.0, abs=0.2) and off.prep.deskew_angle == 0.0
    assert estimate_skew(small(on.image))[0] == pytest.approx(0.0, abs=0.2)  # the tilt is gone from the image
    assert estimate_skew(small(off.image))[0] == pytest.approx(4.0, abs=0.2)
    assert none.image is tilted and none.prep.est_chars == 0


def spread_scan(left: np.ndarray, right: np.ndarray, skew: float) -> np.ndarray:
    """Two pages side by side on a scanner: a grey gutter shadow between them, paper a little
    darker towards the left, the sheet tilted by `skew` degrees on a dark scanner bed."""
    h, w = right.shape
    x = np.linspace(-1, 1, 60)
    gutter = np.full((h, 60), 255.0) * (1 - 0.45 * np.exp(-(x / 0.45) ** 2))[None, :]
    sheet = np.hstack([left.astype(np.float64), gutter, right.astype(np.float64)])
    sheet = (sheet * np.linspace(0.9, 1.0, sheet.shape[1])[None, :]).clip(0, 255).astype(np.uint8)
    scan = np.full((sheet.shape[0] + 240, sheet.shape[1] + 240), 28, np.uint8)
    scan[120:-120, 120:-120] = sheet
    m = cv2.getRotationMatrix2D((scan.shape[1] / 2, scan.shape[0] / 2), skew, 1.0)
    return cv2.warpAffine(scan, m, (scan.shape[1], scan.shape[0]), borderValue=28)


FULL_A = " ".join(PARAGRAPHS * 4)
FULL_B = " ".join(PARAGRAPHS[::-1] * 4)


def test_spread_with_a_near_blank_page_in_a_dark_border_gives_three_rows(tmp_path):
    """A book of two scans: a full page, then a tilted spread whose left page carries only its
    folio ('ii') beside a full page. Old behaviour: the spread was not split (2 rows)."""
    from folioscan.pipeline.config import JobConfig
    from folioscan.pipeline.job import run_job
    from tests.helpers import cer, scanned_pdf

    page_a = text_page_image(FULL_A, dpi=150, fontsize=12)
    spread = spread_scan(text_page_image("ii", dpi=150, fontsize=10), text_page_image(FULL_B, dpi=150, fontsize=12), 3.0)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "book.pdf").write_bytes(scanned_pdf([page_a, spread]))
    out = str(tmp_path / "out")
    run_job(JobConfig(source=str(tmp_path / "src"), output=out, executor="local", progress=False))
    rows = pq.read_table(os.path.join(out, "pages")).to_pandas().sort_values(["page_index", "side"], na_position="first")
    assert list(zip(rows.page_index, rows.side.fillna(""), rows.status)) == [(0, "", "ok"), (1, "left", "blank"), (1, "right", "ok")]
    assert cer(rows.text.iloc[0], FULL_A) < 0.03 and cer(rows.text.iloc[2], FULL_B) < 0.03
    right = rows.iloc[2]
    assert right.orientation == 0 and right.orientation_confidence > 0.5
    assert right.deskew_angle == pytest.approx(3.0, abs=0.3)


def test_spread_with_a_copyright_page_is_split_and_both_pages_read():
    import pymupdf

    from folioscan.workers.engines.registry import TesseractOptions
    from folioscan.workers.ocr_stage import OcrStage
    from tests.helpers import cer

    doc = pymupdf.open()
    p = doc.new_page(width=612, height=792)
    p.insert_textbox(pymupdf.Rect(100, 300, 512, 400), "Copyright, 1899, by Harper & Brothers.\nAll rights reserved.",
                     fontsize=10, fontname="tiro", align=1)
    pix = p.get_pixmap(dpi=150, colorspace=pymupdf.csGRAY)
    copyright_page = np.frombuffer(pix.samples, np.uint8).reshape(pix.height, pix.stride)[:, : pix.width].copy()
    spread = spread_scan(copyright_page, text_page_image(FULL_B, dpi=150, fontsize=12), -3.0)
    left, right = OcrStage(TesseractOptions())(prepare_page(PageWork("d", "u", 0, 1, image=spread), PrepOptions()))
    assert (left.work.side, right.work.side) == ("left", "right")
    assert "All rights reserved" in left.ocr.text and cer(right.ocr.text, FULL_B) < 0.03


def test_spreads_scanned_sideways_are_split_in_reading_order_and_map_back(tmp_path):
    """A book of two tall scans, each a tilted spread turned a quarter on the scanner bed: two full
    pages turned 90 degrees, then a near-blank page beside a full one turned 270. Each gives its
    pages left first, and every word's box_source lands on ink of that page's half of the scan.
    Old behaviour: the first came out as one blank row, the second as one page with both texts run together."""
    from folioscan.pipeline.config import JobConfig
    from folioscan.pipeline.job import run_job
    from tests.helpers import cer, scanned_pdf

    full_a, full_b = text_page_image(FULL_A, dpi=150, fontsize=12), text_page_image(FULL_B, dpi=150, fontsize=12)
    scans = [rot90(spread_scan(full_a, full_b, 2.0), 90), rot90(spread_scan(text_page_image("ii", dpi=150, fontsize=10), full_b, -3.0), 270)]
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "book.pdf").write_bytes(scanned_pdf(scans))
    out = str(tmp_path / "out")
    run_job(JobConfig(source=str(tmp_path / "src"), output=out, executor="local", progress=False))
    rows = pq.read_table(os.path.join(out, "pages")).to_pandas().sort_values(["page_index", "side"])
    assert list(zip(rows.page_index, rows.side, rows.status)) == [(0, "left", "ok"), (0, "right", "ok"), (1, "left", "blank"), (1, "right", "ok")]
    assert list(rows.orientation) == [270, 270, 90, 90]
    assert cer(rows.text.iloc[0], FULL_A) < 0.03 and cer(rows.text.iloc[1], FULL_B) < 0.03 and cer(rows.text.iloc[3], FULL_B) < 0.03
    for (_, row), scan in zip(rows.iloc[[0, 1, 3]].iterrows(), [scans[0], scans[0], scans[1]]):
        assert (row.source_width, row.source_height) == (scan.shape[1], scan.shape[0])
        # turned 90 clockwise the left page lies on top of the scan; turned 270, at the bottom
        top_half = (row.side == "left") == (row.orientation == 270)
        boxes = [w["box_source"] for line in row.lines for w in line["words"]]
        assert len(boxes) > 200
        on_ink = sum((scan[y0:y1, x0:x1] < 128).mean() > 0.05 for x0, y0, x1, y1 in boxes)
        in_half = sum((y1 <= scan.shape[0] * 0.55) if top_half else (y0 >= scan.shape[0] * 0.45) for x0, y0, x1, y1 in boxes)
        assert on_ink >= 0.97 * len(boxes) and in_half == len(boxes)
        long_lines = [l["box_source"] for l in row.lines if len(l["text"]) > 30]
        assert long_lines and all(y1 - y0 > 3 * (x1 - x0) for x0, y0, x1, y1 in long_lines)  # lines run down the scan


def test_an_upside_down_spread_keeps_its_reading_order_and_a_sideways_landscape_page_is_not_split(page):
    """Turned 180 degrees, the left page of a spread lies on the right of the scan: it must still come
    first (old behaviour: each half was turned but the pages swapped). A wide page turned to stand
    tall (a table printed sideways) has its lines running down a tall sheet too, but no gutter."""
    from folioscan.workers.prep.transform import to_source

    scan = rot90(spread_scan(page, text_page_image(FULL_B, dpi=150, fontsize=12), 2.0), 180)
    left, right = prepare_page(PageWork("d", "u", 0, 1, image=scan), PrepOptions())
    centre = lambda part: to_source(part.prep.transforms, [[part.image.shape[1] / 2, part.image.shape[0] / 2]])[0][0]
    assert (left.side, left.prep.orientation, right.prep.orientation) == ("left", 180, 180)
    assert centre(left) > scan.shape[1] * 0.55 and centre(right) < scan.shape[1] * 0.45
    wide = text_page_image(" ".join(PARAGRAPHS * 3), dpi=120, size=(900, 560), fontsize=12)
    [tall] = prepare_page(PageWork("d", "u", 0, 1, image=rot90(wide, 90)), PrepOptions())
    assert tall.side is None and tall.prep.orientation == 270 and tall.image.shape[1] > tall.image.shape[0]


@pytest.mark.parametrize("turn", [90, 270])
def test_a_single_page_turned_to_landscape_is_not_taken_for_a_spread(page, turn):
    [w] = prepare_page(PageWork("d", "u", 0, 1, image=rot90(page, turn)), PrepOptions())
    assert w.side is None and (w.prep.orientation + turn) % 360 == 0


def test_small_text_is_measured_enlarged_and_recorded():
    """A page at 60 dpi (x-height ~4 px) reads as garbage as it is; enlarged before OCR it reads."""
    from folioscan.workers.engines.registry import TesseractOptions
    from folioscan.workers.ocr_stage import OcrStage
    from folioscan.workers.prep.transform import box_to_source
    from tests.helpers import cer

    text = " ".join(PARAGRAPHS * 2)
    low = text_page_image(text, dpi=60, fontsize=11)
    stage = OcrStage(TesseractOptions())
    [up] = stage(prepare_page(PageWork("d", "u", 0, 1, image=low), PrepOptions()))
    [raw] = stage(prepare_page(PageWork("d", "u", 0, 1, image=low), PrepOptions(skip=["upscale"])))
    assert 3 <= up.work.prep.x_height <= 6 and up.work.prep.upscale == pytest.approx(4.0)
    assert up.work.width == pytest.approx(low.shape[1] * 4, abs=2)
    assert cer(up.ocr.text, text) < 0.05 and cer(raw.ocr.text, text) > 0.5
    x0, y0, x1, y1 = box_to_source(up.work.prep.transforms, up.ocr.lines[0].box)  # boxes map back to the scan
    assert x1 <= low.shape[1] and y1 <= low.shape[0] and (low[y0:y1, x0:x1] < 128).any()
    [normal] = prepare_page(PageWork("d", "u", 0, 1, image=text_page_image(text, dpi=150, fontsize=11)), PrepOptions())
    assert normal.prep.upscale == 1.0 and 8 <= normal.prep.x_height <= 13


def _spine_squeeze(x: np.ndarray, w: int, strength: float) -> np.ndarray:
    """How far right of column x of the curled page its ink comes from: foreshortening towards the spine."""
    t = np.clip((x / (w - 1) - 0.35) / 0.65, 0, 1) ** 3
    return strength * 0.12 * w * t ** 1.5


def curled(img: np.ndarray, strength: float, crowd: bool = True) -> np.ndarray:
    """Lines bending down (more at the bottom) and crowding towards a spine on the right."""
    h, w = img.shape
    t = np.clip((np.linspace(0, 1, w)[None, :] - 0.35) / 0.65, 0, 1) ** 3
    v = np.linspace(-1, 1, h)[:, None]
    src_y = (np.arange(h)[:, None] - strength * h * (0.045 * t + 0.035 * t * v)).astype(np.float32)
    xs = np.arange(w, dtype=np.float64)
    src_x = np.broadcast_to(xs + (_spine_squeeze(xs, w, strength) if crowd else 0), (h, w)).astype(np.float32)
    return cv2.remap(img, src_x, src_y, cv2.INTER_LINEAR, borderValue=255)


def test_dewarping_undoes_the_crowding_towards_the_spine():
    """Curled, the text near the spine is squeezed to about 3/4 of its width. Flattened, it is as
    wide as on the flat part of the page (measured exactly: cleaned-page points mapped back through
    the recorded transforms, then through the known curl). Old behaviour: lines straightened, y
    only, text near the spine still ~0.77 as wide. Lines that bend without crowding are not widened."""
    from folioscan.workers.prep.transform import to_source

    flat = text_page_image(" ".join(PARAGRAPHS * 4), dpi=200, fontsize=11)
    w = flat.shape[1]

    def spine_width_ratio(part, crowd: bool) -> float:
        """Width of the spine-side text in the cleaned page relative to the flat side's (1 = undone)."""
        xs = np.linspace(0.5, part.image.shape[1] - 0.5, 800)
        src = to_source(part.prep.transforms, np.stack([xs, np.full_like(xs, part.image.shape[0] / 2)], 1))[:, 0]
        orig = src + (_spine_squeeze(src, w, 1.4) if crowd else 0)
        per_px = np.gradient(orig, xs)  # flat-page pixels per cleaned-page pixel
        u = orig / w
        return float(np.median(per_px[(u > 0.1) & (u < 0.3)]) / np.median(per_px[(u > 0.75) & (u < 0.88)]))

    [fixed] = prepare_page(PageWork("d", "u", 0, 1, image=curled(flat, 1.4)), PrepOptions())
    [bent] = prepare_page(PageWork("d", "u", 0, 1, image=curled(flat, 1.4, crowd=False)), PrepOptions())
    assert fixed.prep.dewarped and bent.prep.dewarped
    assert 0.88 <= spine_width_ratio(fixed, True) <= 1.05  # 0.926 measured; 0.779 with y only
    assert spine_width_ratio(bent, False) == pytest.approx(1.0, abs=0.03)


def test_curled_page_is_measured_flattened_and_reads_like_the_flat_page():
    from folioscan.workers.engines.registry import TesseractOptions
    from folioscan.workers.ocr_stage import OcrStage
    from tests.helpers import cer

    text = " ".join(PARAGRAPHS * 4)
    flat = text_page_image(text, dpi=200, fontsize=11)
    curl = curled(flat, 1.4)
    stage = OcrStage(TesseractOptions())
    [fixed] = stage(prepare_page(PageWork("d", "u", 0, 1, image=curl), PrepOptions()))
    [as_is] = stage(prepare_page(PageWork("d", "u", 0, 1, image=curl), PrepOptions(skip=["dewarp"])))
    [straight] = prepare_page(PageWork("d", "u", 0, 1, image=flat), PrepOptions())
    assert fixed.work.prep.dewarped and fixed.work.prep.curvature > 1.0
    assert not straight.prep.dewarped and straight.prep.curvature < 0.3
    assert cer(fixed.ocr.text, text) < 0.02 and cer(as_is.ocr.text, text) > 0.2
    assert "dewarp" in [t.step for t in fixed.work.prep.transforms]
    from folioscan.workers.prep.transform import box_to_source

    for line in fixed.ocr.lines[::5]:  # the flattened page's line boxes land on the curled scan's ink
        x0, y0, x1, y1 = box_to_source(fixed.work.prep.transforms, line.box, (curl.shape[1], curl.shape[0]))
        assert (curl[y0:y1, x0:x1] < 128).mean() > 0.03


def test_an_unknown_step_name_is_an_error_not_ignored():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"unknown cleaning step\(s\).*dewrap"):
        PrepOptions(skip=["dewrap"])


@pytest.mark.parametrize("kind,layout,seed", [
    # split by the previous pipeline (issue 19 item 3): two engravings stacked, turned a quarter and
    # cut between them; an engraving's hatching, a photo, two photos side by side cut in two
    ("engraving", "portrait-two-stacked", 0), ("engraving", "landscape", 0),
    ("photo", "landscape", 2), ("photo", "landscape-two-side-by-side", 0), ("engraving", "landscape-two-side-by-side", 2),
    # never split, kept so: a full-page photo, a line drawing, a framed plate
    ("photo", "portrait", 0), ("drawing", "portrait", 0), ("drawing", "landscape", 0), ("photo", "plate", 0),
    ("engraving", "plate", 1),
])
def test_a_page_with_a_large_picture_is_not_taken_for_a_spread(kind, layout, seed):
    """A running head, a large picture (or two) and a one-line caption, scanned upright: one page.
    The old pipeline cut the first five in two (a gutter found in or between the pictures)."""
    from tests.helpers import figure_page

    parts = prepare_page(PageWork("d", "u", 0, 1, image=figure_page(kind, layout, seed)), PrepOptions())
    assert len(parts) == 1 and parts[0].side is None
