"""RapidOCR (PP-OCR models on ONNX Runtime, weights inside the wheel).

Its angle classifier flips upright lines on book pages (measured on 10 old_books pages: mean
CER 4.66% with it, 1.66% without), so it is off by default; the prep stage fixes orientation.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from folioscan.records import OcrLine, OcrResult
from folioscan.workers.engines.base import ImageHints, result_from_lines


class RapidOcrEngine:
    name = "rapidocr"

    def __init__(self, use_angle_cls: bool = False, threads: int = 1):
        import importlib.metadata

        from rapidocr_onnxruntime import RapidOCR

        self.ocr = RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=1)
        self.use_angle_cls = use_angle_cls
        self.version = importlib.metadata.version("rapidocr-onnxruntime")

    def predict_batch(self, images: Sequence[np.ndarray], hints: Optional[Sequence[ImageHints]] = None) -> list[OcrResult]:
        return [self._read(img) for img in images]

    def _read(self, img: np.ndarray) -> OcrResult:
        try:
            bgr = np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img
            found, _ = self.ocr(bgr, use_cls=self.use_angle_cls)
        except Exception as e:
            return OcrResult(text="", lines=[], confidence=None, error=f"rapidocr: {e}")
        segments = []
        for quad, text, score in found or []:
            xs, ys = [p[0] for p in quad], [p[1] for p in quad]
            segments.append(OcrLine(text, float(score), (int(min(xs)), int(min(ys)), int(max(xs)), int(max(ys)))))
        return result_from_lines(merge_into_lines(segments))


def merge_into_lines(segments: list[OcrLine]) -> list[OcrLine]:
    """Join detector boxes that sit on the same text line, left to right, lines top to bottom."""
    rows: list[list[OcrLine]] = []
    for seg in sorted(segments, key=lambda s: (s.box[1] + s.box[3]) / 2):
        mid = (seg.box[1] + seg.box[3]) / 2
        if rows:
            last = rows[-1]
            top, bottom = min(s.box[1] for s in last), max(s.box[3] for s in last)
            if top <= mid <= bottom:
                last.append(seg)
                continue
        rows.append([seg])
    lines = []
    for row in rows:
        row.sort(key=lambda s: s.box[0])
        text = " ".join(s.text for s in row)
        weight = sum(len(s.text) for s in row) or 1
        conf = sum(len(s.text) * s.confidence for s in row) / weight
        box = (min(s.box[0] for s in row), min(s.box[1] for s in row), max(s.box[2] for s in row), max(s.box[3] for s in row))
        lines.append(OcrLine(text, round(conf, 4), box))
    return lines
