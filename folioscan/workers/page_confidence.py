"""Page confidence as a probability that the page is good (CER at most 3%).

A logistic model combines the engine's own confidence with what else is known of the page: how
many words are doubtful and how bad the worst are, the share of words in the language's lexicon,
the share of letters among the characters, how ragged the line boxes are, the measured line
curvature, the x-height, how far the engine's line boxes fall under 12 px in the scan's pixels,
and whether the engine's reading order jumps back up a column (a drop capital's first line read
last, a line fragment read out of place: every word right and confident, the page text not). Candidates that did not help on held-out books were left out:
repetition, the enlargement factor, text length against the segmentation's estimate, line count
against the segmentation's, line box height against the x-height, per-line confidence minimum
and 10th percentile, shares of words under 0.5 and 0.3, doubtful words missing from the lexicon,
characters outside the language's alphabet, an x-height under 5-10 px. Fitted by
`bench/page_confidence.py fit` on old_books pages, degraded and low-resolution copies with
leave-one-book-out cross-validation; the figures are in docs/hard-pages.md. Fitted for Tesseract: other
engines keep their own confidence (`confidence` = `confidence_raw`).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from folioscan.records import OcrResult, PrepInfo

CALIBRATED_ENGINES = ("tesseract",)
LEXICON_LANG = {"eng": "en", "deu": "de", "frk": "de", "Fraktur": "de", "jpn": "ja"}  # Tesseract -> wordfreq

FEATURES = ("logit_raw", "word_low", "logit_word_p10", "lexicon", "letters", "line_box_spread", "curvature",
            "log_x_height", "order_breaks", "small_lines")
SMALL_LINE_PX = 12.0  # line boxes shorter than this, in pixels of the page as scanned, read worse and worse

# fitted by `python bench/page_confidence.py fit` on 705 pages (docs/hard-pages.md): coefficients on standardised features
MODEL = {
    "intercept": -1.5439,
    "coef": [2.1489, -2.3956, 1.7157, 1.351, 0.6111, -0.5162, -0.0153, -0.9374, -0.765, -1.1781],
    "mean": [1.876, 0.1899, 0.4177, 0.9242, 0.9525, 0.1439, 0.1444, 2.194, 0.0128, 0.1916],
    "scale": [1.3293, 0.254, 2.9586, 0.1167, 0.0749, 0.1201, 0.2552, 0.8782, 0.1123, 0.2881],
}


def raw_inputs(ocr: Optional[OcrResult], prep: PrepInfo, lang: str = "eng") -> dict:
    """What the features are computed from, as plain data (the benchmark stores it). Computed for
    every page the OCR stage reads: only what the model uses belongs here."""
    lines = ocr.lines if ocr else []
    return {"text": ocr.text if ocr else "", "confidence_raw": ocr.confidence if ocr else None,
            "word_confidences": [w.confidence for l in lines for w in l.words],
            "line_boxes": [list(l.box) for l in lines if l.box], "x_height": prep.x_height,
            "curvature": prep.curvature, "upscale": prep.upscale, "lang": LEXICON_LANG.get(lang.split("+")[0], None)}


def _logit(p: float) -> float:
    p = min(max(p, 1e-3), 1 - 1e-3)
    return math.log(p / (1 - p))


def _order_breaks(boxes: list) -> int:
    """Lines the engine reads after a line below them in the same column: the reading order jumps
    back up the page (a drop capital's first line put last, a line fragment read out of place).
    A jump to another column does not count (the lines share no width), nor a speck read last
    (a box less than three times as wide as it is high)."""
    breaks = 0
    for (px0, py0, px1, py1), (x0, y0, x1, y1) in zip(boxes, boxes[1:]):
        shared = min(px1, x1) - max(px0, x0)
        if y1 <= py0 + 0.5 * (py1 - py0) and shared > 0.5 * min(px1 - px0, x1 - x0) and x1 - x0 >= 3 * (y1 - y0):
            breaks += 1
    return breaks


def features_from_inputs(d: dict) -> dict:
    from folioscan.text.signals import lexicon_fraction

    text = d["text"] or ""
    words = np.asarray(d["word_confidences"] or [0.0], dtype=np.float64)
    heights = np.asarray([b[3] - b[1] for b in d["line_boxes"]] or [0.0], dtype=np.float64)
    visible = [c for c in text if not c.isspace()]
    lex = lexicon_fraction(text, d["lang"]) if d["lang"] else None
    return {
        "logit_raw": _logit(d["confidence_raw"] or 0.0),
        "word_low": float((words < 0.7).mean()),  # share of doubtful words
        "logit_word_p10": _logit(float(np.percentile(words, 10))),  # how bad the worst words are
        "lexicon": 0.0 if lex is None else lex,
        "letters": sum(c.isalpha() for c in visible) / max(len(visible), 1),  # garbage is punctuation-heavy
        "line_box_spread": float(heights.std() / max(heights.mean(), 1.0)),  # ragged line boxes
        "curvature": min(d["curvature"], 5.0),
        "log_x_height": math.log(max(d["x_height"] or 0.0, 0.5)),
        "order_breaks": min(_order_breaks(d.get("line_boxes") or []), 2),
        # the engine's line height in pixels of the scan: finer than the x-height at 3-5 px, where
        # a fraction of a pixel decides between a page read at 3% and one at 15%
        "small_lines": max(0.0, math.log(SMALL_LINE_PX / max(float(np.median(heights)) / (d.get("upscale") or 1.0), 1.0))),
    }


def feature_vector(features: dict) -> list[float]:
    return [float(features[n]) for n in FEATURES]


def predict(model: dict, X: np.ndarray) -> np.ndarray:
    z = (np.asarray(X, dtype=np.float64) - model["mean"]) / model["scale"]
    return 1.0 / (1.0 + np.exp(-(z @ np.asarray(model["coef"]) + model["intercept"])))


def page_confidence(ocr: OcrResult, prep: PrepInfo, lang: str = "eng") -> float:
    x = feature_vector(features_from_inputs(raw_inputs(ocr, prep, lang)))
    return round(float(predict(MODEL, np.asarray([x]))[0]), 4)


def fit_logistic(X: np.ndarray, y: np.ndarray, l2: float = 1.0, iterations: int = 50) -> dict:
    """L2-penalised logistic regression by Newton's method on standardised features."""
    X = np.asarray(X, dtype=np.float64)
    mean, scale = X.mean(axis=0), X.std(axis=0)
    scale[scale == 0] = 1.0
    Z = np.hstack([np.ones((len(X), 1)), (X - mean) / scale])
    w = np.zeros(Z.shape[1])
    penalty = np.diag([0.0] + [l2] * (Z.shape[1] - 1))
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-Z @ w))
        grad = Z.T @ (p - y) + penalty @ w
        hess = (Z * (p * (1 - p))[:, None]).T @ Z + penalty
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return {"intercept": float(w[0]), "coef": w[1:].tolist(), "mean": mean.tolist(), "scale": scale.tolist()}


def fitted_for(engine: str) -> bool:
    return engine in CALIBRATED_ENGINES


