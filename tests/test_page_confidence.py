"""Page confidence reads as P(page is good): garbage pages come out low, clean pages high, the raw
engine confidence is kept beside it."""
import cv2
import numpy as np
import pytest

from folioscan.records import PageWork
from folioscan.workers import page_confidence as pc
from folioscan.workers.engines.base import char_weighted_confidence
from folioscan.workers.engines.registry import TesseractOptions
from folioscan.workers.ocr_stage import OcrStage
from folioscan.workers.prep import PrepOptions, prepare_page
from tests.helpers import PARAGRAPHS, cer, text_page_image

TEXT = " ".join(PARAGRAPHS * 2)


@pytest.fixture(scope="module")
def stage():
    return OcrStage(TesseractOptions())


def read(stage, img):
    [r] = stage(prepare_page(PageWork("d", "u", 0, 1, image=img), PrepOptions()))
    return r


def test_clean_page_is_confident_and_keeps_its_raw_confidence(stage):
    r = read(stage, text_page_image(TEXT, dpi=150, fontsize=11))
    assert cer(r.ocr.text, TEXT) < 0.02 and r.ocr.confidence > 0.8
    assert r.ocr.confidence_raw == pytest.approx(char_weighted_confidence(r.ocr.lines)[0], abs=1e-6)


@pytest.mark.parametrize("make", [
    lambda: text_page_image(TEXT, dpi=45, fontsize=11),  # too small even enlarged; the engine says 0.63 of it
    # low resolution, enlarged and still misread (CER ~9%): the model before low-resolution
    # pages were in its calibration data called these good (0.59, 0.57)
    lambda: text_page_image(TEXT, dpi=50, fontsize=11),
    lambda: text_page_image(TEXT, dpi=60, fontsize=9),
    lambda: cv2.GaussianBlur(text_page_image(TEXT, dpi=150, fontsize=11), (0, 0), 3.2),  # out of focus
], ids=["45dpi", "50dpi", "60dpi-9pt", "blurred"])
def test_a_page_read_badly_says_so(stage, make):
    r = read(stage, make())
    assert cer(r.ocr.text, TEXT) > 0.05  # the page really is read badly (good means CER <= 3%)
    assert r.ocr.confidence < 0.5


def test_a_low_resolution_page_read_well_stays_confident(stage):
    r = read(stage, text_page_image(TEXT, dpi=60, fontsize=11))  # enlarged 4x, read at ~1% CER
    assert r.work.prep.upscale > 1 and cer(r.ocr.text, TEXT) < 0.02
    assert r.ocr.confidence > 0.8


def test_reading_order_jumping_back_up_the_page_lowers_confidence(stage):
    """The engine reads a drop capital's first line last, or one line fragment out of place: every
    word is right and confident, the page text is not."""
    r = read(stage, text_page_image(TEXT, dpi=150, fontsize=11))
    r.ocr.confidence = r.ocr.confidence_raw  # what the model is computed from, as in the OCR stage
    in_order = pc.page_confidence(r.ocr, r.work.prep)
    assert in_order > 0.9
    r.ocr.lines = r.ocr.lines[1:] + r.ocr.lines[:1]
    assert pc.page_confidence(r.ocr, r.work.prep) < 0.5


def test_order_breaks_count_jumps_back_within_a_column_only():
    line = lambda x0, y0, x1=1000: (x0, y0, x1, y0 + 40)  # noqa: E731
    column = [line(100, 100 + 50 * i, 500) for i in range(5)]
    second_column = [line(600, 100 + 50 * i) for i in range(5)]
    assert pc._order_breaks(column + second_column) == 0  # a new column starts at the top: not a break
    assert pc._order_breaks(column[1:] + column[:1]) == 1  # the first line read last
    assert pc._order_breaks(column[:2] + [column[3], column[2]] + column[4:]) == 1  # two lines swapped
    assert pc._order_breaks(column + [(300, 120, 320, 135)]) == 0  # a speck read last


def test_small_lines_are_measured_in_the_pixels_of_the_scan():
    base = {"text": "a page", "confidence_raw": 0.9, "word_confidences": [0.9], "x_height": 4.0, "curvature": 0.0, "lang": "en"}
    boxes = [[0, 0, 500, 32], [0, 50, 500, 86], [0, 100, 500, 140]]  # lines 32, 36 and 40 px high
    enlarged = pc.features_from_inputs({**base, "line_boxes": boxes, "upscale": 4.0})  # 9 px lines as scanned
    as_scanned = pc.features_from_inputs({**base, "line_boxes": boxes, "upscale": 1.0})
    assert enlarged["small_lines"] == pytest.approx(np.log(12 / 9)) and as_scanned["small_lines"] == 0.0


def test_the_model_is_a_fitted_logistic_model():
    assert len(pc.MODEL["coef"]) == len(pc.FEATURES) and any(pc.MODEL["coef"])
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 2))
    y = (X[:, 0] - 0.5 * X[:, 1] + rng.logistic(size=400) * 0.3) > 0
    m = pc.fit_logistic(X, y, l2=0.01)
    assert m["coef"][0] > 0 > m["coef"][1]
    p = pc.predict(m, X)
    assert abs(p.mean() - y.mean()) < 0.02  # calibrated in the large


def test_a_page_with_no_word_is_read_as_empty_not_an_error(stage):
    img = np.full((400, 400), 255, np.uint8)
    img[100:104, 100:300] = 0  # a rule, no text
    [r] = stage([PageWork("d", "u", 0, 1, image=img)])  # not cleaned: the engine sees it
    assert r.status == "ok" and r.ocr.text == "" and r.ocr.confidence_raw is None and r.ocr.confidence < 0.05


UNFAMILIAR = [("numbers", "serif", 11), ("numbers", "sans", 8), ("symbols", "serif", 11), ("symbols", "mono", 14),
              ("german", "sans", 11), ("prose", "mono", 8), ("prose", "sans", 14)]


def test_confidence_does_not_collapse_on_clean_pages_unlike_the_training_books(stage):
    """Issue 19 item 4: clean 300-dpi pages of numbers, of symbols, in German, in serif, sans and
    monospace at 8-14 pt. Pages read under 1% CER get at least 0.8, pages over 5% stay under 0.5.
    The previous model gave a page of numbers read without an error 0.0000 (its words too few for
    the lexicon share, its digits no letters). Blurred pages are the bad pages the targets need.
Not covered: a table set in aligned columns, which Tesseract reads column by column (every figure
right, 40-65% CER against the rows) and which still gets a high confidence (docs/hard-pages.md)."""
    from tests.helpers import unfamiliar_page

    seen = []
    for kind, font, pt in UNFAMILIAR + [("blurred", "serif", 11), ("blurred", "sans", 8)]:
        img, text = unfamiliar_page("symbols" if kind == "blurred" else kind, font, pt)
        if kind == "blurred":
            img = cv2.GaussianBlur(img, (0, 0), 4.5)
        r = read(stage, img)
        seen.append((kind, font, pt, round(cer(r.ocr.text, text), 4), r.ocr.confidence))
    good = [s for s in seen if s[3] < 0.01]
    bad = [s for s in seen if s[3] > 0.05]
    assert len(good) >= 5 and len(bad) >= 2, seen  # the pages do cover both targets
    assert all(s[4] >= 0.8 for s in good), seen
    assert all(s[4] < 0.5 for s in bad), seen
