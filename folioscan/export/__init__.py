"""Exports of a finished dataset into the formats other systems ingest.

FORMATS maps a format name to a function `(Book, ExportContext) -> iterator of (relative path, bytes)`;
`folioscan export OUTPUT DEST --format NAME` and `folioscan run ... --also NAME` both go through it.
Modules are imported when a format is used (lxml, PyMuPDF are only needed then).
"""
from __future__ import annotations

import importlib
from typing import Iterable, Optional

from folioscan.export.dataset import Book, ExportContext, ExportSummary, export_books, iter_books

FORMATS: dict[str, str] = {
    "alto": "folioscan.export.alto:write_book",  # ALTO 4.4 XML, one file per page
    "hocr": "folioscan.export.hocr:write_book",  # hOCR 1.2 HTML, one file per book
    "pdf": "folioscan.export.pdf:write_book",  # searchable PDF per book: the scans + an invisible text layer
}


def format_function(name: str):
    if name not in FORMATS:
        raise ValueError(f"unknown export format {name!r}; known: {', '.join(FORMATS)}")
    module, _, fn = FORMATS[name].partition(":")
    return getattr(importlib.import_module(module), fn)


def export_dataset(output: str, dest: str, formats: Iterable[str], endpoint_url: Optional[str] = None,
                   region: Optional[str] = None) -> ExportSummary:
    """Read the dataset at OUTPUT book by book and write every format under DEST/<format>/."""
    from folioscan.pipeline.storage import store_for

    fns = {f: format_function(f) for f in formats}
    ctx = ExportContext(output, endpoint_url, region)
    return export_books(iter_books(store_for(output, endpoint_url, region), output), fns, dest, ctx)


__all__ = ["FORMATS", "Book", "ExportContext", "ExportSummary", "export_books", "export_dataset", "format_function",
           "iter_books"]
