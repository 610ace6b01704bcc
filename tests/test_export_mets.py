"""METS per book (DFG-viewer profile) from a real job: a CSV manifest with metadata columns, a book
with a title page, contents, printed page numbers and an index, and a book with a split spread;
`run --also mets` and `folioscan export --format mets,alto,pdf` (mets listed first), checked against
the METS 1.12.1 schema (lxml and xmlschema), read back with metsrw (Archivematica's METS library),
and every relative link followed to its file."""
import copy
import glob
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from folioscan.export import mets
from folioscan.export.dataset import Book, ExportContext
from folioscan.pipeline.cli import main
from tests.helpers import PARAGRAPHS, scanned_pdf, text_page_image

NS = {"m": mets.METS, "mods": mets.MODS, "dv": mets.DV, "xlink": mets.XLINK}
HREF = f"{{{mets.XLINK}}}href"
TITLE = 'The Mill, on the "River"'  # a comma and quotes: a real CSV field


def _page(text: str, number: str = "", fontsize: float = 14, align: int = 0) -> np.ndarray:
    """A rendered page, its printed number (if any) centred at the foot."""
    import pymupdf

    doc = pymupdf.open()
    page = doc.new_page(width=612, height=792)
    page.insert_textbox(pymupdf.Rect(60, 60, 552, 700), text, fontsize=fontsize, fontname="tiro", align=align)
    if number:
        page.insert_textbox(pymupdf.Rect(256, 730, 356, 760), number, fontsize=12, fontname="tiro", align=1)
    pix = page.get_pixmap(dpi=150, colorspace=pymupdf.csGRAY)
    return np.frombuffer(pix.samples, np.uint8).reshape(pix.height, pix.stride)[:, : pix.width].copy()


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("mets")
    src = root / "src"
    src.mkdir()
    pages = [
        _page("THE MILL\nON THE RIVER\nA NOVEL\n\nLONDON\nSMITH, ELDER & CO.", fontsize=20, align=1),
        _page("CONTENTS\n\nThe Mill ........ 13\nThe Flood ........ 14\nThe River ........ 15"),
        # printed numbers 13..15 (Tesseract's page layout drops a lone one-digit number)
        *(_page(PARAGRAPHS[i % 3] + " " + PARAGRAPHS[(i + 1) % 3], str(i + 13)) for i in range(3)),
        _page("INDEX\n\nAcorns, 13, 14\nBarley, 15\nBridge, the old, 13-15\nFlood, the, 14\nMill, the, 13"),
    ]
    (src / "mill.pdf").write_bytes(scanned_pdf(pages))
    left, right = text_page_image(" ".join(PARAGRAPHS)), text_page_image(" ".join(PARAGRAPHS[::-1]))
    spread = np.hstack([left, np.full((left.shape[0], 40), 255, np.uint8), right])
    (src / "spread.pdf").write_bytes(scanned_pdf([text_page_image(PARAGRAPHS[1]), spread]))
    manifest = root / "books.csv"
    manifest.write_text("uri,title,identifier,urn,author,owner,collection\n"
                        f'{src}/mill.pdf,"{TITLE.replace(chr(34), chr(34) * 2)}",MILL-1872,urn:nbn:de:test-1,'
                        'Eliot; Evans,Example Library,Novels\n'
                        f"{src}/spread.pdf,,,,,,\n")
    out, dest = str(root / "out"), str(root / "dest")
    assert main(["run", str(manifest), out, "--executor", "local", "--quiet", "--also", "mets"]) == 0
    run_record = json.loads(open(glob.glob(os.path.join(out, "_runs", "*.json"))[0]).read())
    summaries = {}
    for name, args in (("dest", []), ("web", ["--base-url", "https://example.org/books/"])):
        import contextlib
        import io

        buf = io.StringIO()
        fmts = "mets,alto,pdf" if name == "dest" else "mets"
        with contextlib.redirect_stdout(buf):
            code = main(["export", out, str(root / name), "--format", fmts, *args])
        summaries[name] = (code, json.loads(buf.getvalue()))
    rows = pq.read_table(os.path.join(out, "pages")).to_pylist()
    docs = pq.read_table(os.path.join(out, "documents")).to_pylist()
    return {"root": root, "out": out, "dest": dest, "rows": rows, "docs": docs, "summaries": summaries,
            "run": run_record}


def _rows(job, stem):
    return sorted((r for r in job["rows"] if r["source_uri"].endswith(stem)),
                  key=lambda r: (r["page_index"], {None: 0, "left": 0, "right": 1}[r["side"]]))


def _mets_file(folder, stem) -> str:
    [f] = glob.glob(os.path.join(folder, "mets", f"{stem}-*.xml"))
    return f


def _tree(path):
    from lxml import etree

    return etree.parse(path)


def _groups(tree) -> dict[str, dict[str, str]]:
    return {g.get("USE"): {f.get("ID"): f.find("m:FLocat", NS).get(HREF) for f in g.findall("m:file", NS)}
            for g in tree.findall("m:fileSec/m:fileGrp", NS)}


def _pages(tree):
    return tree.findall("m:structMap[@TYPE='PHYSICAL']/m:div[@TYPE='physSequence']/m:div", NS)


def test_mets_validates_against_mets_1_12_and_metsrw_reads_it(job):
    import metsrw
    import xmlschema

    files = sorted(glob.glob(os.path.join(job["dest"], "mets", "*.xml")))
    assert len(files) == 2
    xsd = xmlschema.XMLSchema(os.path.join(mets.SCHEMAS, "mets-1-12-1.xsd"))  # a second, independent validator
    for f in files:
        assert mets.validate(open(f, "rb").read()) == [], f
        xsd.validate(f)
    # run --also mets wrote the same books next to the Parquet
    assert sorted(map(os.path.basename, glob.glob(os.path.join(job["out"], "mets", "*.xml")))) == sorted(map(os.path.basename, files))

    path = _mets_file(job["dest"], "mill")
    tree = _tree(path)
    dmd = metsrw.SubSection.parse(tree.find("m:dmdSec", NS))
    assert dmd.subsection == "dmdSec" and dmd.contents.mdtype == "MODS"
    assert dmd.contents.document.find("mods:titleInfo/mods:title", NS).text == TITLE
    amd = metsrw.AMDSec.parse(tree.find("m:amdSec", NS))
    assert amd.id_string == "AMD"
    assert [(s.subsection, s.contents.mdtype, s.contents.othermdtype) for s in amd.subsections] == \
        [("rightsMD", "OTHER", "DVRIGHTS"), ("digiprovMD", "OTHER", "DVLINKS")]
    assert amd.subsections[0].contents.document.find("dv:owner", NS).text == "Example Library"
    # metsrw's whole-document reader looks for Archivematica's structMap TYPEs, "physical" and
    # "logical"; the DFG profile (and Kitodo.Presentation, which matches them exactly) says
    # "PHYSICAL" and "LOGICAL": read a copy whose TYPEs are lower-cased, and metsrw resolves the
    # fptrs it walks into the fileSec (a dangling FILEID is its ParseError)
    with pytest.raises(metsrw.ParseError, match="No physical structMap"):
        metsrw.METSDocument.fromfile(path)
    lowered = copy.deepcopy(tree)
    for sm in lowered.findall("m:structMap", NS):
        sm.set("TYPE", sm.get("TYPE").lower())
    doc = metsrw.METSDocument.fromtree(lowered)
    assert doc.objid == "MILL-1872" and doc.createdate
    assert [a.name for a in doc.agents][0].startswith("folioscan ")
    [whole] = doc.all_files()  # the physSequence: its fptr is the whole-book PDF
    assert whole.use == "DOWNLOAD" and whole.path.startswith("../pdf/mill-") and whole.path.endswith(".pdf")
    [logical] = doc._custom_structmaps
    assert logical.find("m:div", NS).get("TYPE") == "monograph"


def test_file_groups_and_every_relative_link_reaches_its_file(job):
    path = _mets_file(job["dest"], "mill")
    groups = _groups(_tree(path))
    rows = _rows(job, "mill.pdf")
    assert list(groups) == ["DEFAULT", "FULLTEXT", "DOWNLOAD", "ORIGINAL"]
    assert len(groups["DEFAULT"]) == len(groups["FULLTEXT"]) == len(groups["ORIGINAL"]) == len(rows) == 6
    book = os.path.basename(path)[:-4]
    here = os.path.dirname(path)
    for href in [*groups["FULLTEXT"].values(), *groups["DOWNLOAD"].values()]:
        assert not href.startswith("/") and os.path.isfile(os.path.normpath(os.path.join(here, href))), href
    assert list(groups["FULLTEXT"].values()) == [f"../alto/{book}/{i:05d}.xml" for i in range(1, 7)]
    assert list(groups["DEFAULT"].values()) == [f"../images/{book}/{i:05d}.jpg" for i in range(1, 7)]
    source = [d["source_uri"] for d in job["docs"] if d["source_uri"].endswith("mill.pdf")][0]
    assert list(groups["ORIGINAL"].values()) == [f"file://{source}#page={i}" for i in range(1, 7)]
    # the images export is not on this branch: the summary says what the METS points at in vain, per
    # book; the ALTO and PDF it points at were written (mets listed first, run last)
    code, summary = job["summaries"]["dest"]
    assert code == 0 and summary["errors"] == []
    assert len(summary["warnings"]) == 2 and all(": mets: points at files not in DEST" in w and "images" in w
                                                 and "alto" not in w.split("DEST", 1)[1] and " pdf " not in w
                                                 for w in summary["warnings"])
    assert "images 6 of 6" in next(w for w in summary["warnings"] if "mill.pdf" in w)
    # and run --also mets alone (no alto, no pdf) says all three, in the run record too
    warnings = job["run"]["summary"]["export_warnings"]
    assert len(warnings) == 2 and all("alto" in w and "pdf 1 of 1" in w and "images" in w for w in warnings)


def test_physical_pages_carry_order_and_the_printed_page_number(job):
    rows = _rows(job, "mill.pdf")
    printed = [r["printed_page_number"] for r in rows]
    assert printed[2:5] == ["13", "14", "15"] and printed[0] is None  # what the job found: the test's premise
    divs = _pages(_tree(_mets_file(job["dest"], "mill")))
    assert [d.get("ORDER") for d in divs] == [str(i) for i in range(1, 7)]
    assert [d.get("ORDERLABEL") for d in divs] == printed  # absent (None) where no number was printed
    assert all(d.get("TYPE") == "page" for d in divs)


def test_logical_structure_follows_matter_and_structlink_ties_it_to_the_pages(job):
    rows = _rows(job, "mill.pdf")
    assert [r["matter"] for r in rows][:2] == [["title"], ["contents"]] and "index" in rows[-1]["matter"]
    tree = _tree(_mets_file(job["dest"], "mill"))
    [top] = tree.findall("m:structMap[@TYPE='LOGICAL']/m:div", NS)
    assert (top.get("TYPE"), top.get("DMDID"), top.get("ADMID"), top.get("LABEL")) == ("monograph", "DMDLOG_0000", "AMD", TITLE)
    subs = top.findall("m:div", NS)
    assert [(d.get("TYPE"), d.get("LABEL")) for d in subs] == [("title_page", "Title page"), ("contents", "Table of contents"),
                                                               ("index", "Index")]
    links: dict[str, list[str]] = {}
    for sm in tree.findall("m:structLink/m:smLink", NS):
        links.setdefault(sm.get(f"{{{mets.XLINK}}}from"), []).append(sm.get(f"{{{mets.XLINK}}}to"))
    ids = [d.get("ID") for d in _pages(tree)]
    assert links == {"LOG_0000": ["PHYS_0000", *ids], subs[0].get("ID"): [ids[0]], subs[1].get("ID"): [ids[1]],
                     subs[2].get("ID"): [ids[5]]}
    # every ID a link or an fptr names exists (the schema checks IDREFs only by type)
    known = {el.get("ID") for el in tree.iter() if el.get("ID")}
    assert all(i in known for pair in links.items() for i in (pair[0], *pair[1]))
    assert all(fp.get("FILEID") in known for fp in tree.iter(f"{{{mets.METS}}}fptr"))


def test_a_split_spread_is_two_pages_of_one_scan(job):
    rows = _rows(job, "spread.pdf")
    assert [(r["page_index"], r["side"]) for r in rows] == [(0, None), (1, "left"), (1, "right")]
    path = _mets_file(job["dest"], "spread")
    tree = _tree(path)
    divs = _pages(tree)
    assert [d.get("ORDER") for d in divs] == ["1", "2", "3"]
    fptrs = [[fp.get("FILEID") for fp in d.findall("m:fptr", NS)] for d in divs]
    assert [f for f in fptrs[1] if f.endswith("FULLTEXT")] == ["FILE_00002-left_FULLTEXT"]
    assert [f for f in fptrs[2] if f.endswith("FULLTEXT")] == ["FILE_00002-right_FULLTEXT"]
    # both halves point at page 2 of the source PDF, one file
    assert [f for f in fptrs[1] if f.endswith("ORIGINAL")] == [f for f in fptrs[2] if f.endswith("ORIGINAL")] == ["FILE_00002_ORIGINAL"]
    groups = _groups(tree)
    assert groups["ORIGINAL"]["FILE_00002_ORIGINAL"].endswith("spread.pdf#page=2") and len(groups["ORIGINAL"]) == 2
    here = os.path.dirname(path)
    assert all(os.path.isfile(os.path.normpath(os.path.join(here, h))) for h in groups["FULLTEXT"].values())


def test_manifest_columns_become_mods_and_dv_rights(job):
    doc = next(d for d in job["docs"] if d["source_uri"].endswith("mill.pdf"))
    assert json.loads(doc["metadata"]) == {"title": TITLE, "identifier": "MILL-1872", "urn": "urn:nbn:de:test-1",
                                           "author": "Eliot; Evans", "owner": "Example Library", "collection": "Novels"}
    tree = _tree(_mets_file(job["dest"], "mill"))
    mods = tree.find("m:dmdSec/m:mdWrap/m:xmlData/mods:mods", NS)
    assert mods.find("mods:titleInfo/mods:title", NS).text == TITLE
    assert mods.find("mods:recordInfo/mods:recordIdentifier", NS).text == "MILL-1872"
    assert {i.get("type"): i.text for i in mods.findall("mods:identifier", NS)} == \
        {"urn": "urn:nbn:de:test-1", "local": "MILL-1872", "folioscan": doc["doc_id"]}
    assert [n.text for n in mods.findall("mods:name/mods:namePart", NS)] == ["Eliot", "Evans"]
    assert [(n.get("type"), n.text) for n in mods.findall("mods:note", NS)] == [("collection", "Novels")]
    rights = tree.find("m:amdSec/m:rightsMD/m:mdWrap/m:xmlData/dv:rights", NS)
    assert [(el.tag.split("}")[1], el.text) for el in rights] == [("owner", "Example Library"), ("ownerLogo", None),
                                                                  ("ownerSiteURL", None), ("ownerContact", None)]
    # no metadata: the title is the source's name, the record identifier the doc_id
    spread = next(d for d in job["docs"] if d["source_uri"].endswith("spread.pdf"))
    assert spread["metadata"] is None
    tree = _tree(_mets_file(job["dest"], "spread"))
    assert tree.find(".//mods:title", NS).text == "spread" and tree.getroot().get("OBJID") == spread["doc_id"]
    assert tree.find(".//mods:recordIdentifier", NS).text == spread["doc_id"]


def test_base_url_links_and_a_lone_mets_export_says_what_is_missing(job):
    web = str(job["root"] / "web")
    path = _mets_file(web, "mill")
    assert mets.validate(open(path, "rb").read()) == []
    groups = _groups(_tree(path))
    book = os.path.basename(path)[:-4]
    assert list(groups["FULLTEXT"].values())[0] == f"https://example.org/books/alto/{book}/00001.xml"
    assert list(groups["DEFAULT"].values())[0] == f"https://example.org/books/images/{book}/00001.jpg"
    assert list(groups["DOWNLOAD"].values()) == [f"https://example.org/books/pdf/{book}.pdf"]
    code, summary = job["summaries"]["web"]
    assert code == 0 and summary["errors"] == [] and len(summary["warnings"]) == 2  # written, not silent
    mill = next(w for w in summary["warnings"] if "mill.pdf" in w)
    assert "alto 6 of 6" in mill and "pdf 1 of 1" in mill and "images 6 of 6" in mill


def test_a_page_in_error_keeps_its_place_without_fulltext():
    """A page that failed between two good ones: its div is there (ORDER without a gap), with its
    image but no ALTO; a blank page keeps its (empty) ALTO."""
    from datetime import datetime, timezone

    from tests.test_export_formats import _row, _word_line

    rows = [_row(lines=[_word_line(["one"], 100)], index=0), _row("error", error="OCR failed", index=1),
            _row("blank", index=2)]
    rows[0]["printed_page_number"] = "7"
    book = Book({"doc_id": "doc1", "source_uri": "s3://b/book.pdf", "kind": "pdf", "processed_at": datetime(2026, 1, 1, tzinfo=timezone.utc)},
                rows)
    xml, linked = mets.book_mets(book, ExportContext("/nonexistent"))
    assert mets.validate(xml) == []
    from lxml import etree

    tree = etree.fromstring(xml).getroottree()
    divs = _pages(tree)
    assert [(d.get("ORDER"), d.get("ORDERLABEL")) for d in divs] == [("1", "7"), ("2", None), ("3", None)]
    uses = [[fp.get("FILEID").rsplit("_", 1)[1] for fp in d.findall("m:fptr", NS)] for d in divs]
    assert uses == [["DEFAULT", "FULLTEXT", "ORIGINAL"], ["DEFAULT", "ORIGINAL"], ["DEFAULT", "FULLTEXT", "ORIGINAL"]]
    assert [p for f, p in linked if f == "alto"] == ["book-doc1/00001.xml", "book-doc1/00003.xml"]
    assert _groups(tree)["ORIGINAL"]["FILE_00002_ORIGINAL"] == "s3://b/book.pdf#page=2"


def test_the_summary_lists_a_bounded_number_of_warnings(tmp_path, monkeypatch, caplog):
    """One warning a book (a METS exported alone): a run of a million books must not carry a
    million lines in its summary and run record; the log has every one."""
    from folioscan.export import dataset
    from tests.test_export_formats import _row, _word_line

    monkeypatch.setattr(dataset, "MAX_WARNINGS", 2)
    books = []
    for i in range(3):
        row = _row(lines=[_word_line(["one"], 100)])
        books.append(Book({"doc_id": f"doc{i}", "source_uri": f"s3://b/book{i}.pdf", "kind": "pdf"}, [row]))
    summary = dataset.export_books(books, {"mets": mets.write_book}, str(tmp_path), ExportContext("/nonexistent"))
    assert summary.files == 3 and summary.errors == []
    assert [w.split(": mets:")[0] for w in summary.warnings[:2]] == ["s3://b/book0.pdf", "s3://b/book1.pdf"]
    assert summary.warnings[2] == "(only the first 2 warnings are listed here; the log has them all)" and len(summary.warnings) == 3
    assert sum("points at files not in DEST" in r.getMessage() for r in caplog.records) == 3
