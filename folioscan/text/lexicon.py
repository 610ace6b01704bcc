"""Word lists per language (wordfreq's, shipped in the wheel: no download), and the word tokenizer.

Everything in `folioscan.text` that asks "is this a word?" asks here.
"""
from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Optional

# letters, with inner apostrophes ("don't", "o'clock"); digits and underscores are not words
WORD = re.compile(r"[^\W\d_]+(?:['\u2019][^\W\d_]+)*")


def words(text: str) -> list[str]:
    return WORD.findall(text or "")


@lru_cache(maxsize=None)
def _frequencies(lang: str) -> Optional[dict]:
    import wordfreq

    if not lang or lang not in wordfreq.available_languages(wordlist="best"):
        return None
    return wordfreq.get_frequency_dict(lang, wordlist="best")


def has_lexicon(lang: Optional[str]) -> bool:
    return bool(lang) and _frequencies(lang) is not None


def zipf(word: str, lang: str) -> float:
    """wordfreq's Zipf scale: log10 of occurrences per billion words; 0 for an unknown word or language."""
    freqs = _frequencies(lang)
    if not freqs:
        return 0.0
    f = freqs.get(word.lower().replace("\u2019", "'"))
    return math.log10(f) + 9 if f else 0.0


def known(word: str, lang: str, min_zipf: float = 1.0) -> bool:
    return zipf(word, lang) >= min_zipf


@lru_cache(maxsize=None)
def _floor(lang: str, min_zipf: float) -> float:
    """The least frequency whose Zipf value is at least `min_zipf` (log10 is monotonic, so a word is
    `known` exactly when its frequency is at least this): wordfreq's frequencies take a few hundred
    distinct values, each taken to the log once."""
    return min((f for f in set(_frequencies(lang).values()) if f and math.log10(f) + 9 >= min_zipf), default=math.inf)


_MEMO_WORDS = 200_000  # words remembered per language (a few tens of MB); forgotten all at once beyond


@lru_cache(maxsize=None)
def _memo(lang: str, min_zipf: float) -> dict:
    return {}


def count_known(ws: list[str], lang: str, min_zipf: float = 1.0) -> int:
    """How many of the words `ws` are `known` (the same answer word by word), each distinct word looked
    up once per process: the book text and its signals look up every word of every page, twice
    (bench/driver.py --breakdown), and a text's words are mostly the same few thousand."""
    freqs = _frequencies(lang)
    if not freqs:  # no word list: every word's Zipf value is 0
        return len(ws) if min_zipf <= 0.0 else 0
    memo = _memo(lang, min_zipf)
    try:
        return sum(map(memo.__getitem__, ws))
    except KeyError:
        pass
    if len(memo) > _MEMO_WORDS:
        memo.clear()
    if min_zipf <= 0.0:  # unlisted words count too: by Zipf value
        for w in set(ws).difference(memo):
            memo[w] = known(w, lang, min_zipf)
    else:
        floor, get = _floor(lang, min_zipf), freqs.get
        for w in set(ws).difference(memo):
            memo[w] = (get(w.lower().replace("\u2019", "'")) or 0.0) >= floor
    return sum(map(memo.__getitem__, ws))
