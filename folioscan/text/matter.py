"""Front and back matter flags of a page, from its text and its place in the book (where detectable)."""
from __future__ import annotations

import re

_FLAGS = [
    ("copyright", re.compile(r"copyright|\u00a9\s*\d{4}|all rights reserved|entered according to act of congress|printed in", re.I)),
    ("contents", re.compile(r"^\s*(table of )?contents\.?\s*$", re.I | re.M)),
    ("index", re.compile(r"^\s*index\.?\s*$", re.I | re.M)),
    ("advertisement", re.compile(r"advertisements?|now ready|price[, ]+\$?\d|\bcloth\b.{0,20}\d|post[- ]?free|publishers?\b.{0,40}(new york|london)", re.I)),
]
_LEADERS = re.compile(r"(\.\s?){3,}\s*\d+\s*$|\s\d{1,4}\s*$", re.M)  # "Chapter I ....... 13"
_INDEX_ENTRY = re.compile(r"^[A-Z][^\n]{1,60},\s*\d{1,4}(?:[,\u2013-]\s*\d{1,4})*\.?\s*$", re.M)


def matter_flags(text: str, index: int, pages: int) -> list[str]:
    """Flags among title, copyright, contents, index, advertisement; [] for a body page."""
    lines = [l for l in text.splitlines() if l.strip()]
    if not lines:
        return []
    front, back = index < max(3, pages // 10), index >= pages - max(3, pages // 10)
    flags = []
    for name, pattern in _FLAGS:
        if name == "copyright" and not front:
            continue
        if name == "advertisement" and not (front or back):
            continue
        if pattern.search(text):
            flags.append(name)
    if "contents" not in flags and front and sum(bool(_LEADERS.search(l)) for l in lines) > 0.5 * len(lines) >= 2:
        flags.append("contents")
    if "index" not in flags and back and sum(bool(_INDEX_ENTRY.match(l)) for l in lines) > 0.4 * len(lines) >= 2:
        flags.append("index")
    if front and index <= 2 and len(lines) <= 15 and sum(len(l) for l in lines) < 400 and not flags \
            and sum(_capitalised(l) for l in lines) >= 0.5 * len(lines):
        flags.append("title")
    return flags


def _capitalised(line: str) -> bool:
    letters = [c for c in line if c.isalpha()]
    return bool(letters) and sum(c.isupper() for c in letters) >= 0.6 * len(letters)
