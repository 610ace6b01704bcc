"""Page images, one JPEG per page row at `image_file(book, page)` (DEST/images/<book>/<page_key>.jpg):
what METS and IIIF point at.

Each is the page as the run loaded it (folioscan/workers/load.py, with the run's own load settings
from its run record: the embedded scan at its native resolution, or the page rendered at the run's
DPI, or the image file's frame), before any cleaning: the pixels the `box_source` columns, ALTO and
hOCR are in, `source_width` x `source_height`. The pipeline reads grey; here the loader keeps a
colour scan's colour (`LoadOptions.color`), so the JPEG is in colour where the scan is, grey where
it is grey or bilevel.
The two halves of a split spread share one scan and their boxes are in its pixels, so each side's
file is the whole spread (the same bytes twice: one file name per page row, as every format has).

A page whose image cannot be loaded again (a failed page, a source changed since the run, or a
loaded size that is not the one the run recorded) gets no file; the book's export error names the
pages, after the others are written.
"""
from __future__ import annotations

import dataclasses
import io
from typing import Iterator

from folioscan.export.dataset import Book, ExportContext, image_file
from folioscan.records import page_label

QUALITY = 85  # JPEG quality: an access copy a viewer zooms into, not an archival master


def write_book(book: Book, ctx: ExportContext) -> Iterator[tuple[str, bytes]]:
    """Pages the run could not load (no `source_width`) have no image to give and are passed over
    (their rows say why); a page it did load but that cannot be loaded the same way now is an error."""
    rows: dict[int, list[dict]] = {}
    for p in book.pages:
        if p.get("source_width") and p.get("source_height"):
            rows.setdefault(p["page_index"], []).append(p)
    failed: list[str] = []
    for work in _loaded(book, ctx, rows):
        for page in rows.pop(work.page_index):
            label = page_label(page["page_index"], page.get("side"))
            if work.image is None:
                failed.append(f"{label}: {work.error}")
            elif work.image.shape[:2] != (page["source_height"], page["source_width"]):
                h, w = work.image.shape[:2]
                failed.append(f"{label} loads at {w} x {h} px, the run recorded {page['source_width']} x {page['source_height']}")
            else:
                yield image_file(book, page), jpeg(work.image)
    failed += [f"{page_label(p['page_index'], p.get('side'))}: not in the source any more" for ps in rows.values() for p in ps]
    if failed:
        raise ValueError("no image for " + "; ".join(failed))


def _loaded(book: Book, ctx: ExportContext, rows: dict[int, list[dict]]):
    """The PageWork of each page in `rows`, one page in memory at a time."""
    from folioscan.records import DOCUMENT_LEVEL
    from folioscan.workers.load import load_pages

    if not rows:
        return
    source = ctx.source_document(book)
    if source.doc_id != book.doc["doc_id"]:
        raise ValueError(f"{book.doc['source_uri']}: the source changed since the run (its content fingerprint "
                         f"differs), so its pages are not the ones the boxes were measured on")
    last = max(rows)
    for work in load_pages(source, ctx.read_source, load_options(ctx.run_config(book.doc.get("run_id")))):
        if work.page_index == DOCUMENT_LEVEL:
            raise ValueError(work.error)
        if work.page_index in rows:
            yield work
        if work.page_index >= last:
            return


def load_options(config: dict):
    """The load settings a run recorded (its config), the defaults of JobConfig where it says none;
    a colour scan kept in colour (same pixels and size as the run's grey)."""
    from folioscan.pipeline.config import JobConfig

    keys = ("dpi", "max_page_megapixels", "prefer_embedded", "max_object_mb", "retry")
    opts = JobConfig(source=".", output=".", **{k: config[k] for k in keys if k in config}).load_options()
    return dataclasses.replace(opts, color=True)


def jpeg(image) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=QUALITY, optimize=True)
    return buf.getvalue()
