"""Tesseract reports words with boxes and confidences, and the OCR stage maps them onto the loaded scan.

Ground truth by construction: MuPDF lays the text out, so every word's box on the rendered page is known.
"""
import numpy as np
import pytest

from folioscan.records import PageWork
from folioscan.workers.engines.registry import TesseractOptions
from folioscan.workers.ocr_stage import OcrStage
from folioscan.workers.prep import PrepOptions, prepare_page
from folioscan.workers.prep import transform as tf
from folioscan.workers.prep.geometry import rot90, rotate
from tests.helpers import PARAGRAPHS

DPI = 150


def page_with_word_boxes(text: str):
    """(grayscale page at DPI, [(word, (x0, y0, x1, y1) px)]) with the word boxes MuPDF laid out."""
    import pymupdf

    doc = pymupdf.open()
    page = doc.new_page(width=612, height=792)
    page.insert_textbox(pymupdf.Rect(60, 60, 552, 732), text, fontsize=13, fontname="tiro")
    pix = page.get_pixmap(dpi=DPI, colorspace=pymupdf.csGRAY)
    img = np.frombuffer(pix.samples, np.uint8).reshape(pix.height, pix.stride)[:, : pix.width].copy()
    k = DPI / 72
    return img, [(w[4], _ink_box(img, [v * k for v in w[:4]])) for w in page.get_text("words")]


def _ink_box(img, box):
    """The ink inside MuPDF's word box (which spans the font's full line height), as a tight box."""
    x0, y0, x1, y1 = int(box[0]), int(box[1]), int(np.ceil(box[2])), int(np.ceil(box[3]))
    ys, xs = np.nonzero(img[y0:y1, x0:x1] < 128)
    return (x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1)


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def matched_share(found: list, truth: list, min_iou: float = 0.5) -> float:
    """Share of true words that an OCR'd word of the same text overlaps with IoU >= min_iou."""
    hits = sum(any(t == f and iou(tb, fb) >= min_iou for f, fb in found) for t, tb in truth)
    return hits / len(truth)


@pytest.fixture(scope="module")
def stage():
    return OcrStage(TesseractOptions())


def test_tesseract_words_have_text_boxes_and_confidences(stage):
    img, truth = page_with_word_boxes(" ".join(PARAGRAPHS))
    [r] = stage([PageWork("d", "u", 0, 1, image=img, source_width=img.shape[1], source_height=img.shape[0])])
    words = [w for line in r.ocr.lines for w in line.words]
    assert len(words) >= 0.9 * len(truth)
    for line in r.ocr.lines:
        assert " ".join(w.text for w in line.words) == " ".join(line.text.split())
        for w in line.words:
            assert 0.0 <= w.confidence <= 1.0
            # Tesseract does not nest its boxes exactly: with tessdata_fast a word may stand a few pixels out of its line
            x0, y0, x1, y1 = line.box
            assert x0 - 6 <= w.box[0] < w.box[2] <= x1 + 6 and y0 - 6 <= w.box[1] < w.box[3] <= y1 + 6
    assert matched_share([(w.text, w.box) for w in words], truth) >= 0.9
    # no cleaning moved the pixels here, so the loaded-image boxes are the engine's own
    assert all(w.box_source == w.box for w in words)


def test_words_of_a_page_scanned_sideways_and_askew_land_on_their_place_in_the_scan(stage):
    img, truth = page_with_word_boxes(" ".join(PARAGRAPHS))
    h, w = img.shape
    turn = tf.quarter_turn("scanner", 270, w, h)  # the book lay on its side on the scanner...
    tilt = tf.rotation("scanner", 2.0, *turn.size)  # ...and a little askew
    scan = rotate(rot90(img, 270), 2.0)
    truth_in_scan = [(t, tf.apply_matrix(tf.compose(turn.matrix, tilt.matrix), box)) for t, box in truth]
    [work] = prepare_page(PageWork("d", "u", 0, 1, image=scan, source_width=scan.shape[1], source_height=scan.shape[0]),
                          PrepOptions())
    assert work.prep.orientation == 90 and abs(work.prep.deskew_angle) > 1.5
    [r] = stage([work])
    words = [(wd.text, wd.box_source) for line in r.ocr.lines for wd in line.words]
    assert matched_share(words, truth_in_scan) >= 0.85
    lines = [line.box_source for line in r.ocr.lines if len(line.text) > 20]
    assert lines and all(y1 - y0 > x1 - x0 for x0, y0, x1, y1 in lines)  # lines run down the sideways scan
    assert matched_share([(wd.text, wd.box) for line in r.ocr.lines for wd in line.words], truth_in_scan) < 0.1


def test_words_of_a_page_the_ocr_stage_turned_over_map_onto_the_upside_down_scan(stage):
    img, truth = page_with_word_boxes(" ".join(PARAGRAPHS))
    h, w = img.shape
    scan = np.ascontiguousarray(img[::-1, ::-1])
    truth_in_scan = [(t, tf.apply_matrix(tf.quarter_turn("scanner", 180, w, h).matrix, box)) for t, box in truth]
    [work] = prepare_page(PageWork("d", "u", 0, 1, image=scan, source_width=w, source_height=h),
                          PrepOptions(skip=["orientation"]))  # only the engine's low confidence can catch it
    [r] = stage([work])
    assert r.work.prep.orientation == 180 and [t.step for t in r.work.prep.transforms] == ["flip-retry"]
    assert matched_share([(wd.text, wd.box_source) for line in r.ocr.lines for wd in line.words], truth_in_scan) >= 0.9
