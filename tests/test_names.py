"""Names and page numbers as people and other systems read them. File names and OCR text with
control characters (`folioscan.text.safe`): valid ALTO, well-formed hOCR, a `folioscan show` and a
report that print no control character, on a real job (local executor, Tesseract, `run --also
alto,hocr,pdf`); and every output a person reads calls the same page by the same 1-based number."""
import glob
import os

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
    code = main(["run", str(src), str(out), "--executor", "local", "--also", "alto,hocr,pdf", "--quiet"])
    rows = pq.read_table(os.path.join(out, "pages")).to_pylist()
    return {"code": code, "out": str(out), "root": root, "rows": rows}


def _book_files(out: str, fmt: str, stem: str) -> list[str]:
    tail = {"alto": "/*.xml", "hocr": ".html", "pdf": ".pdf"}[fmt]
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
    shown = _show(capsys, job["out"])
    assert "\x07" not in shown and "\x1b" not in shown
    assert "ctl\\x07\\x1b[31mRED\\x1b[0m.pdf" in shown  # the name, visibly
    report = job["root"] / "ctl_report.html"
    assert main(["report", job["out"], "--out", str(report)]) == 0
    page = report.read_text()
    assert not NOT_XML.search(page) and "\x1b" not in page and "ctl\\x07\\x1b[31mRED" in page
    assert job["code"] == 0  # and no export error for any book


