"""Ground truth per page, as `folioscan eval` and the `truth` test engine read it (docs/eval.md).

Two forms: a folder `TRUTH/<book>/<page>.txt|.xml` (book = the source's name without `.pdf`, see
`records.book_stem`; page 1-based, `12-left` for half a spread), or a CSV with a book column (`pdf`,
`source` or `book`, the first present; a file name, path or URI, `.pdf` optional), a page column
(`page`, 1-based, or `page_index`, 0-based), a truth column (`truth` or `gt`, relative to the CSV)
and optionally `side`. A truth file is plain text, ALTO (`String CONTENT`, a hyphenated line end's
`SUBS_CONTENT` taken once for the whole word) or PAGE-XML (`TextLine/TextEquiv/Unicode`).
"""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from typing import Optional

from folioscan.records import book_stem

_PAGE_FILE = re.compile(r"^0*(\d+)(?:-(left|right))?\.(txt|xml)$", re.IGNORECASE)


class TruthError(ValueError):
    """The ground truth cannot be read as documented (exit 2)."""


@dataclass(frozen=True)
class Key:
    book: str  # the source's stem: file name without .pdf, or the folder name
    page_index: int  # 0-based, as in the pages table
    side: Optional[str] = None  # left / right for a split spread's half; None for a whole page


def read_truth_file(path: str) -> str:
    raw = open(path, "rb").read()
    if not path.lower().endswith(".xml"):
        return raw.decode("utf-8")
    from lxml import etree

    try:
        root = etree.fromstring(raw)
    except etree.XMLSyntaxError as e:
        raise TruthError(f"{path}: not well-formed XML: {e}") from None
    local = lambda el: etree.QName(el).localname  # noqa: E731
    lines = []
    for line in (el for el in root.iter() if isinstance(el.tag, str) and local(el) == "TextLine"):
        strings = []
        for s in (s for s in line.iter() if isinstance(s.tag, str) and local(s) == "String"):
            if s.get("SUBS_TYPE") == "HypPart2":
                continue  # the second half of a hyphenated word: HypPart1's SUBS_CONTENT wrote it whole
            strings.append(s.get("SUBS_CONTENT") if s.get("SUBS_TYPE") == "HypPart1" and s.get("SUBS_CONTENT") else s.get("CONTENT", ""))
        if strings:  # ALTO
            lines.append(" ".join(strings))
            continue
        # PAGE-XML: the line's own TextEquiv (not its words'), first Unicode
        equivs = [c for c in line if isinstance(c.tag, str) and local(c) == "TextEquiv"]
        uni = [u for e in equivs[:1] for u in e if isinstance(u.tag, str) and local(u) == "Unicode"]
        if uni:
            lines.append(uni[0].text or "")
    if not lines:
        raise TruthError(f"{path}: neither ALTO String elements nor PAGE-XML TextLine/TextEquiv found")
    return "\n".join(lines)


def load_truth(truth: str) -> dict[Key, str]:
    if os.path.isfile(truth) and truth.lower().endswith(".csv"):
        return _truth_from_csv(truth)
    if not os.path.isdir(truth):
        raise TruthError(f"{truth}: no such folder or CSV file of ground truth")
    out: dict[Key, str] = {}
    for book in sorted(os.listdir(truth)):
        folder = os.path.join(truth, book)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            m = _PAGE_FILE.match(name)
            if m:
                out[Key(book, int(m.group(1)) - 1, m.group(2) and m.group(2).lower())] = read_truth_file(os.path.join(folder, name))
    if not out:
        raise TruthError(f"{truth}: no ground truth found (expected TRUTH/<book>/<page>.txt, see `folioscan eval --help`)")
    return out


def _truth_from_csv(path: str) -> dict[Key, str]:
    rows = list(csv.DictReader(open(path, newline="", encoding="utf-8")))
    if not rows:
        raise TruthError(f"{path}: no rows")
    cols = set(rows[0])
    book_col = next((c for c in ("pdf", "source", "book") if c in cols), None)  # the most precise name first
    page_col = next((c for c in ("page", "page_index") if c in cols), None)
    file_col = next((c for c in ("truth", "gt") if c in cols), None)
    if not (book_col and page_col and file_col):
        raise TruthError(f"{path}: needs a book column (book, source or pdf), a page column (page or page_index) "
                         f"and a truth column (truth or gt); it has {', '.join(sorted(cols))}")
    base = os.path.dirname(os.path.abspath(path))
    out = {}
    for i, r in enumerate(rows, 2):
        try:
            page = int(r[page_col])
        except ValueError:
            raise TruthError(f"{path}:{i}: {page_col} {r[page_col]!r} is not a number") from None
        index = page - 1 if page_col == "page" else page
        side = (r.get("side") or "").strip().lower() or None
        file = os.path.join(base, r[file_col])
        if not os.path.isfile(file):
            raise TruthError(f"{path}:{i}: truth file {r[file_col]} not found")
        out[Key(book_stem(r[book_col]), index, side)] = read_truth_file(file)
    return out


