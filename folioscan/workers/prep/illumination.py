"""Illumination flattening: divide by an estimate of the paper background.

Uneven lighting, page curl shading, yellowed paper and gutter shadow become a flat white
background with the ink kept in grey levels (what a VLM wants); binarisation is a separate,
optional step for engines that want black and white.
"""
from __future__ import annotations

import cv2
import numpy as np


def background(small: np.ndarray) -> np.ndarray:
    """Paper brightness of the analysis copy: a closing (removes the dark text) on a 1/3 copy, smoothed."""
    h, w = small.shape
    tiny = cv2.resize(small, (max(8, w // 3), max(8, h // 3)), interpolation=cv2.INTER_AREA)
    k = max(3, (min(tiny.shape) // 25) | 1)
    bg = cv2.morphologyEx(tiny, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (k, k)))
    return cv2.GaussianBlur(bg, (0, 0), k / 2)


def flatten(gray: np.ndarray, small: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """(flattened page, flattened analysis copy, whether it was needed). Pages whose paper is
    already even are left alone. The background is estimated on the analysis copy only."""
    bg = background(small)
    lo, hi = np.percentile(bg, [2, 98])
    if hi - lo < 12 and hi > 200:
        return gray, small, False
    full = cv2.resize(bg, (gray.shape[1], gray.shape[0]), interpolation=cv2.INTER_LINEAR)
    part = cv2.resize(bg, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_LINEAR)
    return cv2.divide(gray, np.maximum(full, 1), scale=255), cv2.divide(small, np.maximum(part, 1), scale=255), True


def binarize(gray: np.ndarray) -> np.ndarray:
    _, out = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return out
