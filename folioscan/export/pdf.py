"""Searchable PDF, one per book: the original scan pages with an invisible text layer (render mode 3).

A PDF book is copied as it is (its scan images untouched) and each page gets its words; an image
book becomes one page per image at its DPI. A page that already carries text (born-digital) keeps
its own and gets no second layer; the document's metadata records how many pages got a layer.

The layer is written the way OCRmyPDF's hOCR renderer and Tesseract's PDF renderer write theirs,
so that a PDF reader's text extraction (pdftotext, copy-paste, phrase search) gets the book's lines
back: one text line per OCR line, its words on one baseline at one font size, each word stretched
horizontally (`Tz`) to the width of its box, a space between words stretched over the gap, lines
in the order the records give them (blocks in reading order, lines of a block in order). A reader
groups glyphs into lines by baseline and size; words drawn each at its own size and baseline (this
module's first version) came back as a scatter of fragments once a page was a little askew.

Where the line lies: its box and its words' boxes on the cleaned page (upright, deskewed, dewarped),
carried back through the page's cleaning transforms (`transforms`, the same mapping as `box_source`)
and the page's image placement into PDF space, so the text turns with the scan: a page scanned
sideways (or one the PDF itself rotates) gets sideways text. A scan a few degrees askew does not get
tilted text, though: poppler (pdftotext, and the many tools built on it) breaks a word whose
baseline drifts by half a point and a line whose words drift by half the font size, so tilted
lines come back in pieces (measured on tests' synthetic pages: a page 1.5 degrees askew read at
10% CER with tilted lines, a sideways page 2 degrees off at 59%; 0% and 0.2% along the axis). A line within SNAP_DEGREES
of the page's axes is written along the axis, its baseline through the middle of its ink, and each
word may sit up to FOLLOW (0.2) x the font size above or below it to follow the tilt, inside what
poppler still reads as one line; on an upright page that is no offset at all. Beyond SNAP_DEGREES
(text set at an angle) the line keeps its tilt. The records carry no baseline (Tesseract finds
one, but it is not stored), so it is taken from the words' bottoms on the cleaned page (most words
end on it, those with descenders lower); the font size puts the font's ascent at the top of the
line box.

The font is a glyphless Type0 font (folioscan/export/glyphless.py): every character one invisible
glyph half an em wide, its code the character's UTF-16 unit and mapped back to it by ToUnicode, so
every character the OCR recorded comes back out (long s, ligatures, Greek, Cyrillic, ...), never a
.notdef glyph (which PDF/A forbids), and 560 bytes of font program per book.

What it is built on: PyMuPDF, already a dependency, at its object level (new objects and streams,
the page's /Contents and /Resources), with the content stream written here (about 40 lines).
OCRmyPDF's renderer would need pikepdf and OCRmyPDF itself (large, with its own PDF pipeline and
Ghostscript/Tesseract expectations) and takes hOCR files, while the geometry here starts from the
records' boxes and cleaning transforms; pikepdf alone would be a second PDF library for what
PyMuPDF already does (copying the scans untouched, writing objects and streams).

`pdfa`: the same PDF passed through Ghostscript's PDF/A-2b conversion (`to_pdfa`); docs/exports.md says what
that changes and that nothing here validates the result.
"""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from itertools import groupby
from typing import Iterator, Optional

import numpy as np

from folioscan.export import glyphless
from folioscan.export.dataset import Book, ExportContext
from folioscan.workers.prep import transform as tf

log = logging.getLogger(__name__)
FONT = "FolioText"
DEFAULT_DPI = 300.0  # for image files that do not say
# a line tilted this little from the page's axes (a skewed scan) is written along the axis: a reader
# (poppler's pdftotext, at least) takes tilted text apart into fragments; beyond, it keeps its tilt
SNAP_DEGREES = 10.0
# how far (x font size) a word of a skewed line may sit off the line's baseline to follow its ink:
# poppler puts words within half the font size of a line's first word's baseline on that line
FOLLOW = 0.2
# the least gap (x font size) between two words: a tighter one (a thin space before "?", words the
# engine's boxes bring close) is read as no space (pdftotext -raw wants more than 0.15, measured);
# the left word is narrowed, by at most half its width
MIN_GAP = 0.25


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
    font, shown = None, set()
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
        to_user = _to_user(page, to_pdf)
        lines = [placed for row in rows for placed in _page_lines(row, to_user)]
        if not lines:
            continue
        if font is None:
            font = glyphless.add_to(doc)
        _add_layer(doc, page, font, text_layer(lines))
        shown.update(c for line in lines for *_, text in line.words for c in text)
        layered += 1
    if font is not None:
        glyphless.map_unicode(doc, font, shown)
    doc.set_metadata({**(doc.metadata or {}), "producer": f"folioscan {ctx.version}",
                      "subject": f"folioscan text layer on {layered} pages; {own_text} pages kept their own text"})
    return doc.tobytes(garbage=3, deflate=True)


@dataclass
class Line:
    """A text line in PDF user space (y up): the baseline starts at `origin` and runs along `u`;
    `up` is the unit vector from the baseline towards the top of the text; `words` are (offset of
    the word's left end along the baseline, its offset above the baseline, its width, text)."""

    origin: tuple[float, float]
    u: tuple[float, float]
    up: tuple[float, float]
    size: float
    words: list[tuple[float, float, float, str]]  # offset along, offset up, width, text


def _to_user(page, to_pdf):
    """Loaded-image pixels -> PDF user space of `page`: the page's placement (unrotated page space,
    y down, as PyMuPDF's Shape takes it), then the page's own coordinates (y up, cropbox offset)."""
    a, b, tx, c, d, ty = to_pdf
    height = page.mediabox_size.y
    cx, cy = page.cropbox_position

    def to_user(pts: np.ndarray) -> np.ndarray:
        x = a * pts[:, 0] + b * pts[:, 1] + tx
        y = c * pts[:, 0] + d * pts[:, 1] + ty
        return np.stack([x + cx, height - y - cy], axis=1)

    return to_user


def _page_lines(row: dict, to_user) -> Iterator[Line]:
    chain = tf.from_json(row.get("transforms"))
    for line in row.get("lines") or []:
        placed = place_line(line, lambda pts: to_user(tf.to_source(chain, pts)))
        if placed:
            yield placed


def text_band(boxes: list, top: float, bottom: float) -> tuple[float, float]:
    """The line's text band on the cleaned page (y down): (top of its tallest letters, baseline).
    Only words of about the line's usual height count: not a drop capital or a tall bracket, which
    stretch the line box, nor dashes, commas and quotes. The baseline is the lower third of their
    bottoms (most words end on it, those with descenders lower); the top, the highest of their
    tops. A line without such words falls back on its box."""
    heights = sorted(float(b[3] - b[1]) for b in boxes)
    usual = heights[len(heights) // 2] if heights else 0.0
    words = [b for b in boxes if 0.5 * usual <= b[3] - b[1] <= 1.6 * usual] if usual > 0 else []
    if not words:
        return top, bottom
    ends = sorted(float(b[3]) for b in words)
    base = ends[(len(ends) - 1) // 3]
    high = min(float(b[1]) for b in words)
    return (high, base) if base - high > 0.2 * (bottom - top) else (top, bottom)


def _boxed_runs(words: list[dict]) -> list[tuple[str, list]]:
    """(text, box) per boxed word, the unboxed words' text joined to a neighbour's: the one before,
    or for words before the first boxed one, the first. No boxed word: []."""
    out: list[list] = []
    waiting: list[str] = []
    for w in words:
        text = (w.get("text") or "").strip()
        if not text:
            continue
        if w.get("box"):
            out.append([" ".join([*waiting, text]), w["box"]])
            waiting = []
        elif out:
            out[-1][0] += " " + text
        else:
            waiting.append(text)
    return [(t, b) for t, b in out]


def place_line(line: dict, to_user) -> Optional[Line]:
    """A line's geometry in PDF user space. `to_user` maps cleaned-page points to PDF user space.
    A line whose engine located no words is placed as one word over its box; a line without a box
    (VLM page text) has nowhere to go and is left out. A word without a box in a line with boxed
    words (a VLM word placed on its line only, workers/boxes.py) is written with the boxed word
    before it (the first boxed word, at the line's start), so every word is in the layer, in order."""
    words = _boxed_runs(line.get("words") or [])
    box = line.get("box")
    if not words:
        text = " ".join((line.get("text") or "").split())
        if not box or not text:
            return None
        words = [(text, box)]
    if not box:
        box = (min(b[0] for _, b in words), min(b[1] for _, b in words), max(b[2] for _, b in words), max(b[3] for _, b in words))
    x0, y0, x1, y1 = (float(v) for v in box)
    if y1 - y0 <= 0:
        return None
    y0, base = text_band([b for _, b in words], y0, y1)
    ends = [(float(b[0]), base) for _, b in words] + [(float(b[2]), base) for _, b in words]
    pts = to_user(np.array(ends + [(x0, base), (x1, base), (x0, y0)], dtype=np.float64))
    start, end, top = pts[-3], pts[-2], pts[-1]
    along = end - start
    length = float(np.hypot(*along))
    if length < 1e-3:
        return None
    u = along / length
    up = np.array([-u[1], u[0]])  # a quarter turn anticlockwise: above the baseline in y-up space
    if float(np.dot(top - start, up)) < 0:
        up = -up  # a mirrored placement; never made by the cleaning steps
    ascent = float(np.dot(top - start, up))
    size = ascent / (glyphless.ASCENT / glyphless.UNITS)
    if size < 0.05:
        return None
    n = len(words)
    lefts, rights = pts[:n], pts[n:2 * n]
    tilt = np.degrees(np.arctan2(u[1], u[0]))
    quarter = int(np.round(tilt / 90.0)) % 4
    if abs(tilt - 90.0 * np.round(tilt / 90.0)) <= SNAP_DEGREES:  # a skewed scan: the page's axis, not the ink's tilt
        u = np.array([(1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0)][quarter])
        up = np.array([-u[1], u[0]]) * (1.0 if np.dot(up, [-u[1], u[0]]) >= 0 else -1.0)
    # the baseline goes through the words' mean offset (a dewarped line comes back curved, a skewed
    # one tilted); each word follows its ink within FOLLOW x size of it
    origin = start + float(np.mean(np.concatenate([lefts - start, rights - start]) @ up)) * up
    reach = FOLLOW * size
    placed = []
    for (text, _), left, right in zip(words, lefts, rights):
        a, b = float(np.dot(left - origin, u)), float(np.dot(right - origin, u))
        rise = min(max(float(np.dot((left + right) / 2 - origin, up)), -reach), reach)
        if b > a:
            placed.append([a, rise, b - a, text])
    if not placed:
        return None
    for word, after in zip(placed, placed[1:]):  # a gap a reader sees as a space between the two words
        short = MIN_GAP * size - (after[0] - word[0] - word[2])
        if short > 0:
            word[2] = max(word[2] - short, 0.5 * word[2])
    placed = [tuple(w) for w in placed]
    return Line((float(origin[0]), float(origin[1])), (float(u[0]), float(u[1])), (float(up[0]), float(up[1])), size, placed)


def _n(v: float, digits: int = 3) -> str:
    s = f"{v:.{digits}f}".rstrip("0").rstrip(".")
    return "0" if s in ("", "-0") else s


def text_layer(lines: list[Line]) -> bytes:
    """The content stream: invisible text, a text line per OCR line."""
    space = glyphless.encode(" ").hex()
    out = ["q", "BT", "3 Tr"]
    for line in lines:
        out.append(f"/{FONT} {_n(line.size)} Tf")
        out.append(" ".join(_n(v, 5) for v in (*line.u, *line.up)) + f" {_n(line.origin[0])} {_n(line.origin[1])} Tm")
        at = (0.0, 0.0)  # where the last word started, in the line's text space (Td moves from there)
        for i, (offset, rise, width, text) in enumerate(line.words):
            natural = glyphless.width(text, line.size)
            if natural <= 0:
                continue
            out.append(f"{_n(offset - at[0])} {_n(rise - at[1])} Td {_n(100 * width / natural, 2)} Tz "
                       f"<{glyphless.encode(text).hex()}> Tj")
            at = (offset, rise)
            if i + 1 < len(line.words):  # the space, stretched over the gap to the next word
                gap = max(line.words[i + 1][0] - offset - width, 0.02 * line.size)
                out.append(f"{_n(100 * gap / glyphless.width(' ', line.size), 2)} Tz <{space}> Tj")
    out += ["ET", "Q"]
    return "\n".join(out).encode("ascii")


def _add_font(doc, page, font: int) -> None:
    """/Resources/Font/FolioText of the page -> the font. Each dictionary on the way may be an
    object of its own (shared by pages: adding our font to it is harmless) or inline; resources
    inherited from the page tree are first referenced from the page itself."""
    owner, key = page.xref, "Resources"
    res = doc.xref_get_key(owner, key)
    if res[0] == "null":
        parent = doc.xref_get_key(page.xref, "Parent")
        while parent[0] == "xref" and res[0] == "null":
            xref = int(parent[1].split()[0])
            res, parent = doc.xref_get_key(xref, "Resources"), doc.xref_get_key(xref, "Parent")
        doc.xref_set_key(page.xref, "Resources", res[1] if res[0] in ("xref", "dict") else "<<>>")
    if res[0] == "xref":
        owner, key = int(res[1].split()[0]), ""
    fonts = doc.xref_get_key(owner, f"{key}/Font".lstrip("/"))
    if fonts[0] == "xref":
        owner, key = int(fonts[1].split()[0]), ""
    else:
        key = f"{key}/Font".lstrip("/")
    doc.xref_set_key(owner, f"{key}/{FONT}".lstrip("/"), f"{font} 0 R")


def _add_layer(doc, page, font: int, content: bytes) -> None:
    """Append `content` to the page's contents (after wrapping what is there in q/Q, so the page's
    own graphics state cannot leak into it) and the font to the page's resources."""
    _add_font(doc, page, font)
    page.wrap_contents()
    xref = doc.get_new_xref()
    doc.update_object(xref, "<<>>")
    doc.update_stream(xref, content, compress=True)
    contents = page.get_contents()
    doc.xref_set_key(page.xref, "Contents", "[" + " ".join(f"{x} 0 R" for x in [*contents, xref]) + "]")


def _images_pdf(book: Book, ctx: ExportContext):
    """A new PDF with one page per image of an image-folder book (frames of a TIFF each a page),
    and each page's placement: image pixels -> PDF points."""
    import pymupdf
    from PIL import Image

    source = ctx.source_document(book)
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

