"""The OCR engine interface: images in, results out; engines know nothing of pages or storage."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, Sequence

import numpy as np

from folioscan.records import OcrLine, OcrResult


@dataclass(frozen=True)
class ImageHints:
    """What the page stages measured, for engines that adapt to it (the VLM budget choice)."""

    est_chars: int = 0
    text_density: float = 0.0


class OcrEngine(Protocol):
    name: str
    version: str

    def predict_batch(self, images: Sequence[np.ndarray], hints: Optional[Sequence[ImageHints]] = None) -> list[OcrResult]:
        """One result per image (uint8 grayscale H x W), in order. Failures come back as results with `error`."""
        ...


def char_weighted_confidence(lines: Sequence[OcrLine]) -> tuple[Optional[float], Optional[float]]:
    """Page confidence as the mean of line confidences weighted by line length, plus the minimum."""
    weighted = [(max(len(l.text.strip()), 1), l.confidence) for l in lines if l.text.strip()]
    if not weighted:
        return None, None
    total = sum(w for w, _ in weighted)
    return sum(w * c for w, c in weighted) / total, min(c for _, c in weighted)


def result_from_lines(lines: list[OcrLine], text: Optional[str] = None) -> OcrResult:
    mean, low = char_weighted_confidence(lines)
    if text is None:
        text = "\n".join(l.text for l in lines)
    return OcrResult(text=text.strip(), lines=lines, confidence=mean, confidence_min=low)
