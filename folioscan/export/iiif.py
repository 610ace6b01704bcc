"""IIIF Presentation 3 manifest, one per book: DEST/iiif/<book>/manifest.json, and its text.

A Canvas per page row, the size of the scan as loaded (`source_width` x `source_height`), painted
with the page's image from the `images` format (`image_file`). The page's text is in AnnotationPages
of `supplementing` annotations with a TextualBody, one of lines and one of words, each annotation
saying its level with the IIIF text-granularity extension (`textGranularity`: line, word) and
targeting `<canvas>#xywh=` in the scan's pixels (`box_source`). A page whose engine located no text
(box_level none: VLM page text) gets one page-level annotation on the whole canvas; a line without
a box on a located page targets the whole canvas too.

The AnnotationPages are files of their own, DEST/iiif/<book>/annotations/<page>-lines.json (and
-words, -page), which the canvas's `annotations` reference by id: a viewer fetches a page's text
when it shows the page. Embedded in the manifest they would make it about 180 kB a page (every
word an annotation, measured on old_books' book_b: BENCHMARKS.md), tens of megabytes a book that a
viewer reads before it shows anything. Mirador 4 fetches a referenced AnnotationPage by its id
(tests/test_iiif.py opens the manifest in it).

Labels: the canvas is called by its printed page number when the book text found one, else by its
1-based page number (`3 (left)` for a half of a split spread). The manifest's label is the book's
file or folder name, its metadata the `documents` row. `seeAlso`: the page's ALTO and its ocr_page
in the book's hOCR on each canvas, the book's hOCR on the manifest.

Links and ids: under `--base-url` (ctx.base_url) when one is given: absolute URLs, valid IIIF
(the `iiif-prezi3` models accept it: tests). Without one, relative references, resolved against
the manifest's own URL as JSON-LD resolves them; IIIF asks for absolute HTTP(S) URIs, and viewers
resolve them against their own page (docs/exports.md), so a manifest that will be published is
exported with --base-url. Pages that have no image (the run could not load them) have no canvas;
the metadata names them; a book without a page to show (a PDF that would not open) gets no manifest.

Every string from outside (names, OCR text) goes through `folioscan.text.safe.XmlText`: a lone
surrogate cannot be written as UTF-8 JSON, and a control character is no text a viewer can show;
each becomes U+FFFD and the manifest's metadata says how many did (over the manifest and its
annotation files).
"""
from __future__ import annotations

import json
import logging
from typing import Iterator, Optional

from folioscan.export import hocr, layout
from folioscan.export.dataset import Book, ExportContext, image_file, link, page_key, warn_missing
from folioscan.records import page_label, page_number
from folioscan.text.safe import XmlText, visible

log = logging.getLogger(__name__)

CONTEXT = ["http://iiif.io/api/extension/text-granularity/context.json", "http://iiif.io/api/presentation/3/context.json"]
ALTO_PROFILE = "http://www.loc.gov/standards/alto/ns-v4#"
HOCR_PROFILE = "http://kba.github.io/hocr-spec/1.2/"
DEPTH = 2  # DEST/iiif/<book>/manifest.json


def write_book(book: Book, ctx: ExportContext) -> Iterator[tuple[str, bytes]]:
    clean = XmlText()
    doc, annotation_files = manifest(book, ctx, clean)
    if not doc["items"]:  # IIIF wants a canvas at least; the book's rows say why it has no page to show
        log.info("%s: iiif: no page with an image, no manifest", visible(book.doc["source_uri"]))
        return
    for rel, page in annotation_files.items():
        yield f"{book.name}/{rel}", _json(page)
    clean.log(f"{book.doc['source_uri']}: iiif")
    shown = [p for p in book.pages if layout.page_size(p)]  # a canvas each: its image, ALTO and hOCR page
    warn_missing(ctx, [("hocr", f"{book.name}.html"), *(("images", image_file(book, p)) for p in shown),
                       *(("alto", f"{book.name}/{page_key(p)}.xml") for p in shown)])
    yield f"{book.name}/manifest.json", _json(doc)  # last: a manifest is never there without its text


# it points at the images, ALTO and hOCR exports' files: an export writing those too runs it after them
write_book.links_to_others = True


def _json(value: dict) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _lang(values, key: str = "none") -> dict:
    return {key: [str(v) for v in values]}


def _entry(label: str, value) -> dict:
    return {"label": _lang([label], "en"), "value": _lang([value])}


def canvas_label(page: dict) -> str:
    """The printed page number ("xiv", "35") when there is one, else the page as folioscan counts it."""
    printed = (page.get("printed_page_number") or "").strip()
    if printed:
        return printed
    return f"{page_number(page['page_index'])}" + (f" ({page['side']})" if page.get("side") else "")


def manifest(book: Book, ctx: ExportContext, clean: Optional[XmlText] = None) -> tuple[dict, dict[str, dict]]:
    """The book's manifest, and its AnnotationPages by their path under DEST/iiif/<book>/; `clean`
    (a fresh one when not given) counts replaced characters."""
    clean = clean if clean is not None else XmlText()
    doc = book.doc
    name = doc["source_uri"].rstrip("/").rsplit("/", 1)[-1]
    base = lambda rel: link(ctx, "iiif", f"{book.name}/{rel}", DEPTH)  # noqa: E731
    canvases, without, files = [], [], {}
    for page in book.pages:
        if layout.page_size(page):
            canvases.append(_canvas(book, page, ctx, base(f"canvas/{page_key(page)}"), clean))
            refs = []
            for kind, annotation_page in text_pages(page, canvases[-1]["id"], clean).items():
                rel = f"annotations/{page_key(page)}-{kind}.json"
                files[rel] = {"@context": CONTEXT, "id": base(rel), **annotation_page}
                refs.append({"id": base(rel), "type": "AnnotationPage", "label": annotation_page["label"]})
            if refs:
                canvases[-1]["annotations"] = refs
        else:
            without.append(page_label(page["page_index"], page.get("side")))
    meta = [_entry("Source", clean(doc["source_uri"])),
            _entry("Pages", f"{doc.get('pages_out')} ({doc.get('pages_ok')} read, {doc.get('pages_blank')} blank, "
                            f"{doc.get('pages_failed')} failed)"),
            _entry("Status", doc.get("status"))]
    if doc.get("error"):
        meta.append(_entry("Error", clean(doc["error"])))
    for label, key in (("Language", "language"), ("OCR engine", "engine")):
        if doc.get(key):
            meta.append(_entry(label, doc[key]))
    for label, key in (("Mean OCR confidence", "mean_confidence"), ("OCR quality", "ocr_quality")):
        if doc.get(key) is not None:
            meta.append(_entry(label, f"{doc[key]:.3f}"))
    when = doc.get("processed_at")
    if when is not None:
        meta.append(_entry("Processed", when.isoformat() if hasattr(when, "isoformat") else when))
    meta.append(_entry("Produced by", f"folioscan {ctx.version}"))
    if without:
        meta.append(_entry("Pages without an image", "; ".join(without) + " (not loaded by the run: no canvas)"))
    out = {
        "@context": CONTEXT,
        "id": base("manifest.json"),
        "type": "Manifest",
        "label": _lang([clean(name)]),
        "metadata": meta,
        "seeAlso": [_hocr(book, ctx, None)],
        "items": canvases,
    }
    if clean.replaced:  # known once every string is through
        out["metadata"].append(_entry("Replaced characters", clean.note))
    return out, files


def _hocr(book: Book, ctx: ExportContext, page: Optional[dict]) -> dict:
    return {"id": link(ctx, "hocr", f"{book.name}.html", DEPTH) + (f"#{hocr.page_id(page)}" if page else ""),
            "type": "Text", "format": "text/vnd.hocr+html", "profile": HOCR_PROFILE,
            "label": _lang(["hOCR 1.2" + (" (this page)" if page else " (the book)")], "en")}


def _canvas(book: Book, page: dict, ctx: ExportContext, cid: str, clean: XmlText) -> dict:
    w, h = layout.page_size(page)
    painting = {"id": f"{cid}/painting", "type": "AnnotationPage", "items": [{
        "id": f"{cid}/painting/image", "type": "Annotation", "motivation": "painting", "target": cid,
        "body": {"id": link(ctx, "images", image_file(book, page), DEPTH), "type": "Image", "format": "image/jpeg",
                 "width": w, "height": h}}]}
    canvas = {"id": cid, "type": "Canvas", "label": _lang([clean(canvas_label(page))]), "width": w, "height": h,
              "items": [painting],
              "seeAlso": [{"id": link(ctx, "alto", f"{book.name}/{page_key(page)}.xml", DEPTH), "type": "Dataset",
                           "format": "application/xml", "profile": ALTO_PROFILE, "label": _lang(["ALTO 4.4"], "en")},
                          _hocr(book, ctx, page)]}
    return canvas


def _xywh(b) -> Optional[str]:
    if not b or b[2] <= b[0] or b[3] <= b[1]:
        return None
    return f"{b[0]},{b[1]},{b[2] - b[0]},{b[3] - b[1]}"


def _text(aid: str, target: str, text: str, granularity: str, language: Optional[str], clean: XmlText) -> dict:
    body = {"type": "TextualBody", "value": clean(text), "format": "text/plain"}
    if language:
        body["language"] = language
    return {"id": aid, "type": "Annotation", "motivation": "supplementing", "textGranularity": granularity,
            "body": body, "target": target}


def text_pages(page: dict, cid: str, clean: XmlText) -> dict[str, dict]:
    """The page's text annotations by kind: an AnnotationPage of `lines` and one of `words`, or one
    `page` annotation for text the engine located nowhere; {} for a page without text."""
    if page["status"] != "ok" or not (page.get("text") or "").strip():
        return {}
    lang = page.get("language")
    if page.get("box_level") == "none" or not page.get("lines"):
        return {"page": {"type": "AnnotationPage", "label": _lang(["page text"], "en"),
                         "items": [_text(f"{cid}/text/page", cid, page["text"], "page", lang, clean)]}}
    lines, words = [], []
    for li, line in enumerate(page["lines"]):
        where = _xywh(layout.box(line.get("box_source")))
        lines.append(_text(f"{cid}/line/{li}", f"{cid}#xywh={where}" if where else cid, line["text"], "line", lang, clean))
        for wi, word in enumerate(line.get("words") or []):
            at = _xywh(layout.box(word.get("box_source")))
            if at and (word.get("text") or "").strip():
                words.append(_text(f"{cid}/word/{li}.{wi}", f"{cid}#xywh={at}", word["text"], "word", lang, clean))
    out = {"lines": {"type": "AnnotationPage", "label": _lang(["lines"], "en"), "items": lines}}
    if words:
        out["words"] = {"type": "AnnotationPage", "label": _lang(["words"], "en"), "items": words}
    return out
