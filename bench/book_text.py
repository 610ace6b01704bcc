"""Book text benchmark on ../shared/eval/old_books: clean reading text vs the naive page concatenation.

OCRs the 178 pages once with Tesseract (`folioscan run`, in-process executor) and caches the
`pages` table in bench/results/ocr-tesseract/ (gitignored); later runs only redo the text.
Per book it prints the CER of the clean `documents.text` and of the naive page concatenation
against the ground truth's body text, running-header lines and bare page numbers left,
hyphen breaks left, and word recall. Prints one JSON object.

The ground truth transcribes each page whole, running header, page number and printer's
signature mark included, so the reference body text is the ground truth minus those lines
(`reference_furniture`: exact repetition across the book's clean pages, bare numbers,
signature marks); CER against the ground truth as it is is reported too.

    python bench/book_text.py            # first run: OCR (~3-4 min on 2 cores)
    python bench/book_text.py [--method rapidfuzz minhash] [--books a b] [--show-furniture]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict

import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from evalset import OLD_BOOKS, cer, manifest, normalize  # noqa: E402

from folioscan.text.book import book_text  # noqa: E402
from folioscan.text.furniture import _SIGNATURE, bare_number, edge_number, masked  # noqa: E402
from folioscan.text.page import TextPage  # noqa: E402

CACHE = os.path.join(os.path.dirname(__file__), "results", "ocr-tesseract")


def ocr_pages() -> list[dict]:
    if not os.path.isdir(os.path.join(CACHE, "documents")):
        src = tempfile.mkdtemp(prefix="bench-src-")
        for pdf in sorted({r["pdf"] for r in manifest()}):
            os.symlink(os.path.join(os.path.abspath(OLD_BOOKS), pdf), os.path.join(src, os.path.basename(pdf)))
        cmd = [sys.executable, "-m", "folioscan", "run", src, CACHE, "--executor", "local", "--quiet"]
        if subprocess.run(cmd).returncode not in (0, 1):
            raise SystemExit("OCR run failed")
    return pq.read_table(os.path.join(CACHE, "pages")).to_pylist()


def _capitalised(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and sum(c.isupper() for c in letters) >= 0.6 * len(letters)


def reference_furniture(gt_pages: list[str]) -> list[list[str]]:
    """Lines of each ground-truth page that are page furniture: a first line that is a bare number, a
    capitalised line with a page number, or repeated exactly (number masked) as another page's first line
    with the same number-or-not; a last line that is a bare number or a printer's signature mark."""
    lines = [[l.strip() for l in t.splitlines() if l.strip()] for t in gt_pages]
    firsts = [(masked(ls[0]), bool(edge_number(ls[0]))) if ls else ("", False) for ls in lines]
    out = []
    for n, ls in enumerate(lines):
        found = []
        if ls:
            first, key = ls[0], firsts[n]
            numbered = edge_number(first) and _capitalised(first)
            repeated = len(key[0]) >= 3 and sum(k == key for k in firsts) > 1
            heading = re.match(r"(chapter|part)\b", key[0])
            if bare_number(first) or ((numbered or repeated) and not heading):
                found.append(first)
        if len(ls) > 1 and (bare_number(ls[-1]) or _SIGNATURE.match(ls[-1])):
            found.append(ls[-1])
        out.append(found)
    return out


def _body(gt: str, furniture: list[str]) -> str:
    lines = [l for l in gt.splitlines()]
    for f in furniture:
        idx = next(i for i, l in enumerate(lines) if l.strip() == f)
        del lines[idx]
    return "\n".join(lines)


def _join_pages(bodies: list[str]) -> str:
    """Ground-truth pages as one text: a page ending mid-sentence runs on into the next page's paragraph."""
    out = ""
    for b in (b.strip() for b in bodies):
        if out and b and re.search(r"\w-$", out) and b[:1].isalpha():
            out = out[:-1]  # a word broken over the page, joined as normalize() joins a line-end hyphen
        elif out and b:
            out += " " if not re.search(r"[.!?:\"'\u201d\u2019)]$", out) else "\n"
        out += b
    return out


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", normalize(text).lower())


def _recall(pred: str, ref: str) -> float:
    r, p = Counter(_words(ref)), Counter(_words(pred))
    return sum(min(n, p[w]) for w, n in r.items()) / max(1, sum(r.values()))


def furniture_left(text: str, spans: list[int], furniture: list[list[str]]) -> tuple[int, int]:
    """(header lines, bare page numbers) of the reference furniture still found at the start or end of
    their own page's stretch of `text` (from `spans`, where each page starts)."""
    from rapidfuzz import fuzz

    ends = list(spans[1:]) + [len(text)]
    headers = numbers = 0
    for start, end, lines in zip(spans, ends, furniture):
        edges = [text[start:end][:150], text[start:end][-150:]]  # case kept: "THE BOY ..." is furniture, "The Boy ..." prose
        for line in lines:
            number = bare_number(line)
            if number:
                tokens = [t.lower() for t in re.findall(r"\w+", edges[0])[:3] + re.findall(r"\w+", edges[1])[-3:]]
                numbers += number.lower() in tokens
            elif len(masked(line)) >= 3:
                headers += any(fuzz.partial_ratio(line, e) >= 90 for e in edges)
    return headers, numbers


def paragraph_breaks(clean: str, ref_body: str) -> dict:
    """Precision and recall of the clean text's paragraph breaks against the ground truth's line breaks,
    over the words the two texts share (aligned with difflib)."""
    import difflib

    def tokens(text, sep):
        words, ends = [], []
        for para in re.split(sep, text):
            ws = _words(para)
            words += ws
            ends += [False] * (len(ws) - 1) + [True] if ws else []
        return words, ends

    cw, ce = tokens(clean, r"\n\s*\n")
    rw, re_ = tokens(ref_body, r"\n")
    tp = fp = fn = 0
    for block in difflib.SequenceMatcher(None, cw, rw, autojunk=False).get_matching_blocks():
        for k in range(block.size - 1):  # the last word of a block may be followed by anything
            a, b = ce[block.a + k], re_[block.b + k]
            tp, fp, fn = tp + (a and b), fp + (a and not b), fn + (b and not a)
    return {"precision": round(tp / max(1, tp + fp), 3), "recall": round(tp / max(1, tp + fn), 3)}


def furniture_found(result, furniture: list[list[str]]) -> dict:
    """Removed lines against the reference furniture lines, page by page."""
    from rapidfuzz import fuzz

    found = missed = body_removed = 0
    for page, ref in zip(result.pages, furniture):
        removed = [l for part in (page.header, page.footer) if part for l in part.split("\n")]
        same = lambda a, b: (bare_number(a) and bare_number(b)) or fuzz.ratio(a.lower(), b.lower()) >= 70
        hit = [any(same(r, x) for x in removed) for r in ref]
        found, missed = found + sum(hit), missed + hit.count(False)
        body_removed += sum(1 for x in removed if sum(c.isalnum() for c in x) >= 4 and not any(same(r, x) for r in ref))
    return {"furniture_removed": found, "furniture_missed": missed, "body_lines_removed": body_removed}


_HYPHEN_BREAK = re.compile(r"[^\W\d_]-\s+[^\W\d_]")


def score_book(book: str, pages: list[dict], gt: list[str], method: str) -> dict:
    records = [TextPage.from_engine(p["text"], p["lines"], p["confidence"], ok=p["status"] == "ok",
                                    width=p["width"] or 0, height=p["height"] or 0) for p in pages]
    book_text(records[:3], method=method)  # loads the word list, language model, MinHash: once per process
    t0 = time.perf_counter()
    result = book_text(records, method=method)
    ms = (time.perf_counter() - t0) * 1000
    naive = "\f".join(p["text"] or "" for p in pages)  # what documents.text held before
    furniture = reference_furniture(gt)
    ref_body = _join_pages([_body(t, f) for t, f in zip(gt, furniture)])
    ref_full = "\n".join(gt)
    h_clean, n_clean = furniture_left(result.text, result.page_spans, furniture)
    naive_spans = [0]
    for p in pages[:-1]:
        naive_spans.append(naive_spans[-1] + len(p["text"] or "") + 1)
    h_naive, n_naive = furniture_left(naive, naive_spans, furniture)
    return {
        "pages": len(pages), "ms_warm": round(ms, 1),
        "cer_clean": round(cer(result.text, ref_body), 4), "cer_naive": round(cer(naive, ref_body), 4),
        "cer_clean_vs_gt_as_is": round(cer(result.text, ref_full), 4), "cer_naive_vs_gt_as_is": round(cer(naive, ref_full), 4),
        "reference_furniture_lines": sum(map(len, furniture)),
        "header_lines_left": h_clean, "header_lines_naive": h_naive,
        "page_numbers_left": n_clean, "page_numbers_naive": n_naive,
        "hyphen_breaks_left": len(_HYPHEN_BREAK.findall(result.text)),
        "hyphen_breaks_naive": len(re.findall(r"[^\W\d_]-\n\s*[^\W\d_]", naive)),
        "word_recall_clean": round(_recall(result.text, ref_body), 4), "word_recall_naive": round(_recall(naive, ref_body), 4),
        **furniture_found(result, furniture),
        "paragraph_breaks": paragraph_breaks(result.text, ref_body),
        "page_numbers_consistent": result.page_numbers_consistent,
        "language": result.signals.language, "ocr_quality": result.signals.ocr_quality,
    }


def _page_pairs(by_book, rows):
    for r in rows:
        page = next((p for p in by_book[r["book"]] if p["page_index"] == r["page_index"]), None)
        if page is not None:
            yield page, r


def compare_detectors(by_book, rows) -> dict:
    """Both offline language detectors on every eval page, OCR text and ground truth (all books are English)."""
    from folioscan.text.signals import DETECTORS, language

    out = {}
    for det in DETECTORS:
        language("warm up the model here", det)
        t0, ocr_en, gt_en, n = time.perf_counter(), 0, 0, 0
        for page, r in _page_pairs(by_book, rows):
            ocr_en += language(page["text"] or "", det)[0] == "en"
            gt_en += language(r["truth"], det)[0] == "en"
            n += 1
        out[det] = {"pages": n, "ocr_text_en": ocr_en, "ground_truth_en": gt_en,
                    "ms_per_page": round((time.perf_counter() - t0) * 1000 / max(1, 2 * n), 2)}
    return out


def signals_vs_cer(by_book, rows) -> dict:
    """Pearson correlation with the page CER (raw page text vs its ground truth) of each page signal."""
    import statistics

    from folioscan.text.signals import signals

    cols: dict[str, list] = defaultdict(list)
    for page, r in _page_pairs(by_book, rows):
        if page["status"] != "ok" or page["confidence"] is None:
            continue
        s = signals(page["text"] or "", page["confidence"], lang="en")
        cols["cer"].append(cer(page["text"] or "", r["truth"]))
        for k in ("confidence", "lexicon_fraction", "ocr_quality"):
            cols[k].append(getattr(s, k))
    return {"pages": len(cols["cer"]), **{f"pearson_{k}": round(statistics.correlation(cols[k], cols["cer"]), 3)
                                          for k in ("confidence", "lexicon_fraction", "ocr_quality")}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", nargs="+", default=["rapidfuzz", "minhash"])
    ap.add_argument("--books", nargs="+")
    ap.add_argument("--show-furniture", action="store_true", help="print the reference furniture lines and exit")
    args = ap.parse_args()
    rows = [r for r in manifest() if not args.books or r["book"] in args.books]
    gt: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        gt[r["book"]].append(r["truth"])
    if args.show_furniture:
        for book, texts in gt.items():
            for name, f in zip([r["page_name"] for r in rows if r["book"] == book], reference_furniture(texts)):
                print(name, f)
        return
    by_book: dict[str, list[dict]] = defaultdict(list)
    for p in ocr_pages():
        by_book[os.path.basename(p["source_uri"])[5]].append(p)
    report = {"benchmark": "book_text", "eval": "old_books", "engine": "tesseract", "methods": {}}
    for method in args.method:
        books = {}
        for book in sorted(gt):
            pages = sorted(by_book[book], key=lambda p: (p["page_index"], p["side"] or ""))
            books[book] = score_book(book, pages, gt[book], method)
        report["methods"][method] = {
            "books": books,
            "clean_beats_naive_on_every_book": all(b["cer_clean"] < b["cer_naive"] for b in books.values()),
            "totals": {k: sum(b[k] for b in books.values()) for k in
                       ("reference_furniture_lines", "furniture_removed", "furniture_missed", "body_lines_removed",
                        "header_lines_left", "header_lines_naive", "page_numbers_left", "page_numbers_naive",
                        "hyphen_breaks_left", "hyphen_breaks_naive")},
        }
    report["language_detectors"] = compare_detectors(by_book, rows)
    report["signals_vs_page_cer"] = signals_vs_cer(by_book, rows)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
