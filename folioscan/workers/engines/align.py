"""Place a text-only engine's words (a VLM's) on the page: align them to Tesseract's located words.

A pure function. In: the VLM's lines (text only) and Tesseract's lines of words with boxes. Out:
the VLM's words, in the VLM's order and spelling, each with how it was placed:

- `word`: matched to a Tesseract word (or to two, for a word Tesseract split, e.g. across a line
  break at a hyphen) and given that word's measured box;
- `line`: not matched (a different reading, a word Tesseract missed), but on a line that has
  matched words; it carries no box of its own, its line's box says where it is;
- `none`: nowhere to put it (a line Tesseract did not read at all, or no Tesseract words).

How: one global alignment (Needleman-Wunsch) over the two word sequences, scored by the
character similarity of the normalised words (NFKC, quotes, case, punctuation at the ends;
rapidfuzz's normalised Levenshtein similarity), with a linear gap penalty and one more move,
one VLM word against two adjacent Tesseract words (`exam-` / `ple` for `example`; `to-` `day`
for `to-day`). Each DP row is a few numpy operations (the left moves by a running maximum), so a
page of n x m words costs O(n m) in C, not in Python. A pair counts as a match at similarity
>= MATCH when a neighbouring pair matches too (or it is exact and long: `_supported`); an
aligned pair that does not is a misreading: it says which Tesseract line the VLM word belongs to,
not its box. A block the two engines read in different orders leaves one side's
copy unmatched by a monotone alignment: the words left over on both sides are aligned once more
(RESCUE_ROUNDS), and a rescued match is kept only inside a run of RESCUE_RUN consecutive matches,
so a stray "the" is never pulled across the page.

Lines: a VLM line is cut where its matched words move to another Tesseract line (a VLM that
writes a paragraph as one line gets the page's printed lines back). An unmatched word joins a
Tesseract line only where that is clear (`_fill_from_neighbours`); else it stays on a line of its
own, without a box. A line's box is the union of its
matched words' boxes, never anything else; a word Tesseract split over two lines becomes two
words, the first ending in the hyphen Tesseract saw, so the lines read as printed.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from folioscan.text.accuracy import PLAIN_FORMS

Box = tuple[int, int, int, int]

MATCH = 0.5  # least character similarity of a match (0..1)
GAP = -0.4  # score of a word left out on either side; a pair scores 2 * similarity - 1
RESCUE_ROUNDS = 2
RESCUE_RUN = 3
LONE_EXACT = 4  # an exact match with no matched neighbour is kept from this many characters
SHORT_RUN = 2  # unmatched words at most this many at a line's end still go with that line

WORD = "word"
LINE = "line"
NONE = "none"

_EDGES = re.compile(r"^\W+|\W+$")
HYPHENS = ("-", "\u00ac", "\u2010", "\u2011")


def normalise(word: str) -> str:
    """What two readings of one word share: NFKC (which also makes a long s an s), plain quotes and
    dashes as `folioscan eval` compares them, no case, no punctuation at the ends (a word that is only
    punctuation keeps it)."""
    w = unicodedata.normalize("NFKC", word).translate(PLAIN_FORMS).casefold()
    return _EDGES.sub("", w) or w


@dataclass(frozen=True)
class TessWord:
    text: str
    box: Box
    confidence: float
    line: int  # index of its Tesseract line


@dataclass
class Part:
    """A VLM word as written on one line: the whole word, or one side of a hyphen break."""

    text: str
    box: Optional[Box]  # Tesseract's measured box; None unless the word was matched
    tess: tuple[int, ...] = ()  # the Tesseract word(s) it was matched to


@dataclass
class Placed:
    """One word of the VLM's text (whitespace split, in order) and where it went."""

    text: str
    kind: str  # word | line | none
    vlm_line: int
    similarity: float = 0.0  # of the aligned Tesseract word(s); 0 when none was aligned
    parts: list[Part] = field(default_factory=list)
    line: int = -1  # the output line (Alignment.lines) its first part is on


@dataclass
class AlignedLine:
    text: str
    box: Optional[Box]  # union of its matched words' boxes; None when none matched
    vlm_line: int  # the VLM line it comes from (a VLM line may be cut into several)
    tess_line: Optional[int]  # the Tesseract line it lies on; None when unknown
    words: list[tuple[str, Optional[Box]]]  # (text, box or None)


@dataclass
class Alignment:
    words: list[Placed]
    lines: list[AlignedLine]

    def counts(self) -> dict[str, int]:
        out = {WORD: 0, LINE: 0, NONE: 0}
        for w in self.words:
            out[w.kind] += 1
        return out


def tess_words(lines) -> list[TessWord]:
    """Tesseract's words in reading order with their line's index (OcrLine-like objects)."""
    return [TessWord(w.text, tuple(w.box), w.confidence, k) for k, l in enumerate(lines) for w in l.words if w.text.strip()]


def _similarity(a: Sequence[str], b: Sequence[str]) -> np.ndarray:
    from rapidfuzz.distance import Levenshtein
    from rapidfuzz.process import cdist

    if not a or not b:
        return np.zeros((len(a), len(b)), np.float32)
    return cdist(a, b, scorer=Levenshtein.normalized_similarity, dtype=np.float32, workers=1)


def global_align(a: Sequence[str], b: Sequence[str]) -> list[tuple[int, tuple[int, ...], float]]:
    """Needleman-Wunsch over normalised words `a` (VLM) and `b` (Tesseract) with the 1:2 move:
    the aligned pairs (i, (j,) or (j, j+1), similarity), in order. Unaligned words are absent."""
    n, m = len(a), len(b)
    if not n or not m:
        return []
    s1 = _similarity(a, b)
    s2 = _similarity(a, [b[j] + b[j + 1] for j in range(m - 1)]) if m > 1 else np.zeros((n, 0), np.float32)
    # memory: the two similarity matrices (float32) and the pointers (int8), 9 bytes per word pair
    idx = np.arange(m + 1, dtype=np.float64)
    prev = GAP * idx
    ptr = np.zeros((n + 1, m + 1), np.int8)  # 0 diagonal, 1 up (a left out), 2 left (b left out), 3 a against two b
    ptr[0, 1:] = 2
    for i in range(1, n + 1):
        t = np.full(m + 1, -np.inf)
        t[0] = GAP * i
        diag = prev[:-1] + (2.0 * s1[i - 1] - 1.0)
        up = prev[1:] + GAP
        t[1:] = np.maximum(diag, up)
        p = np.zeros(m + 1, np.int8)
        p[0] = 1
        p[1:] = np.where(diag >= up, 0, 1)
        if m > 1:
            two = prev[:-2] + (2.0 * s2[i - 1] - 1.0)
            better = two > t[2:]
            t[2:] = np.where(better, two, t[2:])
            p[2:] = np.where(better, 3, p[2:])
        row = np.maximum.accumulate(t - GAP * idx) + GAP * idx  # a left move from any earlier column
        left = row > t + 1e-9
        p[left] = 2
        ptr[i] = p
        prev = row
    pairs = []
    i, j = n, m
    while i > 0 or j > 0:
        move = ptr[i, j] if i > 0 else 2
        if move == 0:
            pairs.append((i - 1, (j - 1,), float(s1[i - 1, j - 1])))
            i, j = i - 1, j - 1
        elif move == 3:
            pairs.append((i - 1, (j - 2, j - 1), float(s2[i - 1, j - 2])))
            i, j = i - 1, j - 2
        elif move == 1:
            i -= 1
        else:
            j -= 1
    return pairs[::-1]


def _supported(i: int, matched: dict, a: Sequence[str]) -> bool:
    """A match is kept when a neighbouring VLM word is matched to the neighbouring Tesseract word
    too, or when it is exact and at least LONE_EXACT characters long. Where Tesseract read noise (a
    page upside down, a faint scan), short words match a few letters of the noise by chance; alone,
    such a match would put a whole line on a wrong box."""
    js = matched[i][0]
    before, after = matched.get(i - 1), matched.get(i + 1)
    if (before and before[0][-1] + 1 == js[0]) or (after and js[-1] + 1 == after[0][0]):
        return True
    return matched[i][1] >= 1.0 and len(a[i]) >= LONE_EXACT


def _runs_only(pairs, a_ids, b_ids, run: int):
    """Matched pairs that sit in a run of at least `run` pairs consecutive on both sides."""
    good = [(a_ids[i], tuple(b_ids[j] for j in js), s) for i, js, s in pairs if s >= MATCH]
    keep, start = [], 0
    for k in range(1, len(good) + 1):
        if k == len(good) or good[k][0] != good[k - 1][0] + 1 or good[k][1][0] != good[k - 1][1][-1] + 1:
            if k - start >= run:
                keep += good[start:k]
            start = k
    return keep


def align(vlm_lines: Sequence[str], tess: Sequence[TessWord]) -> Alignment:
    """The VLM's words placed on Tesseract's; see the module's docstring."""
    words: list[Placed] = []
    for li, line in enumerate(vlm_lines):
        words += [Placed(t, NONE, li) for t in line.split()]
    a = [normalise(w.text) for w in words]
    b = [normalise(t.text) for t in tess]
    matched: dict[int, tuple[tuple[int, ...], float]] = {}
    aligned: dict[int, tuple[int, ...]] = {}  # every aligned pair, matches and misreadings
    for i, js, s in global_align(a, b):
        aligned[i] = js
        if s >= MATCH:
            matched[i] = (js, s)
    matched = {i: m for i, m in matched.items() if _supported(i, matched, a)}
    for _ in range(RESCUE_ROUNDS):
        used = {j for js, _ in matched.values() for j in js}
        a_ids = [i for i in range(len(a)) if i not in matched]
        b_ids = [j for j in range(len(b)) if j not in used]
        if len(a_ids) < RESCUE_RUN or len(b_ids) < RESCUE_RUN:
            break
        found = _runs_only(global_align([a[i] for i in a_ids], [b[j] for j in b_ids]), a_ids, b_ids, RESCUE_RUN)
        if not found:
            break
        for i, js, s in found:
            matched[i] = (js, s)
            aligned[i] = js
    # where each word lies: its matched word's line, else its aligned word's, else a neighbour's in its VLM line
    anchor: list[Optional[int]] = [None] * len(words)
    for i, js in aligned.items():
        anchor[i] = tess[js[0]].line
    for i, (js, _) in matched.items():
        anchor[i] = tess[js[0]].line
    # a VLM line none of whose words matched is not placed at all: misaligned pairs alone (noise,
    # another reading) must not cut it at Tesseract's line breaks; it stays whole, without a box
    placed_lines = {words[i].vlm_line for i in matched}
    anchor = [k if words[i].vlm_line in placed_lines else None for i, k in enumerate(anchor)]
    _fill_from_neighbours(words, anchor)
    for i, w in enumerate(words):
        if i in matched:
            js, s = matched[i]
            w.kind, w.similarity = WORD, s
            w.parts = _parts(w.text, [tess[j] for j in js], js)
        else:
            w.similarity = 0.0
            w.parts = [Part(w.text, None)]
    lines, where = _lines(words, anchor, tess)
    for w, k in zip(words, where):  # a word not matched: `line` when its line has a box, else `none`
        w.line = k
        if w.kind != WORD:
            w.kind = LINE if lines[k].box is not None else NONE
    return Alignment(words, lines)


def _fill_from_neighbours(words: list[Placed], anchor: list[Optional[int]]) -> None:
    """Unanchored words (read by the VLM only) take a line only where it is clear: between two
    anchored words of the same Tesseract line; or, at most SHORT_RUN of them, after the last
    anchored word of a line (or before the first of one). A longer run between two lines, or at a
    VLM line's ends, is text Tesseract did not read: it stays unanchored (its own line, no box)."""
    start = 0
    while start < len(words):
        end = start
        while end < len(words) and words[end].vlm_line == words[start].vlm_line:
            end += 1
        known = [k for k in range(start, end) if anchor[k] is not None]
        if known:
            for k in range(start, known[0]):  # before the first anchored word
                anchor[k] = anchor[known[0]] if known[0] - start <= SHORT_RUN else None
            for k in range(known[-1] + 1, end):  # after the last
                anchor[k] = anchor[known[-1]] if end - known[-1] - 1 <= SHORT_RUN else None
            for p, q in zip(known, known[1:]):
                if q - p > 1 and (anchor[p] == anchor[q] or q - p - 1 <= SHORT_RUN):
                    for k in range(p + 1, q):
                        anchor[k] = anchor[p]
        start = end


def _parts(text: str, matched: list[TessWord], js: tuple[int, ...]) -> list[Part]:
    """The VLM word as written: one part with its Tesseract box (the union of two words on one
    line), or two parts, split where the word best matches the two Tesseract words, when Tesseract
    read it across a line break."""
    if len(matched) == 1:
        return [Part(text, matched[0].box, js)]
    first, second = matched
    if first.line == second.line:
        return [Part(text, _union([first.box, second.box]), js)]
    hyphen = first.text[-1] if first.text.endswith(HYPHENS) else ""
    k = _split_point(text, normalise(first.text), normalise(second.text))
    return [Part(text[:k] + hyphen, first.box, js[:1]), Part(text[k:], second.box, js[1:])]


def _split_point(text: str, left: str, right: str) -> int:
    from rapidfuzz.distance import Levenshtein

    if len(text) < 2:
        return len(text)
    return max(range(1, len(text)), key=lambda k: Levenshtein.normalized_similarity(normalise(text[:k]), left)
               + Levenshtein.normalized_similarity(normalise(text[k:]), right))


def _union(boxes) -> Optional[Box]:
    found = [b for b in boxes if b]
    if not found:
        return None
    return min(b[0] for b in found), min(b[1] for b in found), max(b[2] for b in found), max(b[3] for b in found)


def _lines(words: list[Placed], anchor: list[Optional[int]], tess: Sequence[TessWord]):
    """The output lines, each VLM line cut where its words move to another Tesseract line (a hyphen
    split puts the word's second part on the next line), and the output line of each word (of its
    first part)."""
    out: list[AlignedLine] = []
    where: list[int] = []
    current: Optional[AlignedLine] = None
    for i, w in enumerate(words):
        for p, part in enumerate(w.parts):
            line = tess[part.tess[0]].line if part.tess else anchor[i]
            if current is None or current.vlm_line != w.vlm_line or current.tess_line != line:
                current = AlignedLine("", None, w.vlm_line, line, [])
                out.append(current)
            if p == 0:
                where.append(len(out) - 1)
            current.words.append((part.text, part.box))
    for line in out:
        line.text = " ".join(t for t, _ in line.words)
        line.box = _union(b for _, b in line.words)
    return out, where
