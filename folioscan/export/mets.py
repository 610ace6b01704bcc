"""METS per book in the DFG-viewer profile (what Kitodo and Goobi import): `DEST/mets/<book>.xml`.

What it holds, in the schema's order:

- `metsHdr`: when the METS was written and by what (folioscan's version, the engine).
- `dmdSec` `DMDLOG_0000`: MODS 3.7 wrapped in the METS. The title and identifiers come from the
  book's `documents.metadata` (the columns of a CSV manifest row: `uri,title,identifier,...`, see
  `folioscan.pipeline.sources`); without them the title is the source's file or folder name and
  the record identifier the book's `doc_id`. `MODS_FIELDS` says which column becomes what; a column
  it does not know becomes a `mods:note` with the column's name as its type (nothing is dropped).
- `amdSec` `AMD`: `dv:rights` (owner, logo, site, contact, licence) and `dv:links` (catalogue record,
  presentation), namespace http://dfg-viewer.de/, from the columns `DV_FIELDS` names; empty
  elements where the manifest gives none (the profile allows them; the institution fills them).
- `fileSec`: `DEFAULT` the page images of the `images` export (`images/<book>/<page>.jpg`, one per
  page row that was loaded), `FULLTEXT` the `alto` export's files (`alto/<book>/<page>.xml`, one per
  page row not in error), `DOWNLOAD` the searchable PDF (`pdf/<book>.pdf`), and for a PDF book
  `ORIGINAL` the source PDF, one file per source page as an RFC 8118 page reference
  (`book.pdf#page=3`; the two halves of a split spread share it). Links to the exports follow
  `dataset.link`: under `--base-url` when given, else relative to the METS file (`../alto/...`).
- `structMap TYPE="PHYSICAL"`: a `physSequence` (its `fptr` the whole-book PDF) with one `page` div
  per page row, in reading order: `ORDER` 1..n over the rows (a split spread's halves are two
  pages), `ORDERLABEL` the printed page number where `pages.printed_page_number` has one, else no
  ORDERLABEL at all. A page in error keeps its div (no gap in ORDER) without a FULLTEXT fptr.
- `structMap TYPE="LOGICAL"`: the `monograph` (the MODS, the rights, the PDF), and inside it one
  div per run of consecutive pages that `pages.matter` flags alike (title page, imprint, contents,
  index, advertisement: `MATTER_TYPES`), in page order.
- `structLink`: the monograph to the physSequence and to every page, each matter div to its pages.

Files the METS points at are only as good as the exports beside it: `write_book` looks for every
linked file under DEST once the book's other formats are written (`export_books` runs the formats
that link to others last) and adds a warning to the export summary for what is missing (e.g.
`--format mets` alone). Validated against the vendored METS 1.12.1 schema (`validate`); the MODS
inside is wrapped with lax processing there and checked only structurally (no MODS schema offline).
Every string from outside (file names, metadata, base URL) goes through `folioscan.text.safe`.
"""
from __future__ import annotations

import functools
import json
import os
from typing import Iterator, Optional
from urllib.parse import quote

from folioscan.export.dataset import Book, ExportContext, image_file, link, page_key, warn_missing
from folioscan.records import page_number
from folioscan.text.safe import XmlText

METS = "http://www.loc.gov/METS/"
MODS = "http://www.loc.gov/mods/v3"
DV = "http://dfg-viewer.de/"
XLINK = "http://www.w3.org/1999/xlink"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
NSMAP = {"mets": METS, "mods": MODS, "dv": DV, "xlink": XLINK, "xsi": XSI}
SCHEMA_LOCATION = (f"{METS} http://www.loc.gov/standards/mets/mets.xsd "
                   f"{MODS} http://www.loc.gov/standards/mods/v3/mods-3-7.xsd")
SCHEMAS = os.path.join(os.path.dirname(__file__), "schemas")
DEPTH = 1  # DEST/mets/<book>.xml: one folder below DEST

# pages.matter flag -> DFG structure type (the DFG-Viewer's Strukturdatenset) and its label
MATTER_TYPES = {
    "title": ("title_page", "Title page"),
    "copyright": ("imprint", "Imprint"),
    "contents": ("contents", "Table of contents"),
    "index": ("index", "Index"),
    "advertisement": ("additional", "Advertisement"),
}
# manifest column -> identifier type in MODS (mods:identifier @type)
IDENTIFIER_TYPES = ("urn", "doi", "isbn", "issn", "handle", "purl", "ppn", "oclc", "vd16", "vd17", "vd18")
# manifest columns the MODS reads directly (the others, bar DV_FIELDS, become mods:note)
MODS_FIELDS = ("title", "subtitle", "author", "creator", "date", "year", "place", "publisher", "edition",
               "language", "identifier", "identifier_source", "shelfmark", *IDENTIFIER_TYPES)
# manifest column -> (DFG-viewer section, element)
DV_FIELDS = {
    "owner": ("rights", "owner"), "owner_logo": ("rights", "ownerLogo"), "owner_site_url": ("rights", "ownerSiteURL"),
    "owner_contact": ("rights", "ownerContact"), "license": ("rights", "license"),
    "reference": ("links", "reference"), "presentation": ("links", "presentation"),
}
_ALWAYS = ("owner", "owner_logo", "owner_site_url", "owner_contact", "reference", "presentation")  # empty when not given


def write_book(book: Book, ctx: ExportContext) -> Iterator[tuple[str, bytes]]:
    clean = XmlText()
    xml, linked = book_mets(book, ctx, clean)
    clean.log(f"{book.doc['source_uri']}: mets")
    warn_missing(ctx, linked)
    yield f"{book.name}.xml", xml


write_book.links_to_others = True  # export_books runs it after the formats it points at


def metadata(book: Book) -> dict[str, str]:
    """The book's manifest columns (documents.metadata; {} for a dataset written before it existed)."""
    raw = book.doc.get("metadata")
    if not raw:
        return {}
    value = json.loads(raw)
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def source_title(uri: str) -> str:
    """The source's own name: the PDF's file name without `.pdf`, or the image folder's name."""
    from folioscan.records import book_stem

    return book_stem(uri)


def book_mets(book: Book, ctx: ExportContext, clean: Optional[XmlText] = None) -> tuple[bytes, list[tuple[str, str]]]:
    """The book's METS, and the (format, path under DEST/<format>/) of every export file it links to."""
    from lxml import etree

    clean = clean if clean is not None else XmlText()
    meta = metadata(book)

    def E(parent, ns: str, tag: str, text=None, **attrs):
        el = etree.SubElement(parent, f"{{{ns}}}{tag}", {k: clean(v) for k, v in attrs.items() if v is not None})
        if text is not None:
            el.text = clean(text)
        return el

    doc_id = book.doc["doc_id"]
    title = meta.get("title") or source_title(book.doc["source_uri"])
    root = etree.Element(f"{{{METS}}}mets", nsmap=NSMAP, OBJID=clean(meta.get("identifier") or doc_id), LABEL=clean(title))
    root.set(f"{{{XSI}}}schemaLocation", SCHEMA_LOCATION)
    hdr = E(root, METS, "metsHdr", CREATEDATE=ctx.created.replace(microsecond=0).isoformat())
    agent = E(hdr, METS, "agent", ROLE="CREATOR", TYPE="OTHER", OTHERTYPE="SOFTWARE")
    E(agent, METS, "name", f"folioscan {ctx.version}")
    engines = sorted({f"{p.get('engine')} {p.get('engine_version')}" for p in book.pages if p.get("engine")})
    E(agent, METS, "note", f"OCR: {', '.join(engines) or 'none'}; doc_id {doc_id}; source {book.doc['source_uri']}")

    dmd = E(E(E(root, METS, "dmdSec", ID="DMDLOG_0000"), METS, "mdWrap", MDTYPE="MODS"), METS, "xmlData")
    _mods(E(dmd, MODS, "mods", version="3.7"), E, meta, title, doc_id)
    _dv(root, E, meta)

    linked: list[tuple[str, str]] = []
    groups: dict[str, list] = {"DEFAULT": [], "FULLTEXT": [], "DOWNLOAD": [], "ORIGINAL": []}  # the profile's order
    page_files: list[list[str]] = []
    originals: dict[int, str] = {}
    pdf_id = None
    if book.pages:
        pdf_id = "FILE_DOWNLOAD"
        groups["DOWNLOAD"].append((pdf_id, "application/pdf", link(ctx, "pdf", f"{book.name}.pdf", DEPTH)))
        linked.append(("pdf", f"{book.name}.pdf"))
    for page in book.pages:
        key = page_key(page)
        ids = []
        if page.get("source_width"):  # the page image was loaded: the images export writes it
            ids.append(f"FILE_{key}_DEFAULT")
            groups["DEFAULT"].append((ids[-1], "image/jpeg", link(ctx, "images", image_file(book, page), DEPTH)))
            linked.append(("images", image_file(book, page)))
        if page["status"] != "error":  # ok or blank: its ALTO (an empty Page for a blank one)
            ids.append(f"FILE_{key}_FULLTEXT")
            groups["FULLTEXT"].append((ids[-1], "text/xml", link(ctx, "alto", f"{book.name}/{key}.xml", DEPTH)))
            linked.append(("alto", f"{book.name}/{key}.xml"))
        if book.doc.get("kind") == "pdf":
            n = page_number(page["page_index"])
            if n not in originals:
                originals[n] = f"FILE_{n:05d}_ORIGINAL"
                groups["ORIGINAL"].append((originals[n], "application/pdf", f"{_uri(book.doc['source_uri'])}#page={n}"))
            ids.append(originals[n])
        page_files.append(ids)
    if any(groups.values()):
        sec = E(root, METS, "fileSec")
        for use, files in groups.items():
            if files:
                grp = E(sec, METS, "fileGrp", USE=use)
                for fid, mimetype, href in files:
                    f = E(grp, METS, "file", ID=fid, MIMETYPE=mimetype)
                    E(f, METS, "FLocat", LOCTYPE="URL", **{f"{{{XLINK}}}href": href})

    phys = E(E(root, METS, "structMap", TYPE="PHYSICAL"), METS, "div", ID="PHYS_0000", TYPE="physSequence")
    if pdf_id:
        E(phys, METS, "fptr", FILEID=pdf_id)
    page_ids = []
    for order, (page, ids) in enumerate(zip(book.pages, page_files), 1):
        page_ids.append(f"PHYS_{order:04d}")
        div = E(phys, METS, "div", ID=page_ids[-1], TYPE="page", ORDER=str(order),
                ORDERLABEL=page.get("printed_page_number") or None)
        for fid in ids:
            E(div, METS, "fptr", FILEID=fid)

    top = E(E(root, METS, "structMap", TYPE="LOGICAL"), METS, "div", ID="LOG_0000", TYPE="monograph",
            DMDID="DMDLOG_0000", ADMID="AMD", LABEL=title)
    if pdf_id:
        E(top, METS, "fptr", FILEID=pdf_id)
    links = [("LOG_0000", "PHYS_0000"), *(("LOG_0000", p) for p in page_ids)]
    for n, (flag, pages) in enumerate(matter_runs(book.pages), 1):
        kind, label = MATTER_TYPES[flag]
        E(top, METS, "div", ID=f"LOG_{n:04d}", TYPE=kind, LABEL=label)
        links += [(f"LOG_{n:04d}", page_ids[i]) for i in pages]
    sl = E(root, METS, "structLink")
    for frm, to in links:
        E(sl, METS, "smLink", **{f"{{{XLINK}}}from": frm, f"{{{XLINK}}}to": to})
    if clean.note:
        E(agent, METS, "note", clean.note)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True), linked


def matter_runs(pages: list[dict]) -> list[tuple[str, list[int]]]:
    """(flag, row positions) per run of consecutive page rows that `matter` flags alike, in page
    order; a page with two flags is in both runs; flags MATTER_TYPES does not know are left out."""
    runs: list[tuple[str, list[int]]] = []
    open_runs: dict[str, tuple[str, list[int]]] = {}
    for i, page in enumerate(pages):
        flags = [f for f in (page.get("matter") or []) if f in MATTER_TYPES]
        for flag in list(open_runs):
            if flag not in flags:
                del open_runs[flag]
        for flag in flags:
            if flag in open_runs:
                open_runs[flag][1].append(i)
            else:
                open_runs[flag] = (flag, [i])
                runs.append(open_runs[flag])
    return runs


def _mods(mods, E, meta: dict, title: str, doc_id: str) -> None:
    info = E(mods, MODS, "titleInfo")
    E(info, MODS, "title", title)
    if meta.get("subtitle"):
        E(info, MODS, "subTitle", meta["subtitle"])
    for column, role in (("author", "aut"), ("creator", "cre")):
        for person in filter(None, (p.strip() for p in meta.get(column, "").split(";"))):
            name = E(mods, MODS, "name", type="personal")
            E(name, MODS, "namePart", person)
            E(E(name, MODS, "role"), MODS, "roleTerm", role, type="code", authority="marcrelator")
    E(mods, MODS, "typeOfResource", "text")
    origin = [c for c in ("place", "publisher", "date", "year", "edition") if meta.get(c)]
    if origin:
        el = E(mods, MODS, "originInfo")
        if meta.get("place"):
            E(E(el, MODS, "place"), MODS, "placeTerm", meta["place"], type="text")
        if meta.get("publisher"):
            E(el, MODS, "publisher", meta["publisher"])
        if meta.get("date") or meta.get("year"):
            E(el, MODS, "dateIssued", meta.get("date") or meta["year"], keyDate="yes")
        if meta.get("edition"):
            E(el, MODS, "edition", meta["edition"])
    if meta.get("language"):
        lang = meta["language"]
        E(E(mods, MODS, "language"), MODS, "languageTerm", lang, type="code" if len(lang) <= 3 else "text")
    E(E(mods, MODS, "physicalDescription"), MODS, "digitalOrigin", "reformatted digital")
    for column in IDENTIFIER_TYPES:
        if meta.get(column):
            E(mods, MODS, "identifier", meta[column], type=column)
    if meta.get("identifier"):
        E(mods, MODS, "identifier", meta["identifier"], type=meta.get("identifier_source") or "local")
    E(mods, MODS, "identifier", doc_id, type="folioscan")
    if meta.get("shelfmark"):
        E(E(mods, MODS, "location"), MODS, "shelfLocator", meta["shelfmark"])
    for column, value in meta.items():
        if column not in MODS_FIELDS and column not in DV_FIELDS:
            E(mods, MODS, "note", value, type=column)
    record = E(mods, MODS, "recordInfo")
    if meta.get("identifier"):
        E(record, MODS, "recordIdentifier", meta["identifier"], source=meta.get("identifier_source") or "local")
    else:
        E(record, MODS, "recordIdentifier", doc_id, source="folioscan")


def _dv(root, E, meta: dict) -> None:
    """The DFG viewer's rights and links, in an amdSec (rightsMD and digiprovMD)."""
    amd = E(root, METS, "amdSec", ID="AMD")
    for section, md, mdid in (("rights", "rightsMD", "AMD_RIGHTS"), ("links", "digiprovMD", "AMD_LINKS")):
        wrap = E(E(amd, METS, md, ID=mdid), METS, "mdWrap", MDTYPE="OTHER", OTHERMDTYPE=f"DV{section.upper()}")
        el = E(E(wrap, METS, "xmlData"), DV, section)
        for column, (sec, tag) in DV_FIELDS.items():
            if sec == section and (meta.get(column) or column in _ALWAYS):
                E(el, DV, tag, meta.get(column, ""))


def _uri(source_uri: str) -> str:
    """The source as a URL (`file://` for a local path), percent-encoded: a name's control characters
    and spaces become escapes, never raw characters in an attribute."""
    safe = ":/@!$&'()*+,;=~"
    if "://" not in source_uri:
        source_uri = "file://" + os.path.abspath(source_uri)
    try:
        return quote(source_uri, safe=safe, errors="surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
        return quote(source_uri.encode("utf-8", "replace").decode("utf-8"), safe=safe)


@functools.lru_cache(maxsize=1)
def schema():
    """The vendored METS 1.12.1 schema; its XLink import is the local `xlink-mets.xsd` (no network)."""
    from lxml import etree

    parser = etree.XMLParser(no_network=True)
    return etree.XMLSchema(etree.parse(os.path.join(SCHEMAS, "mets-1-12-1.xsd"), parser))


def validate(xml: bytes) -> list[str]:
    """Schema errors of a METS document ([] when valid)."""
    from lxml import etree

    s = schema()
    ok = s.validate(etree.fromstring(xml))
    return [] if ok else [f"line {e.line}: {e.message}" for e in s.error_log]
