"""Edge cases of the formats, on rows built by the real assembler: a line-end hyphen, page text
without boxes (VLM engines), blank and failed pages, a dataset on S3 written to S3."""
from datetime import datetime, timezone
from html.parser import HTMLParser

import pytest

from folioscan.export import alto, hocr
from folioscan.export.dataset import Book, ExportContext
from folioscan.pipeline.pagerows import page_row
from folioscan.records import OcrLine, OcrResult, OcrWord, PageResult, PageWork


def _row(status="ok", lines=(), error=None, index=0):
    work = PageWork("doc1", "s3://b/book.pdf", index, 3, source_width=1000, source_height=1400, width=1000, height=1400)
    ocr = OcrResult(text="\n".join(l.text for l in lines), lines=list(lines), confidence=0.9) if status == "ok" else None
    return page_row(PageResult(work, status, ocr, "tesseract", "5", error=error), "run1")


def _word_line(words, y, block=0):
    ws, x = [], 100
    for w in words:
        box = (x, y, x + 20 * len(w), y + 30)
        ws.append(OcrWord(w, 0.9, box, box))
        x = box[2] + 15
    box = (100, y, ws[-1].box[2], y + 30)
    return OcrLine(" ".join(words), 0.9, box, ws, box, block=block)


def _book(*rows):
    return Book({"doc_id": "doc1", "source_uri": "s3://b/book.pdf", "kind": "pdf",
                 "processed_at": datetime(2026, 1, 1, tzinfo=timezone.utc)}, list(rows))


CTX = ExportContext("/nonexistent")


def test_line_end_hyphen_becomes_hyp_and_spaces_sp():
    from lxml import etree

    row = _row(lines=[_word_line(["the", "exam-"], 100), _word_line(["ple", "ends"], 140)])
    xml = alto.page_xml(_book(row), row, CTX)
    assert alto.validate(xml) == []
    ns = {"a": alto.NS}
    first, second = etree.fromstring(xml).findall(".//a:TextLine", ns)
    assert [s.get("CONTENT") for s in first.findall("a:String", ns)] == ["the", "exam"]
    assert first.find("a:HYP", ns).get("CONTENT") == "-" and second.find("a:HYP", ns) is None
    sp = first.find("a:SP", ns)
    assert (int(sp.get("HPOS")), int(sp.get("WIDTH"))) == (160, 15)


def test_page_text_without_boxes_gets_no_invented_coordinates():
    from lxml import etree

    lines = [OcrLine("Call me Ishmael.", 0.8, ()), OcrLine("Some years ago", 0.7, ())]  # a VLM's lines
    row = _row(lines=lines)
    assert row["box_level"] == "none" and all(l["box"] is None and l["box_source"] is None for l in row["lines"])
    xml = alto.page_xml(_book(row), row, CTX)
    assert alto.validate(xml) == []
    root = etree.fromstring(xml)
    ns = {"a": alto.NS}
    assert [s.get("CONTENT") for s in root.findall(".//a:String", ns)] == ["Call", "me", "Ishmael.", "Some", "years", "ago"]
    assert all(el.get("HPOS") is None for el in root.findall(".//a:TextBlock", ns) + root.findall(".//a:String", ns))
    html = hocr.book_html(_book(row), CTX)
    inside_page = [l for l in html.split("<body>")[1].splitlines() if 'class="ocr_page"' not in l]
    assert 'class="ocrx_word"' not in html and not any("bbox" in l for l in inside_page)
    assert "Call me Ishmael." in html


class _Classes(HTMLParser):
    def __init__(self):
        super().__init__()
        self.classes = []

    def handle_starttag(self, tag, attrs):
        self.classes.append(dict(attrs).get("class"))


def test_blank_and_failed_pages_are_valid_empty_pages_with_the_reason():
    from lxml import etree

    ok = _row(lines=[_word_line(["one", "line"], 100)], index=0)
    blank, failed = _row("blank", index=1), _row("error", error="page 2: RuntimeError: render failed", index=2)
    book = _book(ok, blank, failed)
    for row in (blank, failed):
        xml = alto.page_xml(book, row, CTX)
        assert alto.validate(xml) == []
        page = etree.fromstring(xml).find(".//{%s}Page" % alto.NS)
        assert page.get("PAGECLASS") == row["status"] and page.get("WIDTH") == "1000"
    assert "render failed" in alto.page_xml(book, failed, CTX).decode()
    parser = _Classes()
    parser.feed(hocr.book_html(book, CTX))
    assert parser.classes.count("ocr_page") == 3 and parser.classes.count("ocrx_word") == 2


def test_alto_validation_catches_a_broken_document():
    row = _row(lines=[_word_line(["a", "b"], 100)])
    bad = alto.page_xml(_book(row), row, CTX).replace(b'WC="0.900"', b'WC="1.7"')
    assert any("WC" in e for e in alto.validate(bad))


@pytest.mark.slow
def test_export_reads_a_dataset_on_s3_and_writes_to_s3(s3_endpoint, tmp_path, page_images, capsys):
    import json

    import boto3

    from folioscan.pipeline.cli import main
    from folioscan.pipeline.config import JobConfig
    from folioscan.pipeline.job import run_job
    from tests.helpers import scanned_pdf

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="exports")
    (tmp_path / "b.pdf").write_bytes(scanned_pdf(page_images[:2]))
    s3.put_object(Bucket="exports", Key="in/b.pdf", Body=(tmp_path / "b.pdf").read_bytes())
    run_job(JobConfig(source="s3://exports/in/", output="s3://exports/out", endpoint_url=s3_endpoint,
                      executor="local", progress=False))
    capsys.readouterr()
    assert main(["export", "s3://exports/out", "s3://exports/archive", "--format", "mets,alto,pdf",
                 "--endpoint-url", s3_endpoint]) == 0
    # the METS found its ALTO and PDF on S3 (listed, not guessed); the images export is not there
    [warning] = json.loads(capsys.readouterr().out)["warnings"]
    assert warning.endswith("points at files not in DEST (export those formats too): images 2 of 2 (b-%s/00001.jpg, ...)"
                            % warning.split("(b-", 1)[1][:8])
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="exports", Prefix="archive/")["Contents"])
    [mets_key] = [k for k in keys if k.startswith("archive/mets/")]
    from folioscan.export import mets

    assert mets.validate(s3.get_object(Bucket="exports", Key=mets_key)["Body"].read()) == []
    assert [k.rsplit("/", 1)[-1] for k in keys if k.startswith("archive/alto/")] == ["00001.xml", "00002.xml"]  # page numbers, from 1
    assert alto.validate(s3.get_object(Bucket="exports", Key=keys[0])["Body"].read()) == []
    pdf = s3.get_object(Bucket="exports", Key=next(k for k in keys if k.endswith(".pdf")))["Body"].read()
    import pymupdf

    assert "Ishmael" in pymupdf.open(stream=pdf).load_page(1).get_text()


def test_unknown_format_is_a_clear_error(tmp_path, capsys):
    from folioscan.pipeline.cli import main

    assert main(["export", str(tmp_path), str(tmp_path / "d"), "--format", "docx"]) == 2
    assert "unknown export format 'docx'" in capsys.readouterr().err
