"""Names and page numbers as people and other systems read them. File names and OCR text with
control characters (`folioscan.text.safe`): valid ALTO, well-formed hOCR, a `folioscan show` and a
report that print no control character, on a real job (local executor, Tesseract, `run --also
alto,hocr,pdf`); and every output a person reads calls the same page by the same 1-based number."""
from folioscan.export import alto
from folioscan.text.safe import XmlText, visible, xml_text

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


