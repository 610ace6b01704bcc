"""Low-resolution pages: text whose x-height is too small for the engine is enlarged before OCR.

Measured on old_books pages with Tesseract (`bench/harder_pages.py`): at 150 dpi (x-height ~11 px)
enlarging gains nothing; at 100 dpi (~7 px) and 45 dpi (~3.5 px) enlarging to ~16 px recovers most
of the accuracy lost. Enlarging cannot add detail that is not there: a page still too poor after
it must show that in its confidence (see workers/page_confidence.py), never as confident text.
"""
from __future__ import annotations

import cv2
import numpy as np

MAX_UPSCALED_MEGAPIXELS = 80.0  # a cap on the enlarged page, whatever the factor asks


def upscale_factor(x_height: float, below: float, target: float, max_factor: float, megapixels: float) -> float:
    """How much to enlarge a page whose measured x-height is `x_height` pixels (1.0: leave it)."""
    if x_height <= 0 or x_height >= below or below <= 0:
        return 1.0
    factor = min(max_factor, target / x_height, (MAX_UPSCALED_MEGAPIXELS / max(megapixels, 1e-6)) ** 0.5)
    return round(factor, 3) if factor > 1.05 else 1.0


def enlarge(gray: np.ndarray, factor: float) -> np.ndarray:
    h, w = gray.shape
    return cv2.resize(gray, (round(w * factor), round(h * factor)), interpolation=cv2.INTER_CUBIC)
