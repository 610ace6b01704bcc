"""Page confidence as a probability that the page is good (CER at most 3%).

A logistic model combines the engine's own confidence with what else is known of the page: how
many words are doubtful and how bad the worst are, the share of words in the lexicon of the
language the text is in (`lexicon_share`: words of letters only, shrunk towards a good page's
share when there are few of them), the share of tokens holding a letter or digit (`wordlike_share`),
how ragged the line boxes are, the measured line
curvature, the x-height, how far the engine's line boxes fall under 12 px in the scan's pixels,
and whether the engine's reading order jumps back up a column (a drop capital's first line read
last, a line fragment read out of place: every word right and confident, the page text not). Candidates that did not help on held-out books were left out:
repetition, the enlargement factor, text length against the segmentation's estimate, line count
against the segmentation's, line box height against the x-height, per-line confidence minimum
and 10th percentile, shares of words under 0.5 and 0.3, doubtful words missing from the lexicon,
characters outside the language's alphabet, an x-height under 5-10 px. Fitted by
`bench/page_confidence.py fit` on old_books pages, degraded and low-resolution copies with
leave-one-book-out cross-validation, with clean and degraded rendered pages unlike those books
(numbers, symbols, German; serif, sans, monospace) as one more book; the figures are in
docs/hard-pages.md. The share of letters among the characters and the lexicon share taken as 0
for a page without words made the model collapse on such pages (issue 19). Fitted for Tesseract: other
engines keep their own confidence (`confidence` = `confidence_raw`).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from folioscan.records import OcrResult, PrepInfo

CALIBRATED_ENGINES = ("tesseract",)
LEXICON_LANG = {"eng": "en", "deu": "de", "frk": "de", "Fraktur": "de", "jpn": "ja"}  # Tesseract -> wordfreq

FEATURES = ("logit_raw", "word_low", "logit_word_p10", "lexicon", "wordlike", "line_box_spread", "curvature",
            "log_x_height", "order_breaks", "small_lines")
SMALL_LINE_PX = 12.0  # line boxes shorter than this, in pixels of the page as scanned, read worse and worse

# fitted by `python bench/page_confidence.py fit` on 705 old_books pages and 108 rendered pages (docs/hard-pages.md):
# coefficients on standardised features
MODEL = {
    "intercept": -1.7878,
    "coef": [2.1428, -1.9743, 1.1482, 2.3728, 0.0213, -0.1843, 0.0968, -1.4132, -0.887, -1.4918],
    "mean": [1.8791, 0.1893, 0.4628, 0.9295, 0.9794, 0.1283, 0.1304, 2.2497, 0.0148, 0.192],
    "scale": [1.3029, 0.2544, 2.8895, 0.0863, 0.0793, 0.1194, 0.2405, 0.8917, 0.1304, 0.2903],
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


LEXICON_PRIOR, LEXICON_PRIOR_WORDS = 0.9, 10  # a page's lexicon share is shrunk towards what a good page shows,
# as if it had this many more words: a page of numbers has a handful of words, or none
MIN_WORDS_FOR_LANGUAGE = 20  # words (of letters) before the text's own language is looked for


def lexicon_share(text: str, lang: str | None) -> float:
    """Share of the text's words (runs of letters: numbers and symbols are no words) found in the
    lexicon of the language the text is in: the job's, or the one the text is detected to be in
    when that knows more of its words (a German page read with `eng`); shrunk towards
    LEXICON_PRIOR by how few words there are. Garbage is unknown in every language."""
    from folioscan.text.lexicon import has_lexicon, known, words

    ws = words(text)
    share = lambda lg: sum(1 for w in ws if known(w, lg)) / len(ws) if ws and has_lexicon(lg) else None  # noqa: E731
    found = share(lang) if lang else None
    if len(ws) >= MIN_WORDS_FOR_LANGUAGE and (found is None or found < 0.9):
        from folioscan.text.signals import language

        other, _ = language(text)
        if other and other != lang:
            theirs = share(other)
            found = theirs if found is None or (theirs is not None and theirs > found) else found
    n = len(ws) if found is not None else 0
    return ((found or 0.0) * n + LEXICON_PRIOR * LEXICON_PRIOR_WORDS) / (n + LEXICON_PRIOR_WORDS)


def wordlike_share(text: str) -> float:
    """Share of the text's tokens (runs of non-space) holding a letter or a digit: garbage is tokens
    of stray punctuation (`/`, `\\`, `¢`); a number, a tag, a word in brackets are not. Single symbols
    between words (`&`, `+`, `=`) cost a little."""
    tokens = text.split()
    return sum(any(c.isalnum() for c in t) for t in tokens) / len(tokens) if tokens else 0.0


def features_from_inputs(d: dict) -> dict:
    text = d["text"] or ""
    words = np.asarray(d["word_confidences"] or [0.0], dtype=np.float64)
    heights = np.asarray([b[3] - b[1] for b in d["line_boxes"]] or [0.0], dtype=np.float64)
    return {
        "logit_raw": _logit(d["confidence_raw"] or 0.0),
        "word_low": float((words < 0.7).mean()),  # share of doubtful words
        "logit_word_p10": _logit(float(np.percentile(words, 10))),  # how bad the worst words are
        "lexicon": lexicon_share(text, d["lang"]),
        "wordlike": wordlike_share(text),
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


