"""Degradations of real page scans whose ground truth stays known: the hard pages of issue 9.

    curl(img, strength)      a page photographed in an open book: lines bend and crowd towards the spine
    lowres(img, dpi)         the 300-dpi scan as if scanned at `dpi`
    blur / noise / jpeg / fade / bleed
"""
from __future__ import annotations

import cv2
import numpy as np


def curl(img: np.ndarray, strength: float = 1.0, spine: str = "right") -> np.ndarray:
    """A cubic sheet: flat on the outer part of the page, bending towards the spine; lines at the
    top and bottom of the page bend in opposite senses (the paper curves away from the camera),
    and the text is foreshortened (crowds) near the spine."""
    h, w = img.shape
    t = _spine_t(np.arange(w, dtype=np.float64), w, spine)[None, :]  # 0 on the flat part, 1 at the spine
    v = np.linspace(-1.0, 1.0, h)[:, None]
    dy = strength * h * (0.045 * t + 0.035 * t * v)  # lines drop towards the spine, more at the bottom
    src_x = np.broadcast_to(curl_source_x(np.arange(w, dtype=np.float64), w, strength, spine)[None, :], (h, w)).astype(np.float32)
    src_y = (np.arange(h)[:, None] - dy).astype(np.float32)
    out = cv2.remap(img, src_x, src_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=255)
    shade = 1.0 - 0.35 * strength * t  # the page darkens into the gutter
    return np.clip(out.astype(np.float32) * shade, 0, 255).astype(np.uint8)


def _spine_t(x: np.ndarray, w: int, spine: str) -> np.ndarray:
    u = x / max(w - 1, 1)
    if spine == "left":
        u = 1.0 - u
    return np.clip((u - 0.35) / 0.65, 0, 1) ** 3


def curl_source_x(x: np.ndarray, w: int, strength: float = 1.0, spine: str = "right") -> np.ndarray:
    """Column of the flat page that column x of `curl(img, strength, spine)` shows: foreshortening,
    the curled page's columns near the spine come from further in (known, so crowding is measurable)."""
    squeeze = strength * 0.12 * w * _spine_t(x, w, spine) ** 1.5
    return x + (squeeze if spine == "right" else -squeeze)


def lowres(img: np.ndarray, dpi: float, source_dpi: float = 300.0) -> np.ndarray:
    f = dpi / source_dpi
    return cv2.resize(img, (max(1, round(img.shape[1] * f)), max(1, round(img.shape[0] * f))), interpolation=cv2.INTER_AREA)


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), sigma)


def noise(img: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = img.astype(np.float32) + rng.normal(0, sigma, img.shape)
    specks = rng.random(img.shape) < sigma / 4000  # foxing and dust
    out[specks] = 30
    return np.clip(out, 0, 255).astype(np.uint8)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)


def fade(img: np.ndarray, contrast: float) -> np.ndarray:
    """Ink faded towards the paper: `contrast` 1 is the scan, 0.2 grey ink on grey paper."""
    return np.clip(200 + (img.astype(np.float32) - 200) * contrast, 0, 255).astype(np.uint8)


def bleed(img: np.ndarray, other: np.ndarray, opacity: float) -> np.ndarray:
    """The text of the other side of the leaf showing through, mirrored."""
    back = cv2.resize(np.fliplr(other), (img.shape[1], img.shape[0]))
    mix = img.astype(np.float32) * (1 - opacity * (255 - back.astype(np.float32)) / 255)
    return np.clip(mix, 0, 255).astype(np.uint8)


KINDS = ("curl", "lowres", "blur", "noise", "jpeg", "fade", "bleed")


def random_degradation(img: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """One degradation of a random kind and severity (from harmless to unreadable), and its label."""
    kind = str(rng.choice(KINDS))
    if kind == "curl":
        s = float(rng.uniform(0.3, 1.6))
        return curl(img, s, spine=str(rng.choice(["left", "right"]))), f"curl:{s:.2f}"
    if kind == "lowres":
        d = float(rng.choice([30, 38, 45, 55, 65, 75, 100, 150]))
        return lowres(img, d), f"lowres:{d:.0f}"
    if kind == "blur":
        s = float(rng.uniform(0.8, 4.0))
        return blur(img, s), f"blur:{s:.1f}"
    if kind == "noise":
        s = float(rng.uniform(20, 110))
        return noise(img, s, int(rng.integers(1 << 30))), f"noise:{s:.0f}"
    if kind == "jpeg":
        q = int(rng.integers(3, 30))
        return jpeg(lowres(img, 150), q), f"jpeg150:{q}"
    if kind == "fade":
        c = float(rng.uniform(0.08, 0.5))
        return fade(img, c), f"fade:{c:.2f}"
    o = float(rng.uniform(0.2, 0.8))
    return bleed(img, other, o), f"bleed:{o:.2f}"
