"""The OCR stage's fallbacks: a low-confidence page is re-read turned 180 degrees; errors stay per page."""
import numpy as np

from folioscan.records import PageWork
from folioscan.workers.engines.registry import TesseractOptions
from folioscan.workers.ocr_stage import OcrStage
from folioscan.workers.prep import PrepOptions, prepare_page
from tests.helpers import PARAGRAPHS, cer


def prepared(img, **opts):
    [w] = prepare_page(PageWork("d", "u", 0, 1, image=img), PrepOptions(**opts))
    return w


def test_upside_down_page_is_caught_by_the_engines_confidence(page_images):
    stage = OcrStage(TesseractOptions())
    upside_down = prepared(np.ascontiguousarray(page_images[0][::-1, ::-1]), skip=["orientation"])
    upright = prepared(page_images[1], skip=["orientation"])
    flipped, kept = stage([upside_down, upright])
    assert flipped.work.prep.orientation == 180 and cer(flipped.ocr.text, PARAGRAPHS[0]) < 0.05
    first, second = flipped.ocr.attempts
    assert first.reason == "initial@0" and second.reason == "low-confidence-flip@180"
    assert second.accepted and not first.accepted and second.confidence > first.confidence
    assert kept.work.prep.orientation == 0 and kept.ocr.attempts == []  # confident: read once


def test_flip_retry_can_be_switched_off(page_images):
    stage = OcrStage(TesseractOptions(), flip_retry_below=None)
    [r] = stage([prepared(np.ascontiguousarray(page_images[0][::-1, ::-1]), skip=["orientation"])])
    assert r.work.prep.orientation == 0 and r.ocr.attempts == [] and cer(r.ocr.text, PARAGRAPHS[0]) > 0.5


def test_a_failing_page_does_not_take_its_batch_down(page_images):
    stage = OcrStage(TesseractOptions())
    bad = PageWork("d", "u", 1, 2, image=np.zeros((0, 0), np.uint8))  # the engine raises on an empty image
    good = prepared(page_images[2])
    r_good, r_bad = stage([good, bad])
    assert r_good.status == "ok" and cer(r_good.ocr.text, PARAGRAPHS[2]) < 0.05
    assert r_bad.status == "error" and r_bad.error
