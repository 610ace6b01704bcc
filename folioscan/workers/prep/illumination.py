"""Illumination flattening: divide by an estimate of the paper background.

Uneven lighting, page curl shading, yellowed paper and gutter shadow become a flat white
background with the ink kept in grey levels (what a VLM wants); binarisation is a separate,
optional step for engines that want black and white.
"""
from __future__ import annotations

import cv2
import numpy as np


def background(gray: np.ndarray) -> np.ndarray:
    """Paper brightness at every pixel: a closing (removes the dark text) on a 1/8 copy, smoothed."""
    h, w = gray.shape
    small = cv2.resize(gray, (max(8, w // 8), max(8, h // 8)), interpolation=cv2.INTER_AREA)
    k = max(3, (min(small.shape) // 25) | 1)
    bg = cv2.morphologyEx(small, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (k, k)))
    bg = cv2.GaussianBlur(bg, (0, 0), k / 2)
    return cv2.resize(bg, (w, h), interpolation=cv2.INTER_LINEAR)


def flatten(gray: np.ndarray) -> tuple[np.ndarray, bool]:
    """(flattened image, whether it was needed). Pages with an already even background are left alone."""
    bg = background(gray)
    lo, hi = np.percentile(bg, [2, 98])
    if hi - lo < 12 and hi > 200:
        return gray, False
    out = cv2.divide(gray, np.maximum(bg, 1), scale=255)
    return out, True


def binarize(gray: np.ndarray) -> np.ndarray:
    _, out = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return out
