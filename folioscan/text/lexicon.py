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
