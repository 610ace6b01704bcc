"""The `truth` engine: TEST AND BENCHMARK USE ONLY. It reads no pixels; it returns the ground-truth
text given for each page, the way a text-only engine (a VLM) returns its reading: lines without
boxes, confidence 1. With `boxes: tesseract` it measures and tests the word-box alignment without a
GPU (bench/vlm_boxes.py, tests/test_vlm_boxes.py).

Pages are found by the hints the OCR stage passes (the book's file or folder name, page_index,
side) in a CSV manifest: `source` (or `pdf`, as old_books/manifest.csv has it), `page_index` (from
0), `gt` (a UTF-8 text file, relative to the manifest), optional `side`. A page the manifest does
not list is that page's error, never an empty reading.
"""
from __future__ import annotations

import csv
import os
import posixpath
from typing import Optional, Sequence

import numpy as np

from folioscan.records import OcrLine, OcrResult
from folioscan.workers.engines.base import ImageHints


def _name(uri: str) -> str:
    return posixpath.basename(uri.rstrip("/").replace("\\", "/"))


def load_manifest(path: str) -> dict[tuple[str, int, str], str]:
    """(book name, page_index, side or "") -> text file. EngineError (exit 2) when unusable."""
    from folioscan.workers.engines.registry import EngineError

    if not path:
        raise EngineError("--engine truth needs --truth: a CSV manifest of ground-truth files (source,page_index,gt)")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise EngineError(f"--truth {path}: cannot be read: {e}") from None
    if not rows or "gt" not in rows[0] or "page_index" not in rows[0] or not ({"source", "pdf"} & set(rows[0])):
        raise EngineError(f"--truth {path}: needs the columns source (or pdf), page_index and gt")
    folder = os.path.dirname(os.path.abspath(path))
    out = {}
    for r in rows:
        key = (_name(r.get("source") or r["pdf"]), int(r["page_index"]), r.get("side") or "")
        out[key] = os.path.join(folder, r["gt"])
    return out


class TruthEngine:
    name = "truth"
    version = "ground truth"

    def __init__(self, manifest: str):
        self.pages = load_manifest(manifest)

    def predict_batch(self, images: Sequence[np.ndarray], hints: Optional[Sequence[ImageHints]] = None) -> list[OcrResult]:
        return [self._one(h) for h in (hints or [ImageHints()] * len(images))]

    def _one(self, hint: ImageHints) -> OcrResult:
        key = (_name(hint.source_uri), hint.page_index, hint.side or "")
        path = self.pages.get(key)
        if path is None:
            return OcrResult("", [], None, error=f"truth: no ground truth for {key[0]} page_index {key[1]}"
                                                 + (f" ({key[2]})" if key[2] else ""))
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read().strip()
        except OSError as e:
            return OcrResult("", [], None, error=f"truth: {path}: {e}")
        lines = [OcrLine(t.strip(), 1.0, ()) for t in text.split("\n") if t.strip()]
        return OcrResult(text, lines, 1.0 if lines else None, confidence_min=1.0 if lines else None)
