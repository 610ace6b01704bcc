"""Turn a shard's PageResults into `pages` and `documents` rows, checking that no page is missing.

In the driver the results never stay: as each reaches it, an executor appends it to its book's
`BookPages`, which turns it into its pages row at once, appended to the book's spill file
(pipeline/spill.py), and keeps only its `PageFacts` (text, line boxes, outcome). When the shard is
complete `assemble_books` makes each book's text from the facts and hands the pages rows back as
`PageRows`, read from the spill a chunk at a time as the pages part is written."""
from __future__ import annotations

import io
from array import array
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable, Iterator, Optional, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from folioscan.failures import PERMANENT, TRANSIENT
from folioscan.records import DOCUMENT_LEVEL, OcrLine, OcrResult, PageResult, SourceDocument, page_number
from folioscan.pipeline.spill import SpillFile
from folioscan.schemas import DOCUMENTS, PAGES, Table
from folioscan.text.book import BookText, PageText, book_text
from folioscan.text.page import TextPage
from folioscan.workers.engines.base import text_weighted_mean
from folioscan.workers.prep.transform import to_json

_SIDE_ORDER = {None: 0, "left": 0, "right": 1}


def page_row(r: PageResult, run_id: str) -> dict:
    w, p, ocr = r.work, r.work.prep, r.ocr
    attempts = ocr.attempts if ocr else []
    final = next((a for a in attempts if a.accepted), attempts[-1] if attempts else None)
    text = ocr.text if ocr and r.status == "ok" else ("" if r.status == "blank" else None)
    return {
        "doc_id": w.doc_id, "source_uri": w.source_uri, "page_index": w.page_index, "side": w.side,
        "status": r.status, "error": r.error, "error_kind": _error_kind(r), "attempts_made": w.attempts_made,
        "image_origin": w.image_origin or None, "dpi": w.dpi or None,
        "source_width": w.source_width or None, "source_height": w.source_height or None,
        "width": w.width or None, "height": w.height or None,
        "pdf_transform": list(w.pdf_transform) if w.pdf_transform else None,
        "orientation": p.orientation, "orientation_confidence": p.orientation_confidence, "deskew_angle": p.deskew_angle,
        "crop_box": list(p.crop_box) if p.crop_box else None, "illumination": p.illumination,
        "ink_ratio": p.ink_ratio, "n_columns": p.n_columns, "n_lines": p.n_lines,
        "blocks": [list(b) for b in p.blocks], "text_density": p.text_density, "est_chars": p.est_chars,
        "curvature": p.curvature, "dewarped": p.dewarped, "x_height": p.x_height or None, "upscale": p.upscale,
        "transforms": to_json(p.transforms),
        "text": text,
        "confidence": ocr.confidence if ocr else None,
        "confidence_raw": ocr.confidence_raw if ocr else None,
        "confidence_min": ocr.confidence_min if ocr else None,
        "lines": [_line(l) for l in ocr.lines] if ocr else [],
        "box_level": _box_level(ocr) if ocr and r.status == "ok" else None,
        "box_alignment": ocr.box_alignment.__dict__ if ocr and ocr.box_alignment else None,
        "engine": r.engine, "engine_version": r.engine_version,
        "budget": final.budget if final else None,
        "vision_tokens": final.vision_tokens if final else None,
        "output_tokens": final.output_tokens if final else None,
        "compression_ratio": (final.output_tokens / final.vision_tokens) if final and final.vision_tokens else None,
        "attempts": [a.__dict__ for a in attempts],
        "routed": bool(r.readings), "route_reason": r.route_reason if r.readings else None,
        "readings": [x.__dict__ for x in r.readings] or None, "unchosen_text": r.unchosen_text,
        "load_ms": w.load_ms, "prep_ms": p.prep_ms, "ocr_ms": r.ocr_ms,
        "completed_at": datetime.fromtimestamp(r.completed_at, timezone.utc), "run_id": run_id,
    }


def _line(l: OcrLine) -> dict:
    # the boxes as lists, inline: a page has ~300 words and a call per box was a tenth of the driver's work per page
    return {"text": l.text, "confidence": l.confidence, "box": list(l.box) if l.box else None,
            "box_source": list(l.box_source) if l.box_source else None, "block": l.block, "paragraph": l.paragraph,
            "words": [{"text": w.text, "confidence": w.confidence, "box": list(w.box) if w.box else None,
                       "box_source": list(w.box_source) if w.box_source else None} for w in l.words]}


def _box_level(ocr: OcrResult) -> str:
    if any(w.box for l in ocr.lines for w in l.words):
        return "words"
    return "lines" if any(l.box for l in ocr.lines) else "none"


def _error_kind(r: PageResult) -> Optional[str]:
    if not r.error:
        return None
    return r.error_kind or r.work.error_kind or PERMANENT


def assemble_shard(docs: list[SourceDocument], results: Iterable[PageResult], run_id: str) -> tuple[list[dict], list[dict]]:
    """Rows for every document of the shard, in shard order, pages in reading order (as lists: the
    driver itself uses `assemble_books` on the books' spilled pages)."""
    books = {d.doc_id: BookPages(SpillFile(None, PAGE_ROW.schema), run_id) for d in docs}
    for r in results:
        if r.work.doc_id not in books:
            raise RuntimeError(f"results for documents outside the shard: {r.work.doc_id}")
        books[r.work.doc_id].append(r)
    pages, doc_rows = assemble_books(docs, books, run_id)
    return list(pages.rows()), doc_rows


def assemble_books(docs: list[SourceDocument], books: dict[str, "BookPages"], run_id: str) -> tuple["PageRows", list[dict]]:
    """The shard's documents rows and its pages rows (read back from each book's spill as they are
    written), in shard order, each book's pages in reading order. Book text (running heads,
    hyphenation, the reading text) is made from the pages' facts kept in memory."""
    if set(books) - {d.doc_id for d in docs}:
        raise RuntimeError(f"results for documents outside the shard: {sorted(set(books) - {d.doc_id for d in docs})[:3]}")
    now = datetime.now(timezone.utc)
    parts, doc_rows = [], []
    for doc in docs:
        got = books.get(doc.doc_id) or BookPages(SpillFile(None, PAGE_ROW.schema), run_id)
        facts = got.facts
        doc_level = next((f for f in facts if f.page_index == DOCUMENT_LEVEL), None)
        sha = next((f.content_sha256 for f in facts if f.content_sha256), None)
        doc_error, doc_kind = (doc_level.error, doc_level.error_kind) if doc_level else (None, None)
        pages = sorted((f for f in facts if f.page_index != DOCUMENT_LEVEL),
                       key=lambda f: (f.page_index, _SIDE_ORDER.get(f.side, 0)))
        if doc_level is not None and doc_level.duplicate_of:  # its bytes were read as another book
            row = _document_row(doc, [], None, None, run_id, now)
            row["page_count"], row["content_sha256"] = doc_level.page_count, sha
            doc_rows.append(as_duplicate(_in_order(DOCUMENTS, row, _book_columns(_book_text([]), [])),
                                         doc_level.duplicate_of))
            got.discard()
            continue
        missing = _missing_pages(pages)
        if missing and not doc_error:  # a worker died with them: worth another try
            doc_error, doc_kind = f"pages lost in processing: {[page_number(i) for i in missing[:10]]}", TRANSIENT
        book = _book_text(pages)
        parts.append((doc.doc_id, got, [f.row for f in pages], [_page_text_columns(t) for t in book.pages]))
        row = _document_row(doc, pages, doc_error, doc_kind, run_id, now)
        row["content_sha256"] = sha
        doc_rows.append(_in_order(DOCUMENTS, row, _book_columns(book, pages)))
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
    mean_conf = text_weighted_mean((f.text, f.confidence) for f in ok)
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


def _book_text(pages: list["PageFacts"]) -> BookText:
    return book_text([TextPage.from_engine(f.text, f.lines, f.confidence,
                                           ok=f.status == "ok", width=f.width, height=f.height) for f in pages])


def _page_text_columns(t: PageText) -> dict:
    s = t.signals
    return {"header": t.header, "footer": t.footer, "printed_page_number": t.printed_page_number,
            "language": s.language, "language_share": s.language_share if s.language else None,
            "lexicon_fraction": s.lexicon_fraction, "repetition": s.repetition if t.body else None,
            "ocr_quality": s.ocr_quality, "matter": t.matter}


def _book_columns(book: BookText, pages: list["PageFacts"]) -> dict:
    s = book.signals
    return {"text": book.text if pages else None, "page_spans": book.page_spans if pages else None,
            "page_numbers_consistent": book.page_numbers_consistent,
            "language": s.language, "language_share": s.language_share if s.language else None,
            "lexicon_fraction": s.lexicon_fraction, "repetition": s.repetition if book.text else None,
            "ocr_quality": s.ocr_quality}


# -- pages as they arrive: the row spilled, the facts book assembly needs kept ------------------------
PAGE_TEXT = ("header", "footer", "printed_page_number", "language", "language_share", "lexicon_fraction",
             "repetition", "ocr_quality", "matter")  # the columns `_page_text_columns` fills at book end
PAGE_ROW = Table("pages (as spilled, before book text)", PAGES.version, [c for c in PAGES.columns if c.name not in PAGE_TEXT])
CHUNK_ROWS = 64  # pages rows read back and written at a time (a Parquet row group each)
_NO_BOX = (-1, -1, -1, -1)


@dataclass(slots=True)
class PageFacts:
    """What book assembly needs of one page result (its text, its lines' text and boxes, its outcome):
    a few KB, against the hundreds of its words, boxes and cleaning record, which go to the spill."""

    page_index: int
    side: Optional[str]
    parts: int
    page_count: int
    status: str
    error: Optional[str]
    error_kind: Optional[str]
    engine: Optional[str]
    text: Optional[str]
    confidence: Optional[float]
    line_texts: str  # the engine's lines' texts, "\n" between
    line_boxes: array  # their boxes, 4 ints each; -1s for a line without one
    width: int
    height: int
    content_sha256: Optional[str]
    duplicate_of: Optional[str]
    content_claim: Optional[str] = None  # the loader's claim on the book's bytes (duplicates.claims_taken)
    row: int = -1  # position of its pages row in the book's spill (DOCUMENT_LEVEL results have none)

    @classmethod
    def of(cls, r: PageResult) -> "PageFacts":
        w, ocr = r.work, r.ocr
        lines = ocr.lines if ocr else []
        boxes = array("i", (v for l in lines for v in (l.box if l.box is not None and len(l.box) == 4 else _NO_BOX)))
        return cls(w.page_index, w.side, w.parts, w.page_count, r.status, r.error, _error_kind(r), r.engine,
                   ocr.text if ocr else None, ocr.confidence if ocr else None,
                   "\n".join(l.text.replace("\n", " ") for l in lines), boxes, w.width, w.height, w.content_sha256, w.duplicate_of,
                   w.content_claim)

    @property
    def lines(self) -> list[dict]:
        """The engine's lines as TextPage.from_engine reads them: text and box."""
        if not self.line_boxes:
            return []
        b = self.line_boxes
        return [{"text": t, "box": None if b[4 * i] == -1 else tuple(b[4 * i:4 * i + 4])}
                for i, t in enumerate(self.line_texts.split("\n"))]


class BookPages:
    """One book's page results as an executor appends them: each page's row goes to `rows` (a spill
    file) at once, its facts stay; the PageResult itself is not kept."""

    def __init__(self, rows: SpillFile, run_id: str):
        self.rows, self.run_id = rows, run_id
        self.facts: list[PageFacts] = []

    def append(self, r: PageResult) -> None:
        f = PageFacts.of(r)
        if f.page_index != DOCUMENT_LEVEL:
            f.row = self.rows.append(PAGE_ROW.check(page_row(r, self.run_id)))
        self.facts.append(f)

    def __len__(self) -> int:
        return len(self.facts)

    @property
    def pages(self) -> int:
        """Page rows (DOCUMENT_LEVEL results left out)."""
        return sum(1 for f in self.facts if f.page_index != DOCUMENT_LEVEL)

    def discard(self) -> None:
        self.rows.delete()
        self.facts = []


class PageRows:
    """A shard's pages rows, read back from its books' spill files a chunk at a time, in shard order
    and each book's reading order, with the columns book text fills (`PAGE_TEXT`) added."""

    def __init__(self, books: list[tuple[str, BookPages, list[int], list[dict]]]):
        self.books = books  # (doc_id, its pages, row positions in reading order, page text columns per page)

    def __len__(self) -> int:
        return sum(len(order) for _, _, order, _ in self.books)

    def only(self, doc_ids) -> "PageRows":
        """The rows of these books; the others' spill is dropped."""
        kept = [b for b in self.books if b[0] in doc_ids]
        for doc_id, pages, *_ in self.books:
            if doc_id not in doc_ids:
                pages.discard()
        return PageRows(kept)

    def tables(self) -> Iterator[pa.Table]:
        """At most CHUNK_ROWS rows at a time, in the pages table's schema."""
        for book in self.books:
            yield from self._book_tables(book)

    def book_rows(self, doc_id: str) -> "SpilledPages":
        """One book's rows as dicts, in reading order (what an export format reads as `Book.pages`), read
        from the spill a chunk at a time whenever they are iterated: never the whole book at once."""
        return SpilledPages(next((b for b in self.books if b[0] == doc_id), (doc_id, None, [], [])))

    @staticmethod
    def _book_tables(book) -> Iterator[pa.Table]:
        for start in range(0, len(book[2]), CHUNK_ROWS):
            yield PageRows._book_table(book, start)

    @staticmethod
    def _book_table(book, start: int) -> pa.Table:
        """The book's rows `start` .. `start + CHUNK_ROWS` in reading order."""
        schema = PAGES.tagged_schema
        _, pages, order, text = book
        spilled = pages.rows.take(order[start:start + CHUNK_ROWS])
        added = text[start:start + CHUNK_ROWS]
        return pa.Table.from_arrays(
            [spilled.column(f.name) if f.name not in PAGE_TEXT else pa.array([t[f.name] for t in added], f.type)
             for f in schema], schema=schema)

    def rows(self, columns: Optional[Sequence[str]] = None) -> Iterator[dict]:
        """Each row as a dict (only `columns`, when given)."""
        for table in self.tables():
            yield from (table.select(list(columns)) if columns else table).to_pylist()

    def parquet_bytes(self) -> bytes:
        """The shard's pages part, written a chunk (one row group) at a time."""
        buf = io.BytesIO()
        with pq.ParquetWriter(buf, PAGES.tagged_schema, compression="zstd") as writer:
            written = False
            for table in self.tables():
                writer.write_table(table)
                written = True
            if not written:
                writer.write_table(PAGES.tagged_schema.empty_table())
        return buf.getvalue()

    def discard(self) -> None:
        """Remove the books' spill files (after the commit, or when the shard is not committed)."""
        for _, pages, _, _ in self.books:
            pages.discard()


class SpilledPages(Sequence):
    """A book's pages rows as a read-only sequence of dicts, read back from its spill a chunk
    (CHUNK_ROWS rows) at a time on each pass: an export format iterates it as often as it needs, and
    `pages[i]` reads the chunk holding row i. Only the chunk being read is held."""

    def __init__(self, book: tuple):
        self._book = book  # (doc_id, BookPages, row positions in reading order, page text columns per page)

    def __len__(self) -> int:
        return len(self._book[2])

    def __iter__(self) -> Iterator[dict]:
        for table in PageRows._book_tables(self._book):
            yield from table.to_pylist()

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        start = i - i % CHUNK_ROWS
        return PageRows._book_table(self._book, start).slice(i - start, 1).to_pylist()[0]


def drop_books(page_rows, doc_ids) -> list[dict] | PageRows:
    """`page_rows` (a list of dicts, or PageRows) without the rows of `doc_ids`."""
    if isinstance(page_rows, PageRows):
        return page_rows.only({doc_id for doc_id, *_ in page_rows.books} - set(doc_ids))
    return [p for p in page_rows if p["doc_id"] not in doc_ids]
