"""Exports of a finished dataset into the formats other systems ingest.

FORMATS maps a per-book format to a function `(Book, ExportContext) -> iterator of (relative path, bytes)`;
`folioscan export OUTPUT DEST --format NAME` and `folioscan run ... --also NAME` both go through it.
PART_FORMATS are corpus formats written one file per committed part (many books a file):
`(output, dest, source_store, dest_store) -> summary dict`. Everything lands under DEST/<format>/.
Modules are imported when a format is used (lxml, PyMuPDF are only needed then).
"""
from __future__ import annotations

import importlib
from typing import Iterable, Optional

from folioscan.export.dataset import Book, ExportContext, ExportSummary, export_books, iter_books
from folioscan.pipeline.storage import join

FORMATS: dict[str, str] = {
    "alto": "folioscan.export.alto:write_book",  # ALTO 4.4 XML, one file per page
    "hocr": "folioscan.export.hocr:write_book",  # hOCR 1.2 HTML, one file per book
    "mets": "folioscan.export.mets:write_book",  # METS 1.12 + MODS per book (DFG-viewer profile), linking alto, images, pdf
    "pdf": "folioscan.export.pdf:write_book",  # searchable PDF per book: the scans + an invisible text layer
    "pdfa": "folioscan.export.pdfa:write_book",  # the same as PDF/A-2b, written by Ghostscript (`gs` needed)
    "images": "folioscan.export.images:write_book",  # the page images as loaded, JPEG, one per page (METS and IIIF point at them)
    "iiif": "folioscan.export.iiif:write_book",  # IIIF Presentation 3 manifest per book, with line and word text annotations
}
PART_FORMATS: dict[str, str] = {
    "jsonl": "folioscan.export.jsonl:export",  # Dolma-style gzipped JSON lines, one book a line, for corpora
}
ALL_FORMATS = (*FORMATS, *PART_FORMATS)


def format_function(name: str):
    """The format's function; ValueError for an unknown name or a format that cannot run here (its
    `preflight`, e.g. pdfa without Ghostscript), before any work."""
    table = FORMATS if name in FORMATS else PART_FORMATS
    if name not in table:
        raise ValueError(f"unknown export format {name!r}; known: {', '.join(ALL_FORMATS)}")
    module, _, fn = table[name].partition(":")
    function = getattr(importlib.import_module(module), fn)
    getattr(function, "preflight", lambda: None)()
    return function


def export_dataset(output: str, dest: str, formats: Iterable[str], endpoint_url: Optional[str] = None,
                   region: Optional[str] = None, base_url: Optional[str] = None) -> ExportSummary:
    """Read the dataset at OUTPUT book by book and write every format under DEST/<format>/."""
    from folioscan.pipeline.storage import store_for

    fns = {f: format_function(f) for f in formats}  # unknown names fail here, before any work
    source = store_for(output, endpoint_url, region)
    book_fns = {f: fn for f, fn in fns.items() if f in FORMATS}
    summary = ExportSummary()
    if book_fns:
        export_books(iter_books(source, output), book_fns, dest, ExportContext(output, endpoint_url, region, base_url=base_url), summary)
    for f in (f for f in fns if f in PART_FORMATS):
        summary.parts[f] = fns[f](output, join(dest, f), source, store_for(dest, endpoint_url, region))
    return summary


__all__ = ["ALL_FORMATS", "FORMATS", "PART_FORMATS", "Book", "ExportContext", "ExportSummary", "export_books", "export_dataset", "format_function",
           "iter_books"]
