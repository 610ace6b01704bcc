"""The real CPU engines on rendered pages (functional checks; accuracy on real scans is in bench/)."""
import pytest

from folioscan.workers.engines.registry import RapidOcrOptions, TesseractOptions, build_engine
from tests.helpers import PARAGRAPHS, cer


@pytest.fixture(scope="module", params=[TesseractOptions(), RapidOcrOptions()], ids=["tesseract", "rapidocr"])
def engine(request):
    return build_engine(request.param)


def test_engine_reads_a_page_with_lines_boxes_and_confidence(engine, page_images):
    [result] = engine.predict_batch([page_images[0]])
    assert result.error is None
    assert cer(result.text, PARAGRAPHS[0]) < 0.05
    assert len(result.lines) >= 3
    for line in result.lines:
        x0, y0, x1, y1 = line.box
        assert 0 <= x0 < x1 <= page_images[0].shape[1] and 0 <= y0 < y1 <= page_images[0].shape[0]
        assert 0.0 <= line.confidence <= 1.0
    assert 0.5 < result.confidence <= 1.0 and result.confidence_min <= result.confidence


def test_noise_page_gets_lower_confidence_than_text(engine, page_images):
    import numpy as np

    rng = np.random.default_rng(0)
    # a page of noise as scanned at half the text pages' resolution: Tesseract's layout analysis and
    # RapidOCR's detector take seconds per megapixel of noise, and the verdict is the same at full size
    h, w = page_images[0].shape
    noise = np.where(rng.random((h // 2, w // 2)) < 0.08, 0, 255).astype(np.uint8)
    [clean, noisy] = engine.predict_batch([page_images[1], noise])
    assert noisy.confidence is None or noisy.confidence < clean.confidence
