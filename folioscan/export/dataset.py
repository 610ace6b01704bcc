"""Reading a finished output dataset book by book, and writing export files to a local or S3 destination.

Only committed parts are read (a pages part counts once its documents part exists), one part at a
time: memory holds one shard (`shard_docs` books), never the whole output.
"""
from __future__ import annotations

import io
import json
import logging
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable, Iterator, Optional

from folioscan import __version__
from folioscan.pipeline.storage import StorageError, Store, WriteError, is_s3, join, store_for
from folioscan.records import book_stem, page_number
from folioscan.text.safe import visible

log = logging.getLogger(__name__)

_SIDE_ORDER = {None: 0, "left": 0, "right": 1}
MAX_WARNINGS = 1000  # listed in a summary (one a book, e.g. a METS exported without its ALTO); the log has every one


@dataclass
class Book:
    doc: dict  # its `documents` row
    pages: list[dict]  # its `pages` rows, in reading order

    @property
    def name(self) -> str:
        """A file-system and S3-safe name: the source's file or folder name plus the start of doc_id."""
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", book_stem(self.doc["source_uri"])).strip("._") or "book"
        return f"{stem}-{self.doc['doc_id'][:8]}"


def page_key(page: dict) -> str:
    """A page's file stem inside its book: its 1-based page number (as `show` and the report say it),
    plus the side of a split spread: `00001`, `00012-left`."""
    return f"{page_number(page['page_index']):05d}" + (f"-{page['side']}" if page.get("side") else "")


def image_file(book: "Book", page: dict) -> str:
    """Where the `images` format puts a page's access image (JPEG, the scan as loaded), under DEST/images/;
    METS and IIIF point at it."""
    return f"{book.name}/{page_key(page)}.jpg"


def link(ctx: "ExportContext", fmt: str, relpath: str, depth: int) -> str:
    """How an export file refers to another export's file, `DEST/<fmt>/<relpath>`: under `ctx.base_url`
    when one is set, else relative to a linking file that sits `depth` folders below DEST
    (1 for `DEST/mets/<book>.xml`, 2 for `DEST/iiif/<book>/manifest.json`)."""
    if ctx.base_url:
        return f"{ctx.base_url.rstrip('/')}/{fmt}/{relpath}"
    return "../" * depth + f"{fmt}/{relpath}"


def missing_files(dest: str, linked: list[tuple[str, str]], ctx: ExportContext) -> dict[str, list[str]]:
    """The linked export files not under DEST, by format: one listing per book folder (ALTO, images),
    one look-up per single file (the PDF)."""
    store = store_for(dest, ctx.endpoint_url, ctx.region)
    listed: dict[str, set[str]] = {}
    missing: dict[str, list[str]] = {}
    for fmt, path in linked:
        folder, _, name = path.rpartition("/")
        if folder:
            if (fmt, folder) not in listed:
                try:
                    listed[fmt, folder] = set(store.ls(join(dest, fmt, folder)))
                except StorageError:
                    listed[fmt, folder] = set()
            there = name in listed[fmt, folder]
        else:
            there = _exists(store, join(dest, fmt, path))
        if not there:
            missing.setdefault(fmt, []).append(path)
    return missing


def _exists(store, uri: str) -> bool:
    if is_s3(uri):
        try:
            return any(o.uri == uri for o in store.list(uri))
        except StorageError:
            return False
    return os.path.isfile(uri)


def warn_missing(ctx: "ExportContext", linked: list[tuple[str, str]]) -> None:
    """Record in the export's warnings (summary and run record) the linked files not under DEST: a
    METS or IIIF manifest pointing at files nobody exported is said, not shipped silently."""
    if ctx.dest is None:
        return
    missing = missing_files(ctx.dest, linked, ctx)
    if missing:
        ctx.warnings.append("points at files not in DEST (export those formats too): " + "; ".join(
            f"{fmt} {len(paths)} of {sum(1 for f, _ in linked if f == fmt)} ({paths[0]}{', ...' if len(paths) > 1 else ''})"
            for fmt, paths in missing.items()))


def books_from_rows(page_rows: Iterable[dict], doc_rows: Iterable[dict]) -> Iterator[Book]:
    by_doc: dict[str, list[dict]] = {}
    for p in page_rows:
        by_doc.setdefault(p["doc_id"], []).append(p)
    for d in doc_rows:
        pages = sorted(by_doc.pop(d["doc_id"], []), key=lambda p: (p["page_index"], _SIDE_ORDER.get(p["side"], 0)))
        yield Book(d, pages)


def iter_books(store: Store, output: str) -> Iterator[Book]:
    """Every committed book of the dataset at `output`, part by part."""
    import pyarrow.parquet as pq

    output = output.rstrip("/")
    parts = [n for n in store.ls(join(output, "documents")) if n.endswith(".parquet")]
    if not parts and not store.ls(join(output, "pages")):
        raise StorageError(f"{output}: no folioscan dataset here (no documents/ parts)")
    for name in parts:
        docs = pq.read_table(io.BytesIO(store.read(join(output, "documents", name)))).to_pylist()
        pages = pq.read_table(io.BytesIO(store.read(join(output, "pages", name)))).to_pylist()
        yield from books_from_rows(pages, docs)


@dataclass
class ExportContext:
    """What every format needs beyond the rows: the engine settings of each run, the source objects
    (for the searchable PDF), the time of the export."""

    output: str
    endpoint_url: Optional[str] = None
    region: Optional[str] = None
    run_configs: dict[str, dict] = field(default_factory=dict)  # run_id -> the run's config
    version: str = __version__
    base_url: Optional[str] = None  # where DEST will be served from; None: links relative to the linking file
    dest: Optional[str] = None  # where the files go (set by export_books), for a format that checks its links
    warnings: list[str] = field(default_factory=list)  # a format's notes on the book it just wrote; export_books moves them to the summary
    created: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def run_config(self, run_id: Optional[str]) -> dict:
        """The config a run recorded in `_runs/<run_id>.json` ({} when the record is missing)."""
        if run_id and run_id not in self.run_configs:
            store = store_for(self.output, self.endpoint_url, self.region)
            try:
                self.run_configs[run_id] = json.loads(store.read(join(self.output, "_runs", f"{run_id}.json")))["config"]
            except (StorageError, KeyError, ValueError):
                self.run_configs[run_id] = {}
        return self.run_configs.get(run_id or "", {})

    def read_source(self, uri: str) -> bytes:
        return store_for(uri, self.endpoint_url, self.region).read(uri)

    def list_source(self, uri: str):
        return store_for(uri, self.endpoint_url, self.region).list(uri)

    def source_document(self, book: "Book"):
        """The book's source as it is listed now (a SourceDocument: the PDF, or its page images in
        order); FileNotFoundError when it is no longer there."""
        from folioscan.pipeline.sources import group_documents

        uri = book.doc["source_uri"]
        source = next((d for d in group_documents(self.list_source(uri)) if d.uri == uri), None)
        if source is None:
            raise FileNotFoundError(f"{uri}: the book's source is no longer there")
        return source


FormatFn = Callable[[Book, ExportContext], Iterator[tuple[str, bytes]]]


@dataclass
class ExportSummary:
    books: int = 0
    files: int = 0
    bytes: int = 0
    duplicates: int = 0  # books committed as copies of another (status duplicate): no files of their own
    errors: list[str] = field(default_factory=list)  # "<book>: <format>: <reason>", the export goes on
    # "<book>: <format>: <note>": written, but not whole (a METS pointing at files that are not there)
    warnings: list[str] = field(default_factory=list)
    parts: dict[str, dict] = field(default_factory=dict)  # summaries of the per-part formats (jsonl)

    def to_dict(self) -> dict:
        return {"books": self.books, "files": self.files, "bytes": self.bytes, "duplicates": self.duplicates,
                "errors": self.errors, "warnings": self.warnings, **self.parts}


def export_books(books: Iterable[Book], formats: dict[str, FormatFn], dest: str, ctx: ExportContext,
                 summary: Optional[ExportSummary] = None) -> ExportSummary:
    """Write each book in each format under DEST/<format>/; a book that fails in one format is
    recorded in the summary's errors and the others go on. A destination that cannot be written
    (WriteError: no space, no permission) is no book's fault: it stops the export. Formats that
    link to others' files (`links_to_others`: METS) run last for each book, so the files they
    point at are written by then; what a format notes (`ctx.warnings`) goes into the summary's
    warnings and the log. A duplicate (the same bytes as an earlier book, docs/duplicates.md) has
    no pages: it is counted, and its first copy's files stand for it."""
    summary = summary or ExportSummary()
    store = store_for(dest, ctx.endpoint_url, ctx.region)
    ctx.dest = dest
    ordered = sorted(formats.items(), key=lambda kv: bool(getattr(kv[1], "links_to_others", False)))
    for book in books:
        if book.doc.get("status") == "duplicate":
            summary.duplicates += 1
            continue
        summary.books += 1
        for fmt, fn in ordered:
            ctx.warnings.clear()
            try:
                for rel, data in fn(book, ctx):
                    store.write(join(dest, fmt, rel), data)
                    summary.files += 1
                    summary.bytes += len(data)
            except WriteError:
                raise
            except Exception as e:  # one bad book must not stop an export of a million pages
                summary.errors.append(f"{book.doc['source_uri']}: {fmt}: {type(e).__name__}: {e}")
            for note in ctx.warnings:
                line = f"{book.doc['source_uri']}: {fmt}: {note}"
                log.warning("%s", visible(line))
                if len(summary.warnings) < MAX_WARNINGS:
                    summary.warnings.append(line)
                elif len(summary.warnings) == MAX_WARNINGS:
                    summary.warnings.append(f"(only the first {MAX_WARNINGS} warnings are listed here; the log has them all)")
    return summary
