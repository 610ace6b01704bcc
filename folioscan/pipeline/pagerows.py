"""A page result as the driver keeps it: its `pages` row (Arrow, spilled to local disk as it
arrives), its place and outcome (`PageFacts`, a few hundred bytes), and its text and line boxes
(`TextFacts`, what book text is made from).

Where the work is: `page_part` turns one book's results of one engine call into a `PagePart`
(facts and an Arrow record batch of rows) and their `TextFacts`. The Ray executor calls it in the
OCR actor, so the driver never unpickles a page's words and boxes nor builds its row; it appends
the part's record batch to the book's spill as it is and keeps the facts, while the TextFacts stay
in the object store until a task makes the book's text (pipeline/executors/ray_workers.py). The
local executor appends each result in process (`BookPages.append`). Once a book is complete its
rows are read back from the spill as `PageRows`, a chunk at a time, with the columns book text
fills (`PAGE_TEXT`) added."""
from __future__ import annotations

import io
from array import array
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterator, Optional, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from folioscan.failures import PERMANENT
from folioscan.pipeline.spill import SpillFile
from folioscan.records import DOCUMENT_LEVEL, OcrLine, OcrResult, PageResult
from folioscan.schemas import PAGES, Table
from folioscan.workers.prep.transform import to_json


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


PAGE_TEXT = ("header", "footer", "printed_page_number", "language", "language_share", "lexicon_fraction",
             "repetition", "ocr_quality", "matter")  # the columns book text fills (assemble._page_text_columns)
PAGE_ROW = Table("pages (as spilled, before book text)", PAGES.version, [c for c in PAGES.columns if c.name not in PAGE_TEXT])
CHUNK_ROWS = 64  # pages rows read back and written at a time (a Parquet row group each)
_NO_BOX = (-1, -1, -1, -1)


@dataclass(slots=True)
class PageFacts:
    """What the driver keeps of one page result: its place and outcome, for the documents row, the
    check that no page is missing, duplicates and progress."""

    page_index: int
    side: Optional[str]
    parts: int
    page_count: int
    status: str
    error: Optional[str]
    error_kind: Optional[str]
    engine: Optional[str]
    chars: int  # characters of its text, stripped (the weight of its confidence in the book's mean)
    confidence: Optional[float]
    content_sha256: Optional[str]
    duplicate_of: Optional[str]
    content_claim: Optional[str] = None  # the loader's claim on the book's bytes (duplicates.claims_taken)
    row: int = -1  # position of its pages row in the book's spill (DOCUMENT_LEVEL results have none)

    @classmethod
    def of(cls, r: PageResult) -> "PageFacts":
        w, ocr = r.work, r.ocr
        return cls(w.page_index, w.side, w.parts, w.page_count, r.status, r.error, _error_kind(r), r.engine,
                   len(ocr.text.strip()) if ocr and ocr.text else 0, ocr.confidence if ocr else None,
                   w.content_sha256, w.duplicate_of, w.content_claim)


@dataclass(slots=True)
class TextFacts:
    """What book text needs of one page result: its text, its lines' texts and boxes, its size."""

    page_index: int
    side: Optional[str]
    ok: bool
    text: Optional[str]
    confidence: Optional[float]
    line_texts: str  # the engine's lines' texts, "\n" between
    line_boxes: array  # their boxes, 4 ints each; -1s for a line without one
    width: int
    height: int

    @classmethod
    def of(cls, r: PageResult) -> "TextFacts":
        w, ocr = r.work, r.ocr
        lines = ocr.lines if ocr else []
        boxes = array("i", (v for l in lines for v in (l.box if l.box is not None and len(l.box) == 4 else _NO_BOX)))
        return cls(w.page_index, w.side, r.status == "ok", ocr.text if ocr else None, ocr.confidence if ocr else None,
                   "\n".join(l.text.replace("\n", " ") for l in lines), boxes, w.width, w.height)

    @property
    def lines(self) -> list[dict]:
        """The engine's lines as TextPage.from_engine reads them: text and box."""
        if not self.line_boxes:
            return []
        b = self.line_boxes
        return [{"text": t, "box": None if b[4 * i] == -1 else tuple(b[4 * i:4 * i + 4])}
                for i, t in enumerate(self.line_texts.split("\n"))]


@dataclass
class PagePart:
    """One book's results from one engine call, as the driver takes them: the facts, in the order the
    results came, and the pages rows of those that are pages (not DOCUMENT_LEVEL), in the same order,
    as one Arrow record batch in IPC form without its schema (PAGE_ROW's, known to both sides:
    unpickling a record batch rebuilt its 60-column schema each time, 0.7 ms a call)."""

    doc_id: str
    facts: list[PageFacts]
    rows: Optional[bytes]
    routed: list = field(default_factory=list)  # Ray: object refs of routed pages (read on by the second pool)

    @property
    def batch(self) -> Optional[pa.RecordBatch]:
        return None if self.rows is None else pa.ipc.read_record_batch(pa.py_buffer(self.rows), PAGE_ROW.schema)


def page_part(doc_id: str, results: Sequence[PageResult], run_id: str) -> tuple[PagePart, list[TextFacts]]:
    """`results` (all of book `doc_id`) as a PagePart and their TextFacts: where the results are made."""
    rows = [PAGE_ROW.check(page_row(r, run_id)) for r in results if r.work.page_index != DOCUMENT_LEVEL]
    batch = pa.RecordBatch.from_pylist(rows, schema=PAGE_ROW.schema).serialize().to_pybytes() if rows else None
    return PagePart(doc_id, [PageFacts.of(r) for r in results], batch), [TextFacts.of(r) for r in results]


class BookPages:
    """One book's page results as an executor hands them over: each page's row goes to `rows` (a
    spill file) at once, its facts stay, its TextFacts stay (or a handle to them: `texts`) until the
    book's text is made (`columns`). The PageResult itself is not kept."""

    def __init__(self, rows: SpillFile, run_id: str):
        self.rows, self.run_id = rows, run_id
        self.facts: list[PageFacts] = []
        self.texts: list = []  # lists of TextFacts, or an executor's handles to them (Ray: (object ref, index))
        self.columns = None  # (book columns, page text columns in reading order): assemble.text_columns

    def append(self, r: PageResult) -> PageFacts:
        """One result, made into its row here (the local executor; a result the Ray driver settles itself)."""
        f = PageFacts.of(r)
        if f.page_index != DOCUMENT_LEVEL:
            f.row = self.rows.append(PAGE_ROW.check(page_row(r, self.run_id)))
        self.facts.append(f)
        self.texts.append([TextFacts.of(r)])
        return f

    def extend(self, part: PagePart, texts) -> None:
        """A part made elsewhere (`page_part`), with its TextFacts or a handle to them."""
        pos = self.rows.extend(part.batch) if part.rows is not None else self.rows.rows
        for f in part.facts:
            if f.page_index != DOCUMENT_LEVEL:
                f.row, pos = pos, pos + 1
        self.facts.extend(part.facts)
        self.texts.append(texts)

    def finish(self) -> None:
        """The book is complete: its buffered rows written out and, once its text is made, its TextFacts
        (or handles to them, which hold the actors' second answers in Ray's object store) dropped, so
        nothing of it but its facts and text waits in memory for its shard to commit."""
        self.rows.close()
        if self.columns is not None:
            self.texts = []

    def __len__(self) -> int:
        return len(self.facts)

    @property
    def pages(self) -> int:
        """Page rows (DOCUMENT_LEVEL results left out)."""
        return sum(1 for f in self.facts if f.page_index != DOCUMENT_LEVEL)

    def discard(self) -> None:
        self.rows.delete()
        self.facts, self.texts, self.columns = [], [], None

    @classmethod
    def in_memory(cls, run_id: str = "") -> "BookPages":
        """Rows kept in memory, not spilled (an executor run on its own, assemble_shard)."""
        return cls(SpillFile(None, PAGE_ROW.schema), run_id)


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

    def tables(self, columns: Optional[Sequence[str]] = None) -> Iterator[pa.Table]:
        """At most CHUNK_ROWS rows at a time, in the pages table's schema (only `columns`, when given)."""
        for book in self.books:
            yield from self._book_tables(book, columns)

    def book_rows(self, doc_id: str) -> "SpilledPages":
        """One book's rows as dicts, in reading order (what an export format reads as `Book.pages`), read
        from the spill a chunk at a time whenever they are iterated: never the whole book at once."""
        return SpilledPages(next((b for b in self.books if b[0] == doc_id), (doc_id, None, [], [])))

    @staticmethod
    def _book_tables(book, columns: Optional[Sequence[str]] = None) -> Iterator[pa.Table]:
        for start in range(0, len(book[2]), CHUNK_ROWS):
            yield PageRows._book_table(book, start, columns)

    @staticmethod
    def _book_table(book, start: int, columns: Optional[Sequence[str]] = None) -> pa.Table:
        """The book's rows `start` .. `start + CHUNK_ROWS` in reading order (only `columns`, when given)."""
        schema = PAGES.tagged_schema
        if columns is not None:
            schema = pa.schema([schema.field(c) for c in columns], metadata=schema.metadata)
        _, pages, order, text = book
        spilled = pages.rows.take(order[start:start + CHUNK_ROWS], [f.name for f in schema if f.name not in PAGE_TEXT])
        added = text[start:start + CHUNK_ROWS]
        return pa.Table.from_arrays(
            [spilled.column(f.name) if f.name not in PAGE_TEXT else pa.array([t[f.name] for t in added], f.type)
             for f in schema], schema=schema)

    def rows(self, columns: Optional[Sequence[str]] = None) -> Iterator[dict]:
        """Each row as a dict (only `columns`, when given)."""
        for table in self.tables(columns):
            yield from table.to_pylist()

    def parquet_bytes(self) -> bytes:
        """The shard's pages part, written a chunk at a time: a row group of at most CHUNK_ROWS rows,
        short books' rows gathered into one (a row group per one-page book was most of a short book's
        cost to the driver)."""
        buf = io.BytesIO()
        with pq.ParquetWriter(buf, PAGES.tagged_schema, compression="zstd") as writer:
            pending: list[pa.Table] = []
            rows = 0
            for table in self.tables():
                if pending and rows + table.num_rows > CHUNK_ROWS:
                    writer.write_table(pa.concat_tables(pending), row_group_size=CHUNK_ROWS)
                    pending, rows = [], 0
                pending.append(table)
                rows += table.num_rows
            writer.write_table(pa.concat_tables(pending) if pending else PAGES.tagged_schema.empty_table(),
                               row_group_size=CHUNK_ROWS)
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
