"""Accuracy against ground truth, as pure functions: the normalisation, CER and WER, AUROC, the
reliability table, and the confidence threshold that keeps bad pages rare among accepted ones.

`folioscan eval` and the benchmarks both measure with these, so a figure in the README and one
from a user's own pages mean the same thing.

Normalisation (always): Unicode NFKC; curly quotes, guillemets and dashes to their ASCII forms; soft
hyphens removed; the ligatures fi/fl split; two single quotes read as one double quote (a printer's
habit the engine reads faithfully); a word broken by an end-of-line hyphen joined; whitespace runs,
line breaks included, to one space. Options: `fold_case` (compare without case: small capitals, which
transcriptions often write in lower case) and `fold_punctuation` (punctuation removed before
comparing). CER = Levenshtein distance over characters / characters of the truth; WER the same over
words.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Optional, Sequence

import numpy as np

BAD_ABOVE = 0.03  # a page with a CER above this is bad: the level `confidence` is calibrated for (P(CER <= 3%))
NORMALISATION = ("NFKC; curly quotes, guillemets and dashes to ASCII; soft hyphens removed; fi/fl split; two single "
                 "quotes as a double; end-of-line hyphens joined; whitespace collapsed")
PLAIN_FORMS = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"',  # align.py's too
                             "\u00bb": '"', "\u2014": "-", "\u2013": "-", "\u00ad": "", "\ufb01": "fi", "\ufb02": "fl"})
_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)


def normalize(text: Optional[str], fold_case: bool = False, pair_quotes: bool = True, fold_punctuation: bool = False) -> str:
    """The text as both sides are compared (see the module's docstring). `pair_quotes=False` is the
    normalisation before the ground-truth audit of bench/gt_audit.json, kept for comparison."""
    text = unicodedata.normalize("NFKC", text or "").translate(PLAIN_FORMS)
    if pair_quotes:
        text = text.replace("''", '"')
    text = re.sub(r"(\w)-\s*\n\s*(\w)", r"\1\2", text)
    if fold_punctuation:
        text = _PUNCT.sub(" ", text)
    return " ".join((text.casefold() if fold_case else text).split())


def cer(predicted: Optional[str], truth: str, fold_case: bool = False, pair_quotes: bool = True,
        fold_punctuation: bool = False) -> float:
    from rapidfuzz.distance import Levenshtein

    truth = normalize(truth, fold_case, pair_quotes, fold_punctuation)
    return Levenshtein.distance(normalize(predicted, fold_case, pair_quotes, fold_punctuation), truth) / max(len(truth), 1)


def wer(predicted: Optional[str], truth: str, fold_case: bool = False, fold_punctuation: bool = False) -> float:
    from rapidfuzz.distance import Levenshtein

    t = normalize(truth, fold_case, fold_punctuation=fold_punctuation).split()
    return Levenshtein.distance(normalize(predicted, fold_case, fold_punctuation=fold_punctuation).split(), t) / max(len(t), 1)


def auroc(scores: Sequence[float], good: Sequence[bool]) -> Optional[float]:
    """P(a random good page scores above a random bad one), ties counted half; None without both kinds."""
    s, g = np.asarray(scores, dtype=float), np.asarray(good, dtype=bool)
    n_good, n_bad = int(g.sum()), int((~g).sum())
    if not n_good or not n_bad:
        return None
    r = _ranks(s)
    return float((r[g].sum() - n_good * (n_good + 1) / 2) / (n_good * n_bad))


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, weights=ranks) / counts)[inverse]


def reliability(p: Sequence[float], good: Sequence[bool], bins: int = 10) -> list[dict]:
    """Per confidence bin: pages, the mean confidence, and the share that was actually good."""
    p, good = np.asarray(p, dtype=float), np.asarray(good, dtype=bool)
    edges = np.linspace(0, 1, bins + 1)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (p >= lo) & ((p < hi) if hi < 1 else (p <= hi))
        if m.any():
            out.append({"bin": f"{lo:.1f}-{hi:.1f}", "pages": int(m.sum()), "mean_confidence": round(float(p[m].mean()), 3),
                        "share_good": round(float(good[m].mean()), 3)})
    return out


def threshold_for_bad_share(p: Sequence[float], good: Sequence[bool], max_bad_share: float) -> dict:
    """The lowest confidence threshold whose accepted pages (confidence >= threshold) hold at most
    `max_bad_share` bad pages, with what it accepts; accepting more pages is what a lower threshold buys.
    No threshold qualifies when even the most confident page alone is bad: `threshold` None."""
    p, good = np.asarray(p, dtype=float), np.asarray(good, dtype=bool)
    none = {"threshold": None, "accepted_pages": 0, "accepted_share": 0.0, "bad_share_accepted": None}
    if not len(p):
        return none
    order = np.argsort(-p, kind="mergesort")
    ps, bad = p[order], np.cumsum(~good[order])
    last = np.r_[ps[1:] != ps[:-1], True]  # the last page of each run of equal confidences: a threshold's cut
    kept = np.arange(1, len(p) + 1)
    ok = last & (bad / kept <= max_bad_share)
    if not ok.any():
        return none
    i = int(np.nonzero(ok)[0][-1])  # the lowest qualifying threshold accepts the most pages
    return {"threshold": round(float(ps[i]), 4), "accepted_pages": int(kept[i]), "accepted_share": round(float(kept[i] / len(p)), 4),
            "bad_share_accepted": round(float(bad[i] / kept[i]), 4)}
