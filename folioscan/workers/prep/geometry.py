"""Shared image helpers for the cleaning steps: analysis copies, ink masks, rotation."""
from __future__ import annotations

from functools import cached_property

import cv2
import numpy as np

ANALYSIS_LONG_SIDE = 1000  # pixels; analysis runs on a copy this size, decisions scale back


def analysis_copy(gray: np.ndarray, long_side: int = ANALYSIS_LONG_SIDE) -> tuple[np.ndarray, float]:
    """A downscaled copy and the factor from it back to full resolution."""
    h, w = gray.shape
    scale = max(h, w) / long_side
    if scale <= 1:
        return gray, 1.0
    size = (max(1, round(w / scale)), max(1, round(h / scale)))  # a 1-px-high strip must not round to 0
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA), scale


def ink_mask(gray: np.ndarray) -> np.ndarray:
    """Text-like ink: darker than its neighbourhood (robust to shading), as a bool mask."""
    block = max(15, (min(gray.shape) // 40) | 1)
    binary = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV, block, 15)
    return binary > 0


class Ink:
    """An analysis copy's ink mask and the mask's connected components, each computed once, on
    first use: orientation, deskew, dewarp measurement and segmentation share them until a step
    changes the pixels (a new Ink is made then)."""

    def __init__(self, small: np.ndarray):
        self.small = small

    @cached_property
    def mask(self) -> np.ndarray:
        return ink_mask(self.small)

    @cached_property
    def components(self) -> tuple[int, np.ndarray, np.ndarray]:
        """(count including the background label 0, label image, stats rows x, y, w, h, area), 8-connected."""
        n, labels, stats, _ = cv2.connectedComponentsWithStats(self.mask.astype(np.uint8), connectivity=8)
        return n, labels, stats

    def turned(self, clockwise_degrees: int) -> "Ink":
        """The same page turned; a mask already computed is turned with it (the mask of a turned
        page is the turned mask: the threshold's window is square)."""
        out = Ink(rot90(self.small, clockwise_degrees))
        if "mask" in self.__dict__:
            out.mask = rot90(self.mask, clockwise_degrees)
        return out


def rotate(gray: np.ndarray, angle: float) -> np.ndarray:
    """Rotate counter-clockwise by `angle` degrees about the centre, keeping the size, white fill."""
    h, w = gray.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return cv2.warpAffine(gray, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=255)


def rot90(gray: np.ndarray, clockwise_degrees: int) -> np.ndarray:  # also rotates bool masks
    return np.ascontiguousarray(np.rot90(gray, k=-(clockwise_degrees // 90) % 4))


def line_bands(profile: np.ndarray) -> list[tuple[int, int]]:
    """Runs of rows whose ink is above a fraction of the typical line's ink."""
    if profile.max() == 0:
        return []
    on = profile > 0.15 * np.percentile(profile[profile > 0], 90)
    bands, start = [], None
    for i, v in enumerate(on):
        if v and start is None:
            start = i
        elif not v and start is not None:
            bands.append((start, i))
            start = None
    if start is not None:
        bands.append((start, len(on)))
    return [b for b in bands if b[1] - b[0] >= 3]
