"""Load a document's pages as grayscale images: PDFs through PyMuPDF, page-image files through Pillow.

A PDF page that is one full-page scan image is read at its native resolution straight from
the embedded image (no re-rendering, ~3x faster); other pages are rendered at the configured
DPI. Pages over the pixel cap become error rows instead of exhausting memory.

A damaged PDF (truncated in transfer, say) is repaired by MuPDF silently, and its lost pages
would render blank. When MuPDF had to repair a file, each page is checked: its page object and
content streams must exist, and loading it must raise no damage warning; a page that fails
is a permanent error row, not a blank page. Object reads are retried when they fail transiently.

The bytes read are hashed as they are (`content_sha256`, SHA-256 of the buffer already in memory: no
second read); `first_copy(sha)`, when given, says whether another book has the same bytes, and a PDF
that does is not read further (one DOCUMENT_LEVEL work with `duplicate_of`, pipeline/duplicates.py).
"""
from __future__ import annotations

import hashlib
import io
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import numpy as np

from folioscan.failures import PERMANENT, classify, describe
from folioscan.records import DOCUMENT_LEVEL, PageWork, SourceDocument, page_label
from folioscan.retry import RetryPolicy, attempts_of, call_with_retry


@dataclass(frozen=True)
class LoadOptions:
    dpi: float = 300.0
    max_megapixels: float = 200.0
    prefer_embedded: bool = True
    max_object_mb: float = 4096.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # keep a colour scan's colour (H x W x 3 RGB) where the pipeline takes grey: the `images` export
    # (folioscan/export/images.py); a grey or bilevel scan stays grey; same pixels, same size
    color: bool = False


class PageTooLarge(ValueError):
    pass


def _check_pixels(w: int, h: int, opts: LoadOptions, what: str) -> None:
    mp = w * h / 1e6
    if mp > opts.max_megapixels:
        raise PageTooLarge(f"{what} is {w} x {h} px = {mp:.0f} MP, over the cap of {opts.max_megapixels:.0f} MP (--max-page-megapixels)")


def load_pages(doc: SourceDocument, read, opts: LoadOptions,
               first_copy: Optional[Callable[[str], tuple[Optional[str], Optional[str]]]] = None) -> Iterator[PageWork]:
    """Yield one PageWork per page; a document that cannot be opened yields one DOCUMENT_LEVEL error,
    a PDF whose bytes `first_copy` names another book for one DOCUMENT_LEVEL work `duplicate_of` it.
    `first_copy(sha)`: (that book's doc_id or None, the generation of the claim taken on the bytes,
    carried on every page as `content_claim`)."""
    def doc_error(msg: str, page_count: int = 0, kind: str = PERMANENT, tries: int = 1) -> PageWork:
        return PageWork(doc.doc_id, doc.uri, DOCUMENT_LEVEL, page_count, error=msg, error_kind=kind, attempts_made=tries)

    too_big = [m for m in doc.members if m.size > opts.max_object_mb * 1e6]
    if too_big:
        yield doc_error(f"{too_big[0].uri}: object is {too_big[0].size / 1e6:.0f} MB, over --max-object-mb")
        return
    if doc.kind == "pdf":
        try:
            data, tries = call_with_retry(lambda: read(doc.uri), opts.retry, doc.uri)
        except Exception as e:
            yield doc_error(str(e), kind=classify(e), tries=attempts_of(e))
            return
        sha = hashlib.sha256(data).hexdigest() if data else None  # a zero-byte object is an error, no content
        for work in _pdf_pages(doc, data, opts, doc_error, sha, first_copy):
            work.attempts_made, work.content_sha256 = tries, sha
            yield work
    else:
        yield from _image_pages(doc, read, opts)


def _pdf_pages(doc, data: bytes, opts: LoadOptions, doc_error, sha: Optional[str], first_copy) -> Iterator[PageWork]:
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
        try:
            n = pdf.page_count
        except Exception as e:  # a page tree lost to truncation
            yield doc_error(f"{doc.uri}: damaged PDF: {describe(e)}")
            return
        if n == 0:
            yield doc_error(f"{doc.uri}: PDF has no pages")
            return
        first, claim = first_copy(sha) if first_copy is not None else (None, None)
        if first is not None:
            yield PageWork(doc.doc_id, doc.uri, DOCUMENT_LEVEL, n, duplicate_of=first)
            return
        for i in range(n):
            t0 = time.perf_counter()
            work = PageWork(doc.doc_id, doc.uri, i, n, content_claim=claim)
            try:
                _damage_warnings()  # start the page with an empty warning buffer
                page = pdf.load_page(i)
                if pdf.is_repaired:
                    _check_page_intact(pdf, i, page)
                img, dpi, origin, work.pdf_transform = _page_image(pdf, page, opts)
                if pdf.is_repaired and (damage := _damage_warnings()):
                    raise DamagedPage(f"damaged PDF (MuPDF repaired the file): {damage}")
                work.image, work.dpi, work.image_origin = img, dpi, origin
                work.source_height, work.source_width = img.shape[:2]
            except Exception as e:
                where = f"{doc.uri} {page_label(i)}"
                work.error = f"{where}: {type(e).__name__}: {e}" if not isinstance(e, (PageTooLarge, DamagedPage)) else f"{where}: {e}"
                work.error_kind = PERMANENT
            work.load_ms = (time.perf_counter() - t0) * 1000
            yield work


class DamagedPage(ValueError):
    pass


# MuPDF warnings that mean a page's own content was lost; page-tree complaints concern the whole
# file (and come with every page of a repaired one), so they do not single out a page
_DAMAGE = re.compile(r"truncated|cannot load|not a stream|Length incorrect|cannot find object|missing|syntax error|premature",
                     re.IGNORECASE)


def _damage_warnings() -> str:
    import pymupdf

    lines = pymupdf.TOOLS.mupdf_warnings(reset=True).splitlines()
    return "; ".join(sorted({l.strip() for l in lines if _DAMAGE.search(l) and "page tree" not in l}))


def _check_page_intact(pdf, i: int, page) -> None:
    xref = pdf.page_xref(i)
    if not (0 < xref < pdf.xref_length()) or "/Page" not in pdf.xref_object(xref, compressed=True):
        raise DamagedPage("damaged PDF (MuPDF repaired the file): the page object is missing, the file is truncated")
    lost = [c for c in page.get_contents() if not pdf.xref_is_stream(c)]
    if lost:
        raise DamagedPage(f"damaged PDF (MuPDF repaired the file): content stream(s) {lost} missing")


def _page_image(pdf, page, opts: LoadOptions) -> tuple[np.ndarray, float, str, tuple]:
    if opts.prefer_embedded:
        embedded = _full_page_image(pdf, page, opts)
        if embedded is not None:
            return embedded
    import pymupdf

    rect = page.rect
    w, h = int(rect.width * opts.dpi / 72), int(rect.height * opts.dpi / 72)
    _check_pixels(w, h, opts, f"page rendered at {opts.dpi:.0f} dpi")
    pix = page.get_pixmap(dpi=int(opts.dpi), colorspace=pymupdf.csRGB if opts.color else pymupdf.csGRAY, alpha=False)
    # the pixmap shows the page as displayed (rotation applied); text goes in unrotated page space
    to_page = pymupdf.Matrix(rect.width / pix.width, 0, 0, rect.height / pix.height, rect.x0, rect.y0) * page.derotation_matrix
    return _pix_to_array(pix, opts.color), opts.dpi, "rendered", (to_page.a, to_page.c, to_page.e, to_page.b, to_page.d, to_page.f)


def _full_page_image(pdf, page, opts: LoadOptions) -> Optional[tuple[np.ndarray, float, str, tuple]]:
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
        colored = opts.color and pix.colorspace is not None and pix.colorspace.n > 1
        pix = pymupdf.Pixmap(pymupdf.csRGB if colored else pymupdf.csGRAY, pix)
    gray = _pix_to_array(pix, opts.color)
    dpi = w / (rect.width / 72.0)
    to_page = (bbox.width / w, 0.0, bbox.x0, 0.0, bbox.height / h, bbox.y0)  # where the image is drawn
    return gray, round(dpi, 1), "embedded", to_page


def _pix_to_array(pix, color: bool = False) -> np.ndarray:
    """Grey pixels, or with `color` an RGB array for a pixmap with colour in it (grey stays grey)."""
    import pymupdf

    if not color or (pix.colorspace and pix.colorspace.n == 1) or pix.colorspace is None:
        return _pix_to_gray(pix)
    if pix.alpha or pix.colorspace.n != 3:
        pix = pymupdf.Pixmap(pymupdf.csRGB, pix if not pix.alpha else pymupdf.Pixmap(pix, 0))
    arr = np.frombuffer(pix.samples, dtype=np.uint8).reshape(pix.height, pix.stride)[:, : pix.width * 3]
    return _grey_if_no_colour(arr.reshape(pix.height, pix.width, 3))


def _grey_if_no_colour(rgb: np.ndarray) -> np.ndarray:
    """An RGB array whose three channels are equal (black text rendered in RGB, a grey scan stored as
    RGB) as the grey array it is; a colour one as a contiguous copy."""
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
        return np.ascontiguousarray(rgb[..., 0])
    return np.ascontiguousarray(rgb)


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
    content = hashlib.sha256()  # over each file's sha256, in page order; complete at the last page
    whole = True
    for m_i, (member, (frames, count_error)) in enumerate(zip(doc.members, counts)):
        t0 = time.perf_counter()
        im, error, kind, tries = None, count_error, PERMANENT if count_error else None, 1
        if error is None:
            try:
                data, tries = call_with_retry(lambda: read(member.uri), opts.retry, member.uri)
                content.update(hashlib.sha256(data).digest())
                if not data:
                    raise ValueError("zero-byte object")
                im = Image.open(io.BytesIO(data))
            except Exception as e:
                error, kind, tries = f"{member.uri}: cannot open image: {e}", classify(e), attempts_of(e)
        whole = whole and error is None
        for k in range(frames):
            work = PageWork(doc.doc_id, doc.uri, index, n, image_origin="image-file", error=error, error_kind=kind,
                            attempts_made=tries)
            index += 1
            if im is not None:
                _decode_frame(im, k, member.uri, opts, work)
            work.load_ms = (time.perf_counter() - t0) * 1000
            t0 = time.perf_counter()
            if whole and m_i == len(doc.members) - 1 and k == frames - 1:
                work.content_sha256 = content.hexdigest()
            yield work


_COLOR_MODES = ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "P", "PA")


def _rgb8(im) -> np.ndarray:
    """8-bit RGB, or grey where the image holds no colour."""
    return _grey_if_no_colour(np.asarray(im.convert("RGB")))


def _gray8(im) -> np.ndarray:
    """8-bit grey. Pillow's convert("L") clips 16-bit samples at 255 (a grey page turns almost all
    white), so deep images are scaled instead."""
    if im.mode.startswith("I;16") or (im.mode == "I" and im.getextrema()[1] > 255):
        return (np.asarray(im, dtype=np.uint32) // 257).astype(np.uint8)
    return np.asarray(im.convert("L")).copy()


def _decode_frame(im, k: int, uri: str, opts: LoadOptions, work: PageWork) -> None:
    try:
        im.seek(k)
        _check_pixels(im.width, im.height, opts, f"{uri} frame {k + 1}")
        work.image = _rgb8(im) if opts.color and im.mode in _COLOR_MODES else _gray8(im)
        work.source_height, work.source_width = work.image.shape[:2]
        xdpi = (im.info.get("dpi") or (0, 0))[0]
        work.dpi = float(xdpi) if xdpi else 0.0
    except Exception as e:
        work.error = f"{uri} frame {k + 1}: {e}"  # frames counted from 1, like pages
