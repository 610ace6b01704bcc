"""Searchable PDF, one per book: the original scan pages with an invisible text layer (render mode 3).

A PDF book is copied as it is (its scan images untouched) and each page gets its words; an image
book becomes one page per image at its DPI. Each word is drawn where its ink is on the scan: its
box on the cleaned page is carried back through the cleaning transforms and the page's image
placement, so the text is turned and tilted with the scan (a page scanned sideways gets sideways
text) and stretched to the word's width, as OCRmyPDF and Tesseract do. The font is a subset of
the Nimbus Sans that PyMuPDF carries (Unicode, so long s, ligatures and dashes survive
extraction); invisible text never draws its glyphs, the subset keeps it to a few kB per book.
A page that already carries text (born-digital) keeps its own and gets no second layer; the
document's metadata records how many pages got a layer.
"""
from __future__ import annotations

import io
import logging
from itertools import groupby
from typing import Iterator

import numpy as np

from folioscan.export.dataset import Book, ExportContext
from folioscan.workers.prep import transform as tf

log = logging.getLogger(__name__)
FONT = "FolioText"
DEFAULT_DPI = 300.0  # for image files that do not say


def write_book(book: Book, ctx: ExportContext) -> Iterator[tuple[str, bytes]]:
    if not book.pages:
        return
    data = book_pdf(book, ctx)
    yield f"{book.name}.pdf", data


def book_pdf(book: Book, ctx: ExportContext) -> bytes:
    import pymupdf

    if book.doc["kind"] == "pdf":
        doc = pymupdf.open(stream=ctx.read_source(book.doc["source_uri"]), filetype="pdf")
        placements: dict[int, tuple] = {}
    else:
        doc, placements = _images_pdf(book, ctx)
    font = pymupdf.Font("helv")
    layered = own_text = 0
    for index, rows in groupby(book.pages, key=lambda p: p["page_index"]):
        rows = [r for r in rows if r["status"] == "ok"]
        if not rows or index >= doc.page_count:
            continue
        page = doc[index]
        if book.doc["kind"] == "pdf" and page.get_text("text").strip():
            own_text += 1
            continue
        to_pdf = placements.get(index) or rows[0].get("pdf_transform")
        if not to_pdf:
            continue
        page.insert_font(fontname=FONT, fontbuffer=font.buffer)
        shape = page.new_shape()
        for row in rows:
            chain = tf.from_json(row.get("transforms"))
            for line in row.get("lines") or []:
                for word in line.get("words") or []:
                    place_word(shape, font, word["text"], word["box"], chain, to_pdf)
        shape.commit()
        layered += 1
    doc.set_metadata({**(doc.metadata or {}), "producer": f"folioscan {ctx.version}",
                      "subject": f"folioscan text layer on {layered} pages; {own_text} pages kept their own text"})
    doc.subset_fonts()
    return doc.tobytes(garbage=3, deflate=True)


def place_word(shape, font, text: str, box, chain, to_pdf) -> bool:
    """Draw `text` invisibly over its ink. `box` is on the cleaned page; the baseline, direction
    and size come from mapping the box's edges through the chain and the page placement."""
    import pymupdf

    if not text or not box:
        return False
    x0, y0, x1, y1 = (float(v) for v in box)
    asc, desc = font.ascender, font.descender  # em units; desc < 0
    baseline = y1 + desc * (y1 - y0) / (asc - desc)  # font box [baseline - asc, baseline - desc] = [y0, y1]
    cleaned = np.array([[x0, baseline], [x1, baseline], [x0, y0], [x0, y1]])
    a, b, tx, c, d, ty = to_pdf
    src = tf.to_source(chain, cleaned)
    pts = np.stack([a * src[:, 0] + b * src[:, 1] + tx, c * src[:, 0] + d * src[:, 1] + ty], axis=1)
    along, across = pts[1] - pts[0], pts[3] - pts[2]
    width, height = float(np.hypot(*along)), float(np.hypot(*across))
    if width < 1e-3 or height < 1e-3:
        return False
    size = height / (asc - desc)
    natural = font.text_length(text, fontsize=size)
    if natural <= 0:
        return False
    ux, uy = along / width
    origin = pymupdf.Point(*pts[0])
    # morph works in PDF space (y up): the page-space direction (ux, uy) is a turn by -atan2(uy, ux) there
    morph = pymupdf.Matrix(width / natural, 0, 0, 1, 0, 0) * pymupdf.Matrix(ux, -uy, uy, ux, 0, 0)
    shape.insert_text(origin, text, fontsize=size, fontname=FONT, render_mode=3, morph=(origin, morph))
    return True


def _images_pdf(book: Book, ctx: ExportContext):
    """A new PDF with one page per image of an image-folder book (frames of a TIFF each a page),
    and each page's placement: image pixels -> PDF points."""
    import pymupdf
    from PIL import Image

    from folioscan.pipeline.sources import group_documents

    uri = book.doc["source_uri"]
    source = next((d for d in group_documents(ctx.list_source(uri)) if d.uri == uri), None)
    if source is None:
        raise FileNotFoundError(f"{uri}: the page images are no longer there")
    dpi_of = {p["page_index"]: p.get("dpi") for p in book.pages}
    doc, placements, index = pymupdf.open(), {}, 0
    for member in source.members:
        data = ctx.read_source(member.uri)
        im = Image.open(io.BytesIO(data))
        frames = getattr(im, "n_frames", 1)
        for k in range(frames):
            im.seek(k)
            dpi = dpi_of.get(index) or DEFAULT_DPI
            scale = 72.0 / dpi
            page = doc.new_page(width=im.width * scale, height=im.height * scale)
            raw = frames == 1 and member.uri.lower().endswith((".png", ".jpg", ".jpeg"))
            page.insert_image(page.rect, stream=data if raw else _png(im))
            placements[index] = (scale, 0.0, 0.0, 0.0, scale, 0.0)
            index += 1
    return doc, placements


def _png(im) -> bytes:
    buf = io.BytesIO()
    (im if im.mode in ("1", "L", "RGB", "RGBA") else im.convert("RGB")).save(buf, format="PNG", optimize=True)
    return buf.getvalue()

