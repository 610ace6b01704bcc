"""Names and page numbers as people and other systems read them. File names and OCR text with
control characters (`folioscan.text.safe`): valid ALTO, well-formed hOCR, a `folioscan show` and a
report that print no control character, on a real job (local executor, Tesseract, `run --also
alto,hocr,pdf`); and every output a person reads calls the same page by the same 1-based number."""
from folioscan.text.safe import visible, xml_text


def test_visible_spells_out_what_a_terminal_would_act_on():
    assert visible("a\x07b\x1b[0m\x9bc\u202ed\ud800\n") == "a\\x07b\\x1b[0m\\x9bc\\u202ed\\ud800\\x0a"
    assert visible("line\tone\nline two\r", keep_newlines=True) == "line\tone\nline two\\x0d"
    assert visible("Stra\u00dfe \u00e9t\u00e9 \u017f \u2014 \U0001d504") == "Stra\u00dfe \u00e9t\u00e9 \u017f \u2014 \U0001d504"
    assert xml_text("ok \t\n\r \ufffd \U0001d504") == ("ok \t\n\r \ufffd \U0001d504", 0)
    assert xml_text("\x00\x1f\ufffe\uffff\udcff") == ("\ufffd" * 5, 5)


