"""hOCR 1.2 (HTML), one file per book: ocr_page > ocr_carea > ocr_par > ocr_line > ocrx_word,
with `bbox` in pixels of the scan as loaded and `x_wconf` (0-100) per word and line.

A page whose engine located no words or lines (VLM page text) gets its lines without bbox and no
ocrx_word: nothing is invented. Every string from outside (file name, OCR text) goes through
`folioscan.text.safe.XmlText` before it is escaped: the file is XHTML, so a character XML cannot
hold becomes U+FFFD, and a `folioscan-replaced-characters` meta says how many did.
"""
from __future__ import annotations

from html import escape
from typing import Iterator, Optional

from folioscan.export import layout
from folioscan.export.dataset import Book, ExportContext
from folioscan.records import page_number
from folioscan.text.safe import XmlText

CAPABILITIES = "ocr_page ocr_carea ocr_par ocr_line ocrx_word ocrp_wconf"


def write_book(book: Book, ctx: ExportContext) -> Iterator[tuple[str, bytes]]:
    clean = XmlText()
    yield f"{book.name}.html", book_html(book, ctx, clean).encode("utf-8")
    clean.log(f"{book.doc['source_uri']}: hocr")


def _title(b: Optional[layout.Box], conf=None, extra: str = "") -> str:
    parts = [extra] if extra else []
    if b:
        parts.append("bbox {} {} {} {}".format(*b))
    if conf is not None:
        parts.append(f"x_wconf {round(float(conf) * 100)}")
    return escape("; ".join(parts), quote=True)


def book_html(book: Book, ctx: ExportContext, clean: Optional[XmlText] = None) -> str:
    """The book's hOCR; `clean` (a fresh one when not given) counts the characters it replaced."""
    clean = clean if clean is not None else XmlText()
    first = book.pages[0] if book.pages else {}
    system = f"folioscan {ctx.version}" + (f" ({first.get('engine')} {first.get('engine_version')})" if first else "")
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" '
           '"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">',
           '<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">', "<head>",
           f"<title>{clean.escape(book.doc['source_uri'])}</title>",
           '<meta http-equiv="Content-Type" content="text/html;charset=utf-8"/>',
           f'<meta name="ocr-system" content="{clean.escape(system)}"/>',
           f'<meta name="ocr-capabilities" content="{CAPABILITIES}"/>',
           f'<meta name="ocr-number-of-pages" content="{len(book.pages)}"/>']
    body = []
    for page in book.pages:
        body.extend(_page(page, clean))
    if clean.replaced:  # known only once the whole book is written
        out.append(f'<meta name="folioscan-replaced-characters" content="{clean.replaced}"/>')
    out += ["</head>", "<body>", *body, "</body>", "</html>", ""]
    return "\n".join(out)


def page_id(page: dict) -> str:
    """The id of the page's ocr_page: `page_3`, `page_3_left` (IIIF links to it as a fragment)."""
    return f"page_{page_number(page['page_index'])}" + (f"_{page['side']}" if page.get("side") else "")


def _page(page: dict, clean: XmlText) -> list[str]:
    """One ocr_page. Its id says the page as people count it (`page_3`, `page_3_left`), like `show`,
    the report and the ALTO file names; `ppageno` is the hOCR spec's physical page number, on which
    "the front cover is page number 0": the 0-based page_index. The spec also wants it unique, so
    the two halves of a split spread (one scan) carry none."""
    n = page_id(page)[len("page_"):]
    size = layout.page_size(page)
    image = f'image "{clean(page["source_uri"])}"'
    if not page.get("side"):
        image += f"; ppageno {page['page_index']}"
    if page.get("dpi"):
        image += f"; scan_res {round(page['dpi'])} {round(page['dpi'])}"
    out = [f'<div class="ocr_page" id="page_{n}" title="{_title(size and (0, 0, *size), extra=image)}">']
    blocks = layout.blocks(page) if page["status"] == "ok" else []
    for bi, lines in enumerate(blocks, 1):
        out.append(f'<div class="ocr_carea" id="block_{n}_{bi}" '
                   f'title="{_title(layout.union(layout.box(l.get("box_source")) for l in lines))}">')
        pars: list[list[dict]] = []
        for line in lines:
            if not pars or line.get("paragraph") != pars[-1][0].get("paragraph"):
                pars.append([])
            pars[-1].append(line)
        for pi, par in enumerate(pars, 1):
            out.append(f'<p class="ocr_par" id="par_{n}_{bi}_{pi}" '
                       f'title="{_title(layout.union(layout.box(l.get("box_source")) for l in par))}">')
            for li, line in enumerate(par, 1):
                lid = f"line_{n}_{bi}_{pi}_{li}"
                out.append(f'<span class="ocr_line" id="{lid}" '
                           f'title="{_title(layout.box(line.get("box_source")), line.get("confidence"))}">'
                           + _words(line, lid, clean) + "</span>")
            out.append("</p>")
        out.append("</div>")
    out.append("</div>")
    return out


def _words(line: dict, lid: str, clean: XmlText) -> str:
    if not line.get("words"):
        return clean.escape(line["text"])  # the engine located no words: the line's text, no invented word boxes
    spans = [f'<span class="ocrx_word" id="{lid}_{wi}" '
             f'title="{_title(layout.box(w.get("box_source")), w.get("confidence"))}">{clean.escape(w["text"])}</span>'
             for wi, w in enumerate(line["words"], 1)]
    return " ".join(spans)
