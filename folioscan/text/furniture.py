"""Page furniture found across a book: running headers and footers, printed page numbers.

A running header is a top line that comes back, with small differences (OCR noise, the page
number masked out), on nearby pages: within `window` pages either side, so that headers
alternating between even and odd pages (book title / chapter title) match their own side,
and a chapter title that changes mid-book matches the pages of its chapter. Footers are the
same at the bottom. A header that carries a page number only matches headers that carry one
too, so a section title ("PREFACE") is not taken for the running header "vi PREFACE".

Also furniture, without repetition: a bare page number at the top or bottom ("12", "( 3 )",
"- 12 -", "xiv"); a short capitalised line whose page number fits its neighbours' ("HATE 3"
between "2 THE CHILD OF THE MOAT" and "4 THE CHILD OF THE MOAT"); a printer's signature mark
at the bottom ("B", "C 2", "VOL. I. 3"); a speck read as a character or two at either edge.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional, Sequence

from folioscan.text.page import TextPage

METHODS = ("rapidfuzz", "minhash")
WINDOW = 4  # pages either side
CANDIDATES = 2  # lines at the top (and at the bottom) that may be furniture
RAPIDFUZZ_MIN = 80.0  # rapidfuzz ratio, 0..100
MINHASH_MIN = 0.5  # estimated Jaccard similarity of character 3-grams
# below a line already taken for furniture (a page number over a chapter title), a repeat must be
# near-exact: titles that begin alike ("THE ARMENIAN MASSACRES AND ...") are not running headers
RAPIDFUZZ_STRICT, MINHASH_STRICT = 92.0, 0.8
NUMBER_STEP = 8  # a neighbour's page number may differ by up to this much per page of distance

# page numbers in roman run to a few hundred at most: no d or m ("D" is a signature mark, "MIX" a word)
_ROMAN = re.compile(r"(?=[clxvi])c{0,3}(?:xc|xl|l?x{0,3})(?:ix|iv|v?i{0,3})$", re.I)
_DIGITISH = re.compile(r"^[0-9IlOo]{1,4}$")  # "I4" is 14 misread
_OPEN = _CLOSE = r"[^\w]*"  # "( 3 )", "- 12 -", "[xiv]", "© 23"
_BARE = re.compile(rf"^{_OPEN}(\w{{1,8}}){_CLOSE}$")
_LEADING = re.compile(rf"^{_OPEN}(\w{{1,8}})[.,:;)\]]?\s+(.*\S)\s*$")  # number, rest
_TRAILING = re.compile(rf"^(.*?\w.*?)[\s.,:;]+[(\[]?(\w{{1,8}}){_CLOSE}$")  # rest, number
_SIGNATURE = re.compile(r"^(?:[A-Z]{1,2}\s?\d?|(?:vol|no)\.?\s*[ivxl1]+[.,]?\s*\w{0,3})\.?$", re.I)
_HEADING = re.compile(r"^(?:chapter|chap|part|book|section|canto|letter|act|scene|appendix)$")


def page_number(token: str) -> Optional[str]:
    """The token as a page number ("35", "xiv"), with the commonest misreadings undone; None if it is not one."""
    if token.isdigit():
        return token if len(token) <= 4 and not token.startswith("0") else None
    if _DIGITISH.match(token) and any(c.isdigit() for c in token):
        return token.translate(str.maketrans("IlOo", "1100"))
    if len(token) <= 8 and token.isalpha():
        for cand in (token, token.replace("l", "i").replace("L", "I")):
            if _ROMAN.match(cand) and (cand.islower() or (cand.isupper() and len(cand) > 1)):
                return cand
    return None


def bare_number(text: str) -> Optional[str]:
    m = _BARE.match(text.strip())
    return page_number(m.group(1)) if m else None


def edge_number(text: str) -> Optional[str]:
    """A page number at either end of a header line ("35 COLONIAL FLORIDA", "CONTENTS. vii")."""
    return _split_edge(text)[0]


def _split_edge(text: str) -> tuple[Optional[str], str]:
    """(page number, rest of the line) of a line with a page number at one end; (None, line) otherwise."""
    text = text.strip()
    m = _TRAILING.match(text)
    if m and page_number(m.group(2)):
        return page_number(m.group(2)), m.group(1)
    m = _LEADING.match(text)
    if m and page_number(m.group(1)):
        return page_number(m.group(1)), m.group(2)
    return None, text


def number_value(label: Optional[str]) -> Optional[tuple[str, int]]:
    """("arabic" | "roman", value) of a page-number label."""
    if not label:
        return None
    if label.isdigit():
        return "arabic", int(label)
    values = {"i": 1, "v": 5, "x": 10, "l": 50, "c": 100, "d": 500, "m": 1000}
    digits = [values[c] for c in label.lower()]
    return "roman", sum(-d if i + 1 < len(digits) and d < digits[i + 1] else d for i, d in enumerate(digits))


def numbers_consistent(labels: Sequence[Optional[str]]) -> Optional[bool]:
    """Roman numbers rise, then arabic numbers rise (each strictly); None with fewer than two numbers."""
    values = [v for v in map(number_value, labels) if v]
    if len(values) < 2:
        return None
    order = {"roman": 0, "arabic": 1}
    return all((order[a[0]], a[1]) < (order[b[0]], b[1]) for a, b in zip(values, values[1:]))


def masked(text: str) -> str:
    """Text for matching: the edge page number, digits and punctuation out, lower case, spaces collapsed."""
    text = _split_edge(text)[1]
    return " ".join(re.sub(r"[\d\W_]+", " ", text.lower()).split())


def _speck(text: str) -> bool:
    return sum(c.isalnum() for c in text) <= 2 and bare_number(text) is None


def _edges(page: TextPage) -> tuple[list[int], list[int]]:
    """Indices of the top and the bottom candidate lines (by box position where there are boxes)."""
    n = len(page.lines)
    if n == 0:
        return [], []
    if page.has_boxes:
        by_top = sorted(range(n), key=lambda i: page.lines[i].box[1])
        by_bottom = sorted(range(n), key=lambda i: -page.lines[i].box[3])
    else:
        by_top, by_bottom = list(range(n)), list(range(n - 1, -1, -1))
    k = min(CANDIDATES, max(1, n // 2))
    return by_top[:k], (by_bottom[:k] if n > 1 else [])


@dataclass
class Furniture:
    """What was found on one page: indices into the page's lines, top-down and bottom-up."""

    header: list[int] = field(default_factory=list)
    footer: list[int] = field(default_factory=list)
    number: Optional[str] = None  # the printed page number as printed ("35", "xiv")

    @property
    def removed(self) -> set[int]:
        return set(self.header) | set(self.footer)


class _Matcher:
    def __init__(self, method: str):
        if method not in METHODS:
            raise ValueError(f"unknown matching method {method!r}; choose from {METHODS}")
        self.method = method
        self._sketches: dict[str, object] = {}

    def _minhash(self, text: str):
        if text not in self._sketches:
            from datasketch import MinHash

            m = MinHash(num_perm=64, seed=1)
            for i in range(max(1, len(text) - 2)):
                m.update(text[i:i + 3].encode())
            self._sketches[text] = m
        return self._sketches[text]

    def same(self, a: str, b: str, strict: bool = False) -> bool:
        if self.method == "rapidfuzz":
            from rapidfuzz import fuzz

            return fuzz.ratio(a, b) >= (RAPIDFUZZ_STRICT if strict else RAPIDFUZZ_MIN)
        return self._minhash(a).jaccard(self._minhash(b)) >= (MINHASH_STRICT if strict else MINHASH_MIN)


@dataclass
class _Candidate:
    index: int
    text: str
    key: str
    number: Optional[str]  # a bare page number, or one at an edge of the line
    bare: bool


def _candidates(page: TextPage, indices: list[int]) -> list[_Candidate]:
    out = []
    for i in indices:
        text = page.lines[i].text
        bare = bare_number(text)
        out.append(_Candidate(i, text, masked(text), bare or edge_number(text), bare is not None))
    return out


def _fits(number: str, n: int, neighbours: list[tuple[int, str]]) -> bool:
    """An arabic page number that rises with the page order of its neighbours' numbers."""
    v = number_value(number)
    if not v or v[0] != "arabic":
        return False
    for m, other in neighbours:
        w = number_value(other)
        if w and w[0] == "arabic" and m != n and 0 < (v[1] - w[1]) / (n - m) <= NUMBER_STEP:
            return True
    return False


def _read_ones_as_digits(found: list[Furniture], window: int) -> None:
    """A page number "II" among arabic ones is 11 misread."""
    for n, f in enumerate(found):
        if f.number and set(f.number) <= {"I", "l"}:
            near = [g.number for g in found[max(0, n - window):n + window + 1] if g.number and g is not f]
            if near and all(x.isdigit() for x in near):
                f.number = f.number.translate(str.maketrans("Il", "11"))


def find_furniture(pages: Sequence[TextPage], method: str = "rapidfuzz", window: int = WINDOW) -> list[Furniture]:
    match = _Matcher(method)
    edges = [_edges(p) if p.ok else ([], []) for p in pages]
    cands = [(_candidates(p, top), _candidates(p, bottom)) for p, (top, bottom) in zip(pages, edges)]

    def repeated(n: int, side: int, c: _Candidate, strict: bool) -> bool:
        if len(c.key) < 3 or _HEADING.match(c.key):
            return False
        return any(match.same(c.key, o.key, strict)
                   for m in range(max(0, n - window), min(len(pages), n + window + 1)) if m != n
                   for o in cands[m][side] if len(o.key) >= 3 and (o.number is None) == (c.number is None))

    found = [Furniture() for _ in pages]
    for n in range(len(pages)):  # first pass: repetition, bare numbers, specks, signature marks
        for side, sink in ((0, found[n].header), (1, found[n].footer)):
            for depth, c in enumerate(cands[n][side]):
                mark = _speck(c.text) or (side == 1 and bool(_SIGNATURE.match(c.text)))
                if c.bare and not mark and found[n].number and sink:
                    break  # one page number per edge: a second bare number is the text's ("1863.")
                if not (c.bare or mark or repeated(n, side, c, strict=depth > 0)):
                    break  # furniture is contiguous from the edge
                sink.append(c.index)
                if c.number and (c.bare or not mark):
                    found[n].number = found[n].number or c.number
    _read_ones_as_digits(found, window)
    # second pass: a capitalised line whose arabic page number fits its neighbours' (found or also pending)
    pending = {}
    for n in range(len(pages)):
        for side, sink in ((0, found[n].header), (1, found[n].footer)):
            if len(sink) < len(cands[n][side]):
                c = cands[n][side][len(sink)]
                letters = [ch for ch in c.text if ch.isalpha()]
                if (c.number and not c.bare and len(c.text) <= 70 and letters and not _HEADING.match(c.key)
                        and sum(ch.isupper() for ch in letters) >= 0.6 * len(letters)):
                    pending[(n, side)] = c
    numbered = [(n, f.number) for n, f in enumerate(found) if f.number]
    numbered += [(n, c.number) for (n, _), c in pending.items() if not found[n].number]
    for (n, side), c in pending.items():
        near = [(m, v) for m, v in numbered if 0 < abs(m - n) <= window]
        if _fits(c.number, n, near):
            (found[n].header if side == 0 else found[n].footer).append(c.index)
            found[n].number = found[n].number or c.number
    return found
