"""ALTO 4.4 XML, one file per page, coordinates in pixels of the scan as loaded.

Page WIDTH/HEIGHT are the loaded image's; PrintSpace encloses the text; TextBlock / TextLine /
String (CONTENT, WC) with SP between words and HYP for a line-end hyphen. The Description names
folioscan's version, the engine and its settings, and the cleaning steps that moved pixels.
Validated against the vendored ALTO 4.4 schema (`validate`). Every string from outside (file name,
OCR text, error) goes through `folioscan.text.safe.XmlText`: a character XML cannot hold becomes
U+FFFD, and the Description says how many did.
"""
from __future__ import annotations

import functools
import json
import os
from typing import Iterator, Optional

from folioscan.export import layout
from folioscan.export.dataset import Book, ExportContext, page_key
from folioscan.records import page_number
from folioscan.text.safe import XmlText

NS = "http://www.loc.gov/standards/alto/ns-v4#"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
XLINK = "http://www.w3.org/1999/xlink"
SCHEMA_LOCATION = f"{NS} http://www.loc.gov/alto/v4/alto-4-4.xsd"
SCHEMAS = os.path.join(os.path.dirname(__file__), "schemas")


def write_book(book: Book, ctx: ExportContext) -> Iterator[tuple[str, bytes]]:
    replaced = XmlText()
    for page in book.pages:
        clean = XmlText()
        yield f"{book.name}/{page_key(page)}.xml", page_xml(book, page, ctx, clean)
        replaced.replaced += clean.replaced
    replaced.log(f"{book.doc['source_uri']}: alto")


def _coords(el, b: Optional[layout.Box]) -> None:
    if b:
        el.set("HPOS", str(b[0]))
        el.set("VPOS", str(b[1]))
        el.set("WIDTH", str(b[2] - b[0]))
        el.set("HEIGHT", str(b[3] - b[1]))


def _conf(value) -> Optional[str]:
    return None if value is None else f"{min(max(float(value), 0.0), 1.0):.3f}"


def _description(root, book: Book, page: dict, ctx: ExportContext, clean: XmlText):
    from lxml import etree

    def E(parent, tag: str, text=None, **attrs):
        el = etree.SubElement(parent, f"{{{NS}}}{tag}", **attrs)
        if text is not None:
            el.text = clean(text)
        return el

    desc = E(root, "Description")
    E(desc, "MeasurementUnit", "pixel")
    info = E(desc, "sourceImageInformation")
    E(info, "fileName", page["source_uri"])
    E(info, "documentIdentifier", page["doc_id"])
    config = ctx.run_config(page.get("run_id"))
    steps = [t["step"] for t in json.loads(page.get("transforms") or "[]")]
    when = book.doc.get("processed_at") or ctx.created
    proc = E(desc, "Processing", ID="OCR_1")
    E(proc, "processingCategory", "contentGeneration")
    E(proc, "processingDateTime", when.isoformat() if hasattr(when, "isoformat") else str(when))
    E(proc, "processingStepDescription",
      f"OCR by {page.get('engine')} {page.get('engine_version')}; cleaning steps that moved pixels: "
      f"{', '.join(steps) or 'none'}; coordinates are pixels of the page image as loaded")
    settings = {"engine": config.get("engine") or {"kind": page.get("engine")}, "prep": config.get("prep"),
                "dpi": page.get("dpi"), "run_id": page.get("run_id")}
    E(proc, "processingStepSettings", json.dumps(settings, sort_keys=True, default=str))
    sw = E(proc, "processingSoftware")
    E(sw, "softwareCreator", "folioscan")
    E(sw, "softwareName", "folioscan")
    E(sw, "softwareVersion", ctx.version)
    E(sw, "applicationDescription", f"OCR engine: {page.get('engine')} {page.get('engine_version')}")
    return proc


def page_xml(book: Book, page: dict, ctx: ExportContext, clean: Optional[XmlText] = None) -> bytes:
    """One page's ALTO; `clean` (a fresh one when not given) counts the characters it replaced."""
    from lxml import etree

    clean = clean if clean is not None else XmlText()
    root = etree.Element(f"{{{NS}}}alto", nsmap={None: NS, "xsi": XSI, "xlink": XLINK})
    root.set(f"{{{XSI}}}schemaLocation", SCHEMA_LOCATION)
    proc = _description(root, book, page, ctx, clean)
    lay = etree.SubElement(root, f"{{{NS}}}Layout")
    pid = f"page_{page_key(page).replace('-', '_')}"
    el = etree.SubElement(lay, f"{{{NS}}}Page", ID=pid, PHYSICAL_IMG_NR=str(page_number(page["page_index"])), PROCESSINGREFS="OCR_1")
    size = layout.page_size(page)
    if size:
        el.set("WIDTH", str(size[0]))
        el.set("HEIGHT", str(size[1]))
    if page["status"] != "ok":
        el.set("PAGECLASS", page["status"])  # blank | error: an empty page, with the reason
        if page.get("error"):
            el.set("QUALITY_DETAIL", clean(page["error"][:500]))
    if _conf(page.get("confidence")):
        el.set("PC", _conf(page["confidence"]))
    blocks = layout.blocks(page) if page["status"] == "ok" else []
    space = etree.SubElement(el, f"{{{NS}}}PrintSpace")
    _coords(space, layout.union(layout.box(l.get("box_source")) for b in blocks for l in b) or (size and (0, 0, *size)))
    n_lines = sum(len(b) for b in blocks)
    k = 0
    for bi, lines in enumerate(blocks):
        block = etree.SubElement(space, f"{{{NS}}}TextBlock", ID=f"{pid}_b{bi}")
        _coords(block, layout.union(layout.box(l.get("box_source")) for l in lines))
        for li, line in enumerate(lines):
            k += 1
            _line(block, line, f"{pid}_b{bi}_l{li}", layout.hyphenated(line, k == n_lines), clean)
    if clean.note:  # after the step's own description (the schema's order)
        note = etree.Element(f"{{{NS}}}processingStepDescription")
        note.text = clean.note
        proc.find(f"{{{NS}}}processingStepDescription").addnext(note)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _line(block, line: dict, lid: str, hyphen: bool, clean: XmlText) -> None:
    from lxml import etree

    tl = etree.SubElement(block, f"{{{NS}}}TextLine", ID=lid)
    _coords(tl, layout.box(line.get("box_source")))
    words = layout.words(line)
    for wi, word in enumerate(words):
        text = word["text"]
        if hyphen and wi == len(words) - 1:
            text = text[:-1]  # the hyphen goes into HYP; the String keeps the word's box
        s = etree.SubElement(tl, f"{{{NS}}}String", ID=f"{lid}_w{wi}", CONTENT=clean(text))
        b = layout.box(word.get("box_source"))
        _coords(s, b)
        if _conf(word.get("confidence")):
            s.set("WC", _conf(word["confidence"]))
        if wi < len(words) - 1:
            sp = etree.SubElement(tl, f"{{{NS}}}SP")
            nxt = layout.box(words[wi + 1].get("box_source"))
            if b and nxt and nxt[0] >= b[2]:
                sp.set("HPOS", str(b[2]))
                sp.set("VPOS", str(b[1]))
                sp.set("WIDTH", str(nxt[0] - b[2]))
    if hyphen:
        etree.SubElement(tl, f"{{{NS}}}HYP", CONTENT=clean(line["text"].rstrip()[-1]))


@functools.lru_cache(maxsize=1)
def schema():
    """The vendored ALTO 4.4 schema, its XLink import served from the local copy (no network)."""
    from lxml import etree

    class Local(etree.Resolver):
        def resolve(self, url, pubid, context):
            if url.endswith("xlink.xsd"):
                return self.resolve_filename(os.path.join(SCHEMAS, "xlink.xsd"), context)
            return None

    parser = etree.XMLParser(no_network=True)
    parser.resolvers.add(Local())
    return etree.XMLSchema(etree.parse(os.path.join(SCHEMAS, "alto-4-4.xsd"), parser))


def validate(xml: bytes) -> list[str]:
    """Schema errors of an ALTO document ([] when valid)."""
    from lxml import etree

    s = schema()
    ok = s.validate(etree.fromstring(xml))
    return [] if ok else [f"line {e.line}: {e.message}" for e in s.error_log]
