"""Names and page numbers as people and other systems read them. File names and OCR text with
control characters (`folioscan.text.safe`): valid ALTO, well-formed hOCR, a `folioscan show` and a
report that print no control character, on a real job (local executor, Tesseract, `run --also
alto,hocr,pdf,images,iiif`); and every output a person reads calls the same page by the same 1-based number."""
import glob
import html
import json
import os
import re

import pyarrow.parquet as pq
import pytest

from folioscan.export import alto
from folioscan.pipeline.cli import main
from folioscan.text.safe import NOT_XML, XmlText, visible, xml_text
from tests.helpers import scanned_pdf

CTL_NAME = "ctl\x07\x1b[31mRED\x1b[0m.pdf"
XHTML = "{http://www.w3.org/1999/xhtml}"


def test_visible_spells_out_what_a_terminal_would_act_on():
    assert visible("a\x07b\x1b[0m\x9bc\u202ed\ud800\n") == "a\\x07b\\x1b[0m\\x9bc\\u202ed\\ud800\\x0a"
    assert visible("line\tone\nline two\r", keep_newlines=True) == "line\tone\nline two\\x0d"
    assert visible("Stra\u00dfe \u00e9t\u00e9 \u017f \u2014 \U0001d504") == "Stra\u00dfe \u00e9t\u00e9 \u017f \u2014 \U0001d504"
    assert xml_text("ok \t\n\r \ufffd \U0001d504") == ("ok \t\n\r \ufffd \U0001d504", 0)
    assert xml_text("\x00\x1f\ufffe\uffff\udcff") == ("\ufffd" * 5, 5)


def test_ocr_text_with_control_characters_in_alto_and_hocr():
    """An engine's text (a VLM's above all) may hold any character: a form feed, a NUL, a lone surrogate."""
    from lxml import etree

    from folioscan.export import hocr
    from tests.test_export_formats import CTX, _book, _row, _word_line

    row = _row(lines=[_word_line(["fo\x0cot", "a\x00b", "\ud800x"], 100), _word_line(["tab\tkept"], 140)])
    clean = XmlText()
    xml = alto.page_xml(_book(row), row, CTX, clean)
    assert alto.validate(xml) == [] and clean.replaced == 3
    ns = {"a": alto.NS}
    root = etree.fromstring(xml)
    assert [s.get("CONTENT") for s in root.iterfind(".//a:String", ns)] == ["fo\ufffdot", "a\ufffdb", "\ufffdx", "tab\tkept"]
    assert "3 characters not allowed in XML 1.0" in root.findall(".//a:processingStepDescription", ns)[1].text
    page = etree.fromstring(hocr.book_html(_book(row), CTX).encode())
    words = [w.text for w in page.iterfind(f".//{XHTML}span[@class='ocrx_word']")]
    assert words == ["fo\ufffdot", "a\ufffdb", "\ufffdx", "tab\tkept"]
    plain = _row(lines=[_word_line(["plain"], 100)])
    assert len(etree.fromstring(alto.page_xml(_book(plain), plain, CTX)).findall(".//a:processingStepDescription", ns)) == 1


@pytest.fixture(scope="module")
def job(tmp_path_factory, page_images):
    root = tmp_path_factory.mktemp("names")
    src, out = root / "src", root / "out"
    src.mkdir()
    (src / CTL_NAME).write_bytes(scanned_pdf(page_images[:1]))
    (src / "plain.pdf").write_bytes(scanned_pdf(page_images[:3]))  # three pages, each another paragraph
    code = main(["run", str(src), str(out), "--executor", "local", "--also", "alto,hocr,pdf,mets,images,iiif", "--quiet"])
    rows = pq.read_table(os.path.join(out, "pages")).to_pylist()
    return {"code": code, "out": str(out), "root": root, "rows": rows}


def _book_files(out: str, fmt: str, stem: str) -> list[str]:
    tail = {"alto": "/*.xml", "hocr": ".html", "pdf": ".pdf", "mets": ".xml", "images": "/*.jpg", "iiif": "/manifest.json"}[fmt]
    return sorted(glob.glob(os.path.join(out, fmt, f"{stem}-*{tail}")))


def _show(capsys, out: str) -> str:
    capsys.readouterr()
    assert main(["show", out]) == 0
    return capsys.readouterr().out


def test_a_control_character_file_name_gets_valid_alto_wellformed_hocr_and_a_safe_show(job, capsys):
    from lxml import etree

    [xml_file] = _book_files(job["out"], "alto", "ctl_31mRED_0m")
    xml = open(xml_file, "rb").read()
    assert alto.validate(xml) == []
    root = etree.fromstring(xml)
    ns = {"a": alto.NS}
    # the characters XML cannot hold are replaced by U+FFFD, and the file says so
    assert root.find(".//a:fileName", ns).text.endswith("ctl\ufffd\ufffd[31mRED\ufffd[0m.pdf")
    assert any("3 characters not allowed in XML 1.0 replaced by U+FFFD" in (d.text or "")
               for d in root.findall(".//a:processingStepDescription", ns))
    assert len(root.findall(".//a:String", ns)) > 20  # the OCR text is there too
    [hocr_file] = _book_files(job["out"], "hocr", "ctl_31mRED_0m")
    doc = etree.parse(hocr_file)  # well-formed XML (XHTML); raises on an invalid character
    assert "ctl\ufffd\ufffd[31mRED" in doc.find(f".//{XHTML}title").text
    meta = {m.get("name"): m.get("content") for m in doc.iter(f"{XHTML}meta")}
    assert meta["folioscan-replaced-characters"] == "6"  # the name twice: <title> and the page's image property
    assert _book_files(job["out"], "pdf", "ctl_31mRED_0m")
    from folioscan.export import mets

    [mets_file] = _book_files(job["out"], "mets", "ctl_31mRED_0m")
    xml = open(mets_file, "rb").read()
    assert mets.validate(xml) == []
    root = etree.fromstring(xml)
    ns = {"m": mets.METS, "mods": mets.MODS, "xlink": mets.XLINK}
    assert root.find(".//mods:title", ns).text == "ctl\ufffd\ufffd[31mRED\ufffd[0m"  # the source's name, made safe
    assert root.get("LABEL") == root.find(".//mods:title", ns).text
    notes = [n.text for n in root.iterfind(".//m:agent/m:note", ns)]
    assert any("characters not allowed in XML 1.0 replaced by U+FFFD" in n for n in notes)
    # the source PDF's page as a URL: the control characters percent-encoded, not replaced
    [original] = root.iterfind(".//m:fileGrp[@USE='ORIGINAL']/m:file/m:FLocat", ns)
    assert original.get(f"{{{mets.XLINK}}}href").endswith("/ctl%07%1B%5B31mRED%1B%5B0m.pdf#page=1")
    [image] = _book_files(job["out"], "images", "ctl_31mRED_0m")
    assert open(image, "rb").read(3) == b"\xff\xd8\xff"  # a JPEG
    [manifest_file] = _book_files(job["out"], "iiif", "ctl_31mRED_0m")
    manifest = json.loads(open(manifest_file, "rb").read().decode("utf-8"))  # strict UTF-8 JSON
    assert manifest["label"] == {"none": ["ctl\ufffd\ufffd[31mRED\ufffd[0m.pdf"]}
    meta = {e["label"]["en"][0]: e["value"]["none"][0] for e in manifest["metadata"]}
    assert meta["Source"].endswith("ctl\ufffd\ufffd[31mRED\ufffd[0m.pdf")
    assert meta["Replaced characters"].startswith("6 characters not allowed in XML 1.0 replaced by U+FFFD")
    assert not NOT_XML.search(json.dumps(manifest, ensure_ascii=False))
    words = os.path.join(os.path.dirname(manifest_file), "annotations", "00001-words.json")
    assert len(json.loads(open(words, "rb").read().decode("utf-8"))["items"]) > 20  # the words are there too
    shown = _show(capsys, job["out"])
    assert "\x07" not in shown and "\x1b" not in shown
    assert "ctl\\x07\\x1b[31mRED\\x1b[0m.pdf" in shown  # the name, visibly
    report = job["root"] / "ctl_report.html"
    assert main(["report", job["out"], "--out", str(report)]) == 0
    page = report.read_text()
    assert not NOT_XML.search(page) and "\x1b" not in page and "ctl\\x07\\x1b[31mRED" in page
    assert job["code"] == 0  # and no export error for any book


def _key(text: str) -> tuple:
    return tuple(text.split()[:5])


def test_every_output_calls_each_page_by_the_same_number(job, capsys):
    """For a 3-page book: the report's page label, `show`'s, the ALTO file name and the hOCR page
    (its id; its `ppageno`, 0-based as the hOCR spec defines it) name the same page, 1-based."""
    from lxml import etree

    rows = sorted((r for r in job["rows"] if r["source_uri"].endswith("plain.pdf")), key=lambda r: r["page_index"])
    assert [r["page_index"] for r in rows] == [0, 1, 2] and all(r["status"] == "ok" for r in rows)
    keys = {_key(r["text"]): r["page_index"] for r in rows}
    assert len(keys) == 3  # three different pages

    report = job["root"] / "report.html"
    assert main(["report", job["out"], "--out", str(report)]) == 0
    cards = re.findall(r'· (page [^<]*)<div class="uri">([^<]*)</div><pre>([^<]*)</pre>', report.read_text())
    said = {"report": {}, "show": {}, "alto": {}, "hocr": {}}
    for label, uri, text in cards:
        if html.unescape(uri).endswith("plain.pdf"):
            said["report"][keys[_key(html.unescape(text))]] = label
    plain = _show(capsys, job["out"]).split("plain.pdf:", 1)[1]
    for line in plain.splitlines()[1:4]:
        label, status, conf, text = re.match(r"\s*(page [^:]*): (\S+) +(\S+) +(.*)", line).groups()
        said["show"][keys[_key(text)]] = label
    ns = {"a": alto.NS}
    for f in _book_files(job["out"], "alto", "plain"):
        words = " ".join(s.get("CONTENT") for s in etree.parse(f).iterfind(".//a:String", ns))
        said["alto"][keys[_key(words)]] = os.path.basename(f)
    [hocr_file] = _book_files(job["out"], "hocr", "plain")
    for page in etree.parse(hocr_file).iterfind(f".//{XHTML}div[@class='ocr_page']"):
        words = " ".join(w.text for w in page.iterfind(f".//{XHTML}span[@class='ocrx_word']"))
        ppageno = re.search(r"ppageno (\d+)", page.get("title")).group(1)
        said["hocr"][keys[_key(words)]] = (page.get("id"), int(ppageno))
    expected = {
        "report": {i: f"page {i + 1}" for i in range(3)},
        "show": {i: f"page {i + 1}" for i in range(3)},
        "alto": {i: f"{i + 1:05d}.xml" for i in range(3)},
        "hocr": {i: (f"page_{i + 1}", i) for i in range(3)},
    }
    assert said == expected


def test_a_split_spread_keeps_its_page_number_and_says_its_side():
    """The two halves of a spread (one scan, one page_index) are that page number with a side, in
    every output; hOCR gives them no `ppageno`, which the spec wants unique."""
    from lxml import etree

    from folioscan.export import hocr
    from folioscan.records import page_label
    from tests.test_export_formats import CTX, _book, _row, _word_line

    rows = [_row(lines=[_word_line(["first"], 100)], index=0)]
    for side in ("left", "right"):
        rows.append(_row(lines=[_word_line([side], 100)], index=2))
        rows[-1]["side"] = side
    book = _book(*rows)
    files = dict(alto.write_book(book, CTX))
    assert [f.split("/", 1)[1] for f in files] == ["00001.xml", "00003-left.xml", "00003-right.xml"]
    assert all(alto.validate(xml) == [] for xml in files.values())
    ids = [etree.fromstring(x).find(f".//{{{alto.NS}}}Page").get("ID") for x in files.values()]
    assert ids == ["page_00001", "page_00003_left", "page_00003_right"]
    pages = etree.fromstring(hocr.book_html(book, CTX).encode()).findall(f".//{XHTML}div[@class='ocr_page']")
    assert [p.get("id") for p in pages] == ["page_1", "page_3_left", "page_3_right"]
    assert ["ppageno" in p.get("title") for p in pages] == [True, False, False] and "ppageno 0;" in pages[0].get("title")
    assert [page_label(r["page_index"], r["side"]) for r in rows] == ["page 1", "page 3 (left)", "page 3 (right)"]


def test_log_lines_on_the_terminal_spell_control_characters_out():
    """`folioscan run` logs a failed book by its name: the terminal shows the escapes, obeys none."""
    import subprocess
    import sys

    from tests.helpers import pythonpath_with_repo

    code = ("import logging; from folioscan.pipeline import quiet; quiet.configure(False); "
            f"logging.getLogger('folioscan.pipeline.job').warning('%s: error: %s', {CTL_NAME!r}, 'one\\ntwo')")
    env = {**os.environ, "PYTHONPATH": pythonpath_with_repo(os.environ.get("PYTHONPATH"))}
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, check=True).stderr
    assert b"\x07" not in err and b"\x1b" not in err
    assert err.decode() == "WARNING folioscan.pipeline.job: ctl\\x07\\x1b[31mRED\\x1b[0m.pdf: error: one\ntwo\n"
