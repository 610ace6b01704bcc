"""One book's reading text and signals from its pages: furniture out, words whole, paragraphs joined.

`book_text(pages)` is what assembly calls; page records come in reading order (a split spread's
left page before its right page) and nothing here reads or writes anything.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

from folioscan.text.furniture import find_furniture, numbers_consistent
from folioscan.text.hyphenation import vocabulary
from folioscan.text.matter import matter_flags
from folioscan.text.page import Line, TextPage
from folioscan.text.paragraphs import reading_text
from folioscan.text.signals import Signals, language, signals


@dataclass
class PageText:
    header: Optional[str] = None  # running header line(s) removed from the reading text, "\n" between
    footer: Optional[str] = None
    printed_page_number: Optional[str] = None
    body: str = ""  # the page's lines left in the reading text
    signals: Signals = field(default_factory=Signals)
    matter: list[str] = field(default_factory=list)


@dataclass
class BookText:
    text: str
    page_spans: list[int]  # offset in `text` where each page's text starts
    pages: list[PageText]
    signals: Signals
    page_numbers_consistent: Optional[bool]  # printed numbers rise along the book; None with fewer than two


def book_text(pages: Sequence[TextPage], method: str = "rapidfuzz") -> BookText:
    furniture = find_furniture(pages, method=method)
    bodies: list[list[Line]] = []
    for page, f in zip(pages, furniture):
        gone = f.removed
        bodies.append([l for i, l in enumerate(page.lines) if i not in gone] if page.ok else [])
    body_texts = ["\n".join(l.text for l in b) for b in bodies]
    detected = [language(body) if page.ok else (None, 0.0) for page, body in zip(pages, body_texts)]
    lang, share = _book_language(detected, body_texts)
    vocab = vocabulary(l.text for b in bodies for l in b)
    text, spans = reading_text(bodies, vocab, lang)
    out = []
    for n, (page, f, body) in enumerate(zip(pages, furniture, body_texts)):
        sig = signals(body, page.confidence, lang=lang, detected=detected[n]) if page.ok else Signals()
        out.append(PageText(
            header="\n".join(page.lines[i].text for i in f.header) or None,
            footer="\n".join(page.lines[i].text for i in f.footer) or None,
            printed_page_number=f.number, body=body, signals=sig,
            matter=matter_flags(body, n, len(pages)) if page.ok else []))
    book = signals(text, _char_weighted([(p.body, p.signals.confidence) for p in out]), lang=lang,
                   detected=(lang, share))
    return BookText(text, spans, out, book, numbers_consistent([p.printed_page_number for p in out]))


def _book_language(detected: list[tuple[Optional[str], float]], bodies: list[str]) -> tuple[Optional[str], float]:
    """The language most of the book's letters are in (pages' findings weighted by their length), and its share."""
    votes: dict[str, float] = {}
    for (lang, share), body in zip(detected, bodies):
        if lang:
            votes[lang] = votes.get(lang, 0.0) + share * len(body)
    total = sum(len(b) for (lang, _), b in zip(detected, bodies) if lang)
    if not votes or not total:
        return None, 0.0
    best = max(votes, key=votes.get)
    return best, round(votes[best] / total, 4)


def _char_weighted(pairs) -> Optional[float]:
    pairs = [(len(t), c) for t, c in pairs if c is not None and t]
    total = sum(n for n, _ in pairs)
    return round(sum(n * c for n, c in pairs) / total, 4) if total else None
