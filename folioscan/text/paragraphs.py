"""Lines to paragraphs: lines joined with spaces, breaks from the layout, words made whole.

A paragraph starts where the line boxes show it (an indented first line, a short last line
ending a sentence, a vertical gap) or where the engine left a blank line; a paragraph that
runs over a page break is joined unless the next page's first line is indented or the
previous page ended on a short line.
"""
from __future__ import annotations

import re
import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Optional, Sequence

from folioscan.text.hyphenation import join_broken, join_spaced
from folioscan.text.page import Line

PARAGRAPH_SEP = "\n\n"
_SENTENCE_END = re.compile(r"[.!?:;\"'\u201d\u2019)\]]$")
_DASH_END = re.compile(r"[\u2014\u2013]$|--$")


@dataclass
class Geometry:
    left: float
    right: float
    line_h: float

    def indented(self, line: Line) -> bool:
        return line.box is not None and line.box[0] - self.left > 0.8 * self.line_h

    def short(self, line: Line) -> bool:
        return line.box is not None and self.right - line.box[2] > 2.0 * self.line_h

    def centred(self, line: Line) -> bool:
        return self.indented(line) and self.short(line) and line.box[0] - self.left > 2.0 * self.line_h


def geometry(lines: Sequence[Line]) -> Optional[Geometry]:
    """Text-block margins and line height from the boxes; None without boxes."""
    boxed = [l.box for l in lines if l.box is not None and l.box[3] > l.box[1]]
    if len(boxed) < 3 or len(boxed) < len(lines):
        return None
    widest = max(b[2] - b[0] for b in boxed)
    full = [b for b in boxed if b[2] - b[0] > 0.6 * widest] or boxed
    lefts, rights = sorted(b[0] for b in full), sorted(b[2] for b in full)
    return Geometry(left=lefts[len(lefts) // 5], right=rights[(4 * len(rights)) // 5],
                    line_h=statistics.median(b[3] - b[1] for b in boxed))


def _ends_paragraph(line: Line, geo: Optional[Geometry]) -> bool:
    return geo is not None and geo.short(line) and (bool(_SENTENCE_END.search(line.text)) or geo.centred(line))


def starts_paragraph(prev: Line, cur: Line, prev_geo: Optional[Geometry], cur_geo: Optional[Geometry],
                     same_page: bool) -> bool:
    if cur.text[:1].islower() and not _SENTENCE_END.search(prev.text):
        return False  # mid-sentence, whatever the layout says (a block boundary, a figure between)
    if same_page and cur.break_before:
        return True
    if cur_geo is not None and cur_geo.indented(cur):
        return True
    if _ends_paragraph(prev, prev_geo):
        return True
    if same_page and cur_geo is not None and prev.box and cur.box:
        return cur.box[1] - prev.box[3] > 1.0 * cur_geo.line_h
    return False


def reading_text(pages: Sequence[Sequence[Line]], vocab: Counter, lang: Optional[str]) -> tuple[str, list[int]]:
    """The body lines of every page as one text, and the offset where each page's text starts in it."""
    geos = [geometry(lines) for lines in pages]
    out: list[str] = []
    size = 0
    starts: list[int] = []
    prev: Optional[Line] = None
    prev_page = -1
    for p, lines in enumerate(pages):
        first = True
        for line in lines:
            text = join_spaced(line.text, vocab, lang)
            if prev is None:
                sep = ""
            else:
                hyphen = join_broken(prev.text, text, vocab, lang)
                if hyphen is not None:
                    out[-1] = out[-1][:-1]  # the hyphen (lines are stripped)
                    size -= 1
                    sep = hyphen
                elif starts_paragraph(prev, line, geos[prev_page], geos[p], prev_page == p):
                    sep = PARAGRAPH_SEP
                elif _DASH_END.search(prev.text):
                    sep = ""
                else:
                    sep = " "
            if sep:
                out.append(sep)
                size += len(sep)
            if first:
                starts.extend([size] * (p + 1 - len(starts)))
                first = False
            out.append(text)
            size += len(text)
            prev, prev_page = line, p
    starts.extend([size] * (len(pages) - len(starts)))
    return "".join(out), starts
