"""Load a document's pages as grayscale images: PDFs through PyMuPDF, page-image files through Pillow.

A PDF page that is one full-page scan image is read at its native resolution straight from
the embedded image (no re-rendering, ~3x faster); other pages are rendered at the configured
DPI. Pages over the pixel cap become error rows instead of exhausting memory.
"""
from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np

from folioscan.records import DOCUMENT_LEVEL, PageWork, SourceDocument


@dataclass(frozen=True)
class LoadOptions:
    dpi: float = 300.0
    max_megapixels: float = 200.0
    prefer_embedded: bool = True
    max_object_mb: float = 4096.0


class PageTooLarge(ValueError):
    pass


def _check_pixels(w: int, h: int, opts: LoadOptions, what: str) -> None:
    mp = w * h / 1e6
    if mp > opts.max_megapixels:
        raise PageTooLarge(f"{what} is {w} x {h} px = {mp:.0f} MP, over the cap of {opts.max_megapixels:.0f} MP (--max-page-megapixels)")


def load_pages(doc: SourceDocument, read, opts: LoadOptions) -> Iterator[PageWork]:
    """Yield one PageWork per page; a document that cannot be opened yields one DOCUMENT_LEVEL error."""
    def doc_error(msg: str, page_count: int = 0) -> PageWork:
        return PageWork(doc.doc_id, doc.uri, DOCUMENT_LEVEL, page_count, error=msg)

    too_big = [m for m in doc.members if m.size > opts.max_object_mb * 1e6]
    if too_big:
        yield doc_error(f"{too_big[0].uri}: object is {too_big[0].size / 1e6:.0f} MB, over --max-object-mb")
        return
    if doc.kind == "pdf":
        try:
            data = read(doc.uri)
        except Exception as e:
            yield doc_error(str(e))
            return
        yield from _pdf_pages(doc, data, opts, doc_error)
    else:
        yield from _image_pages(doc, read, opts)


def _pdf_pages(doc, data: bytes, opts: LoadOptions, doc_error) -> Iterator[PageWork]:
    import pymupdf

    if not data:
        yield doc_error(f"{doc.uri}: zero-byte object")
        return
    if not data.lstrip()[:5].startswith(b"%PDF"):
        yield doc_error(f"{doc.uri}: not a PDF (starts with {data[:8]!r})")
        return
    try:
        pdf = pymupdf.open(stream=data, filetype="pdf")
    except Exception as e:
        yield doc_error(f"{doc.uri}: corrupt PDF: {e}")
        return
    with pdf:
        if pdf.needs_pass and not pdf.authenticate(""):
            yield doc_error(f"{doc.uri}: encrypted PDF (needs a password)")
            return
        n = pdf.page_count
        if n == 0:
            yield doc_error(f"{doc.uri}: PDF has no pages")
            return
        for i in range(n):
            t0 = time.perf_counter()
            work = PageWork(doc.doc_id, doc.uri, i, n)
            try:
                page = pdf.load_page(i)
                img, dpi, origin = _page_image(pdf, page, opts)
                work.image, work.dpi, work.image_origin = img, dpi, origin
                work.source_height, work.source_width = img.shape[:2]
            except Exception as e:
                work.error = f"{doc.uri} page {i}: {type(e).__name__}: {e}" if not isinstance(e, PageTooLarge) else f"{doc.uri} page {i}: {e}"
            work.load_ms = (time.perf_counter() - t0) * 1000
            yield work


def _page_image(pdf, page, opts: LoadOptions) -> tuple[np.ndarray, float, str]:
    if opts.prefer_embedded:
        embedded = _full_page_image(pdf, page, opts)
        if embedded is not None:
            return embedded
    import pymupdf

    rect = page.rect
    w, h = int(rect.width * opts.dpi / 72), int(rect.height * opts.dpi / 72)
    _check_pixels(w, h, opts, f"page rendered at {opts.dpi:.0f} dpi")
    pix = page.get_pixmap(dpi=int(opts.dpi), colorspace=pymupdf.csGRAY, alpha=False)
    return _pix_to_gray(pix), opts.dpi, "rendered"


def _full_page_image(pdf, page, opts: LoadOptions) -> Optional[tuple[np.ndarray, float, str]]:
    """The page's single scan image at native resolution, or None when the page is anything else."""
    import pymupdf

    images = page.get_images(full=True)
    if len(images) != 1 or page.get_text("text").strip():
        return None
    infos = page.get_image_info(xrefs=True)
    if len(infos) != 1:
        return None
    info = infos[0]
    bbox, rect = pymupdf.Rect(info["bbox"]), page.rect
    covers = bbox.width >= 0.97 * rect.width and bbox.height >= 0.97 * rect.height
    a, b, c, d = info["transform"][:4]
    upright = a > 0 and d > 0 and abs(b) < 1e-6 and abs(c) < 1e-6  # no rotation or flip to undo
    if not (covers and upright) or page.rotation:
        return None
    xref, w, h = images[0][0], info["width"], info["height"]
    _check_pixels(w, h, opts, "embedded page image")
    pix = pymupdf.Pixmap(pdf, xref)
    if pix.alpha or pix.n not in (1, 3, 4) or (pix.colorspace and pix.colorspace.n not in (1, 3)):
        pix = pymupdf.Pixmap(pymupdf.csGRAY, pix)
    gray = _pix_to_gray(pix)
    dpi = w / (rect.width / 72.0)
    return gray, round(dpi, 1), "embedded"


def _pix_to_gray(pix) -> np.ndarray:
    import pymupdf

    if pix.n != 1 or pix.alpha:
        pix = pymupdf.Pixmap(pymupdf.csGRAY, pix) if not pix.alpha else pymupdf.Pixmap(pymupdf.csGRAY, pymupdf.Pixmap(pix, 0))
    arr = np.frombuffer(pix.samples, dtype=np.uint8).reshape(pix.height, pix.stride)[:, : pix.width]
    return np.ascontiguousarray(arr)


TIFF_EXT = (".tif", ".tiff")


def _frame_count(uri: str, read) -> tuple[int, Optional[str]]:
    """Pages in one image file. Only a TIFF can hold several, so only a TIFF is read here."""
    if not uri.lower().endswith(TIFF_EXT):
        return 1, None
    from PIL import Image

    try:
        return getattr(Image.open(io.BytesIO(read(uri))), "n_frames", 1), None
    except Exception as e:
        return 1, f"{uri}: cannot open image: {e}"


def _image_pages(doc, read, opts: LoadOptions) -> Iterator[PageWork]:
    """One file in memory at a time: count the pages first, then read and decode file by file."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = int(opts.max_megapixels * 1e6)
    counts = [_frame_count(m.uri, read) for m in doc.members]
    n = sum(c for c, _ in counts)
    index = 0
    for member, (frames, count_error) in zip(doc.members, counts):
        t0 = time.perf_counter()
        im, error = None, count_error
        if error is None:
            try:
                data = read(member.uri)
                if not data:
                    raise ValueError("zero-byte object")
                im = Image.open(io.BytesIO(data))
            except Exception as e:
                error = f"{member.uri}: cannot open image: {e}"
        for k in range(frames):
            work = PageWork(doc.doc_id, doc.uri, index, n, image_origin="image-file", error=error)
            index += 1
            if im is not None:
                _decode_frame(im, k, member.uri, opts, work)
            work.load_ms = (time.perf_counter() - t0) * 1000
            t0 = time.perf_counter()
            yield work


def _gray8(im) -> np.ndarray:
    """8-bit grey. Pillow's convert("L") clips 16-bit samples at 255 (a grey page turns almost all
    white), so deep images are scaled instead."""
    if im.mode.startswith("I;16") or (im.mode == "I" and im.getextrema()[1] > 255):
        return (np.asarray(im, dtype=np.uint32) // 257).astype(np.uint8)
    return np.asarray(im.convert("L")).copy()


def _decode_frame(im, k: int, uri: str, opts: LoadOptions, work: PageWork) -> None:
    try:
        im.seek(k)
        _check_pixels(im.width, im.height, opts, f"{uri} frame {k}")
        work.image = _gray8(im)
        work.source_height, work.source_width = work.image.shape
        xdpi = (im.info.get("dpi") or (0, 0))[0]
        work.dpi = float(xdpi) if xdpi else 0.0
    except Exception as e:
        work.error = f"{uri} frame {k}: {e}"
