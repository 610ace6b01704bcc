"""The OCR engine interface: images in, results out; engines know nothing of pages or storage."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Protocol, Sequence

import numpy as np

from folioscan.records import OcrLine, OcrResult


@dataclass(frozen=True)
class ImageHints:
    """What the page stages measured, for engines that adapt to it (the VLM budget choice)."""

    est_chars: int = 0
    text_density: float = 0.0
    budget: Optional[str] = None  # VLM engines: read once at exactly this budget (a retry of an accepted read)
    # which page the image is, for an engine that looks pages up rather than reading pixels (the
    # test/bench `truth` engine); every other engine ignores it
    source_uri: str = ""
    page_index: int = -1
    side: Optional[str] = None


class OcrEngine(Protocol):
    name: str
    version: str

    def predict_batch(self, images: Sequence[np.ndarray], hints: Optional[Sequence[ImageHints]] = None) -> list[OcrResult]:
        """One result per image (uint8 grayscale H x W), in order. Failures come back as results with `error`."""
        ...


def text_weighted_mean(pairs: Iterable[tuple[str, Optional[float]]]) -> Optional[float]:
    """Mean of confidences weighted by the length of the text each belongs to (lines, pages)."""
    total = weight = 0.0
    for text, conf in pairs:
        if conf is not None:
            w = max(len(text.strip()), 1)
            total, weight = total + w * conf, weight + w
    return total / weight if weight else None


def char_weighted_confidence(lines: Sequence[OcrLine]) -> tuple[Optional[float], Optional[float]]:
    """Page confidence as the mean of line confidences weighted by line length, plus the minimum."""
    kept = [l for l in lines if l.text.strip()]
    if not kept:
        return None, None
    return text_weighted_mean((l.text, l.confidence) for l in kept), min(l.confidence for l in kept)


def result_from_lines(lines: list[OcrLine], text: Optional[str] = None) -> OcrResult:
    mean, low = char_weighted_confidence(lines)
    if text is None:
        text = "\n".join(l.text for l in lines)
    return OcrResult(text=text.strip(), lines=lines, confidence=mean, confidence_min=low)
