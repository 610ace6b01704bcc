"""Turn a shard's books into `pages` and `documents` rows, checking that no page is missing.

In the driver the results never stay: an executor hands each book's results over as they come
(pipeline/pagerows.py: rows spilled to local disk, `PageFacts` kept, `TextFacts` kept or left in
the object store). `text_columns` makes a book's text and per-page text columns from its
TextFacts (in the Ray executor, a task does, off the driver); when the shard is complete
`assemble_books` makes the documents rows and hands the pages rows back as `PageRows`, read from
the spill a chunk at a time as the pages part is written."""
from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime, timezone
from typing import Iterable, Iterator, Optional

from folioscan.failures import PERMANENT, TRANSIENT, describe
from folioscan.records import DOCUMENT_LEVEL, PageResult, SourceDocument, page_number
from folioscan.pipeline.pagerows import BookPages, PageFacts, PageRows, TextFacts
from folioscan.schemas import DOCUMENTS, Table
from folioscan.text.book import BookText, PageText, book_text
from folioscan.text.page import TextPage

log = logging.getLogger(__name__)

_SIDE_ORDER = {None: 0, "left": 0, "right": 1}


def assemble_shard(docs: list[SourceDocument], results: Iterable[PageResult], run_id: str) -> tuple[list[dict], list[dict]]:
    """Rows for every document of the shard, in shard order, pages in reading order (as lists: the
    driver itself uses `assemble_books` on the books' spilled pages)."""
    books = {d.doc_id: BookPages.in_memory(run_id) for d in docs}
    for r in results:
        if r.work.doc_id not in books:
            raise RuntimeError(f"results for documents outside the shard: {r.work.doc_id}")
        books[r.work.doc_id].append(r)
    pages, doc_rows = assemble_books(docs, books, run_id)
    return list(pages.rows()), doc_rows


def assemble_books(docs: list[SourceDocument], books: dict[str, "BookPages"], run_id: str) -> tuple["PageRows", list[dict]]:
    """The shard's documents rows and its pages rows (read back from each book's spill as they are
    written), in shard order, each book's pages in reading order. Book text (running heads,
    hyphenation, the reading text) is the executor's (`BookPages.columns`), or made here from the
    TextFacts kept."""
    if set(books) - {d.doc_id for d in docs}:
        raise RuntimeError(f"results for documents outside the shard: {sorted(set(books) - {d.doc_id for d in docs})[:3]}")
    now = datetime.now(timezone.utc)
    parts, doc_rows = [], []
    for doc in docs:
        got = books.get(doc.doc_id) or BookPages.in_memory(run_id)
        facts = got.facts
        doc_level = next((f for f in facts if f.page_index == DOCUMENT_LEVEL), None)
        sha = next((f.content_sha256 for f in facts if f.content_sha256), None)
        doc_error, doc_kind = (doc_level.error, doc_level.error_kind) if doc_level else (None, None)
        pages = sorted((f for f in facts if f.page_index != DOCUMENT_LEVEL),
                       key=lambda f: (f.page_index, _SIDE_ORDER.get(f.side, 0)))
        if doc_level is not None and doc_level.duplicate_of:  # its bytes were read as another book
            row = _document_row(doc, [], None, None, run_id, now)
            row["page_count"], row["content_sha256"] = doc_level.page_count, sha
            doc_rows.append(as_duplicate(_in_order(DOCUMENTS, row, _book_columns(_book_text([]), False)),
                                         doc_level.duplicate_of))
            got.discard()
            continue
        missing = _missing_pages(pages)
        if missing and not doc_error:  # a worker died with them: worth another try
            doc_error, doc_kind = f"pages lost in processing: {[page_number(i) for i in missing[:10]]}", TRANSIENT
        if got.columns is not None:
            book_cols, page_cols = got.columns
        else:
            kept = list(_kept_texts(got))  # outside the try: handles here are the executor's bug, not the book's
            try:
                book_cols, page_cols = text_columns(kept)
            except Exception as e:  # as the Ray executor (ray_texts.TextFailed): a permanent error, its pages dropped
                log.warning("%s: its text could not be made (%s); a permanent error", doc.uri, describe(e))
                got.discard()
                row = _document_row(doc, [], f"{doc.uri}: " + f"book text: {describe(e)}"[:500], PERMANENT, run_id, now)
                doc_rows.append(_in_order(DOCUMENTS, row, _book_columns(_book_text([]), False)))
                continue
        if len(page_cols) != len(pages):
            raise RuntimeError(f"{doc.doc_id}: book text of {len(page_cols)} pages for {len(pages)} page results")
        parts.append((doc.doc_id, got, [f.row for f in pages], page_cols))
        row = _document_row(doc, pages, doc_error, doc_kind, run_id, now)
        row["content_sha256"] = sha
        doc_rows.append(_in_order(DOCUMENTS, row, book_cols))
    return PageRows(parts), doc_rows


_NOT_READ = ("error", "error_kind", "mean_confidence", "engine", "text", "page_spans", "page_numbers_consistent",
             "language", "language_share", "lexicon_fraction", "repetition", "ocr_quality")


def as_duplicate(row: dict, first: str) -> dict:
    """A documents row turned into a copy of book `first`: no pages and no text of its own (the first
    copy's stand for it); what was listed and read (URI, size, page count, content hash) stays."""
    row.update(status="duplicate", duplicate_of=first, pages_out=0, pages_ok=0, pages_blank=0, pages_failed=0,
               **{c: None for c in _NOT_READ})
    return row


def first_copy_gone(row: dict) -> dict:
    """A duplicate whose first copy is neither committed nor in flight: a transient error, read again next run."""
    row.update(status="error", error_kind=TRANSIENT, duplicate_of=None,
               error=f"{row['source_uri']}: the same bytes as book {row['duplicate_of']}, which is neither committed "
                     f"nor in flight any more; read again by the next run")
    return row


def _missing_pages(pages: list["PageFacts"]) -> list[int]:
    """Source pages with fewer (or more) rows than they were split into."""
    if not pages:
        return []
    rows: dict[int, int] = defaultdict(int)
    parts: dict[int, int] = {}
    for f in pages:
        rows[f.page_index] += 1
        parts[f.page_index] = f.parts
    return [i for i in range(pages[0].page_count) if rows.get(i, 0) != parts.get(i, 1)]


def _document_row(doc: SourceDocument, pages: list["PageFacts"], error: Optional[str], error_kind: Optional[str],
                  run_id: str, now) -> dict:
    ok = [f for f in pages if f.status == "ok"]
    failed = sum(1 for f in pages if f.status == "error")
    mean_conf = _mean_confidence(ok)
    if error and not pages:
        status = "error"
    elif error or failed:
        status = "partial" if ok else "error"
        error = error or next(r.error for r in pages if r.status == "error")
    else:
        status = "ok"
    kinds = {error_kind, *(f.error_kind for f in pages if f.status == "error")} - {None}
    kind = (TRANSIENT if TRANSIENT in kinds else PERMANENT) if status != "ok" else None
    engine = pages[0].engine if pages else None
    return {
        "doc_id": doc.doc_id, "source_uri": doc.uri, "kind": doc.kind,
        "fingerprint": doc.fingerprint, "metadata": doc.metadata,
        "content_sha256": None,  # set by assemble_books from the facts of every result of the book
        "duplicate_of": None,
        "size_bytes": doc.size, "page_count": pages[0].page_count if pages else 0,
        "pages_out": len(pages), "pages_ok": len(ok),
        "pages_blank": sum(1 for r in pages if r.status == "blank"), "pages_failed": failed,
        "status": status, "error": error, "error_kind": kind,
        "attempts_made": 1,  # the driver counts up when it commits a retried book
        "mean_confidence": mean_conf,
        "engine": engine, "run_id": run_id, "processed_at": now,
    }


def _in_order(table: Table, *parts: dict) -> dict:
    """One row from the parts, its columns in the table's order (a column given by no part stays missing)."""
    merged = {k: v for part in parts for k, v in part.items()}
    return {**{n: merged.pop(n) for n in table.names if n in merged}, **merged}


def text_columns(texts: Iterable[TextFacts]) -> tuple[dict, list[dict]]:
    """A book's text columns (its documents row's) and each page's (`PAGE_TEXT`, in reading order),
    from its pages' TextFacts in any order. Pure: the Ray executor runs it in a task."""
    pages = sorted((t for t in texts if t.page_index != DOCUMENT_LEVEL),
                   key=lambda t: (t.page_index, _SIDE_ORDER.get(t.side, 0)))
    book = _book_text(pages)
    return _book_columns(book, bool(pages)), [_page_text_columns(t) for t in book.pages]


def _kept_texts(book: BookPages) -> Iterator[TextFacts]:
    for texts in book.texts:
        if not isinstance(texts, list):
            raise RuntimeError("a book's text left in the object store must be made by its executor (BookPages.columns)")
        yield from texts


def _mean_confidence(ok: list[PageFacts]) -> Optional[float]:
    """The pages' confidences weighted by their text's length (as engines.base.text_weighted_mean)."""
    total = weight = 0.0
    for f in ok:
        if f.confidence is not None:
            w = max(f.chars, 1)
            total, weight = total + w * f.confidence, weight + w
    return total / weight if weight else None


def _book_text(pages: list[TextFacts]) -> BookText:
    return book_text([TextPage.from_engine(t.text, t.lines, t.confidence, ok=t.ok, width=t.width, height=t.height)
                      for t in pages])


def _page_text_columns(t: PageText) -> dict:
    s = t.signals
    return {"header": t.header, "footer": t.footer, "printed_page_number": t.printed_page_number,
            "language": s.language, "language_share": s.language_share if s.language else None,
            "lexicon_fraction": s.lexicon_fraction, "repetition": s.repetition if t.body else None,
            "ocr_quality": s.ocr_quality, "matter": t.matter}


def _book_columns(book: BookText, pages: bool) -> dict:
    s = book.signals
    return {"text": book.text if pages else None, "page_spans": book.page_spans if pages else None,
            "page_numbers_consistent": book.page_numbers_consistent,
            "language": s.language, "language_share": s.language_share if s.language else None,
            "lexicon_fraction": s.lexicon_fraction, "repetition": s.repetition if book.text else None,
            "ocr_quality": s.ocr_quality}
