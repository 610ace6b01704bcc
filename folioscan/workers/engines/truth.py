"""The `truth` engine: TEST AND BENCHMARK USE ONLY. It reads no pixels; it returns the ground-truth
text given for each page, the way a text-only engine (a VLM) returns its reading: lines without
boxes, confidence 1. With `boxes: tesseract` it measures and tests the word-box alignment without a
GPU (bench/vlm_boxes.py, tests/test_vlm_boxes.py).

Pages are found by the hints the OCR stage passes (the book's name, page_index, side) in ground
truth given as `folioscan eval --truth` takes it (folioscan/groundtruth.py: a CSV such as
old_books/manifest.csv, or a folder of per-page files). A page the truth does not list is that
page's error, never an empty reading.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from folioscan.groundtruth import Key, TruthError, load_truth
from folioscan.records import OcrLine, OcrResult, book_stem, page_label
from folioscan.workers.engines.base import ImageHints


def load_manifest(path: str) -> dict[Key, str]:
    """The ground truth, read as `folioscan eval` reads it (folioscan/groundtruth.py); EngineError
    (exit 2) when unusable."""
    from folioscan.workers.engines.registry import EngineError

    if not path:
        raise EngineError("--engine truth needs --truth: ground truth as `folioscan eval --truth` takes it "
                          "(a CSV such as old_books/manifest.csv, or TRUTH/<book>/<page>.txt)")
    try:
        return load_truth(path)
    except (TruthError, OSError, UnicodeDecodeError) as e:
        raise EngineError(f"--truth {path}: {e}") from None


class TruthEngine:
    name = "truth"
    version = "ground truth"

    def __init__(self, manifest: str):
        self.pages = load_manifest(manifest)

    def predict_batch(self, images: Sequence[np.ndarray], hints: Optional[Sequence[ImageHints]] = None) -> list[OcrResult]:
        return [self._one(h) for h in (hints or [ImageHints()] * len(images))]

    def _one(self, hint: ImageHints) -> OcrResult:
        key = Key(book_stem(hint.source_uri or ""), hint.page_index, hint.side or None)
        text = self.pages.get(key)
        if text is None:
            return OcrResult("", [], None, error=f"truth: no ground truth for {key.book} {page_label(key.page_index, key.side)}")
        text = text.strip()
        lines = [OcrLine(t.strip(), 1.0, ()) for t in text.split("\n") if t.strip()]
        return OcrResult(text, lines, 1.0 if lines else None, confidence_min=1.0 if lines else None)
