"""ALTO, hOCR and searchable PDF from a real job on a real multi-page book (one page scanned sideways
and askew), written through `run --also` and `folioscan export`, checked against the schema, an HTML
parser and the PDF's own extracted text and word boxes."""
import glob
import os
from html.parser import HTMLParser

import numpy as np
import pyarrow.parquet as pq
import pytest

from folioscan.export import alto
from folioscan.pipeline.cli import main
from folioscan.pipeline.config import JobConfig
from folioscan.pipeline.job import run_job
from folioscan.workers.prep import transform as tf
from folioscan.workers.prep.geometry import rot90, rotate
from tests.helpers import PARAGRAPHS, cer, multipage_tiff, png_bytes, scanned_pdf, text_page_image

SIDEWAYS = 1  # page of the PDF book scanned turned a quarter and askew


def _text(i: int) -> str:
    return " ".join(PARAGRAPHS[i % 3:] + PARAGRAPHS[: i % 3])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    src = root / "src"
    (src / "folder_book").mkdir(parents=True)
    pages = [text_page_image(_text(i)) for i in range(4)]
    pages[SIDEWAYS] = rotate(rot90(pages[SIDEWAYS], 90), 2.0)
    pages[2] = rotate(pages[2], -1.5)
    (src / "book.pdf").write_bytes(scanned_pdf(pages))
    (src / "folder_book" / "p1.png").write_bytes(png_bytes(text_page_image(PARAGRAPHS[0])))
    (src / "folder_book" / "p2.tif").write_bytes(multipage_tiff([text_page_image(PARAGRAPHS[1]), text_page_image(PARAGRAPHS[2])]))
    out, dest = str(root / "out"), str(root / "dest")
    summary = run_job(JobConfig(source=str(src), output=out, executor="local", progress=False, also=["alto"]))
    assert summary.ok and summary.pages == 7
    assert main(["export", out, dest, "--format", "alto,hocr", "--format", "pdf"]) == 0
    rows = pq.read_table(os.path.join(out, "pages")).to_pylist()
    return {"src": src, "out": out, "dest": dest, "rows": rows}


def _rows(exported, book: str):
    return sorted((r for r in exported["rows"] if r["source_uri"].endswith(book)), key=lambda r: r["page_index"])


def test_alto_of_every_page_validates_against_alto_4_4(exported):
    files = sorted(glob.glob(os.path.join(exported["dest"], "alto", "*", "*.xml")))
    assert len(files) == 7
    for f in files:
        assert alto.validate(open(f, "rb").read()) == [], f
    # run --also wrote the same files next to the Parquet
    assert sorted(os.path.relpath(f, exported["dest"]) for f in files) == \
        sorted(os.path.relpath(f, exported["out"]) for f in glob.glob(os.path.join(exported["out"], "alto", "*", "*.xml")))


def test_alto_is_in_the_scans_own_coordinates_with_a_string_and_wc_per_word(exported):
    from lxml import etree

    ns = {"a": alto.NS}
    rows = _rows(exported, "book.pdf")
    for row in rows:
        [f] = glob.glob(os.path.join(exported["dest"], "alto", "book-*", f"{row['page_index'] + 1:05d}.xml"))
        doc = etree.parse(f)
        page = doc.find(".//a:Page", ns)
        assert (int(page.get("WIDTH")), int(page.get("HEIGHT"))) == (row["source_width"], row["source_height"])
        strings = doc.findall(".//a:String", ns)
        words = [w for line in row["lines"] for w in line["words"]]
        assert len(strings) == len(words) > 50 and all(s.get("WC") and s.get("HPOS") for s in strings)
        lines = [tl for tl in doc.findall(".//a:TextLine", ns) if len(tl.findall("a:String", ns)) >= 4]
        tall = [int(tl.get("HEIGHT")) > int(tl.get("WIDTH")) for tl in lines]
        assert lines and all(tall) if row["page_index"] == SIDEWAYS else not any(tall)
        assert "tesseract" in doc.find(".//a:processingStepSettings", ns).text
    assert rows[SIDEWAYS]["source_width"] > rows[SIDEWAYS]["source_height"]  # the original, landscape scan


class _Hocr(HTMLParser):
    def __init__(self):
        super().__init__()
        self.words, self.pages, self._word = [], [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("class") == "ocr_page":
            self.pages.append(a["title"])
        if a.get("class") == "ocrx_word":
            self._word = [a["title"], ""]

    def handle_data(self, data):
        if self._word is not None:
            self._word[1] += data

    def handle_endtag(self, tag):
        if tag == "span" and self._word is not None:
            self.words.append(tuple(self._word))
            self._word = None


def test_hocr_parses_and_every_word_has_bbox_and_x_wconf(exported):
    [f] = glob.glob(os.path.join(exported["dest"], "hocr", "book-*.html"))
    parser = _Hocr()
    parser.feed(open(f, encoding="utf-8").read())
    rows = _rows(exported, "book.pdf")
    assert len(parser.pages) == 4 and f"bbox 0 0 {rows[SIDEWAYS]['source_width']} {rows[SIDEWAYS]['source_height']}" in parser.pages[SIDEWAYS]
    words = [w for r in rows for line in r["lines"] for w in line["words"]]
    assert [t for _, t in parser.words] == [w["text"] for w in words]
    for (title, _), w in zip(parser.words, words):
        fields = dict(p.strip().split(" ", 1) for p in title.split(";"))
        assert [int(v) for v in fields["bbox"].split()] == w["box_source"]
        assert 0 <= int(fields["x_wconf"]) <= 100


def _on_ink(extracted, ink) -> bool:
    ix = max(0.0, min(extracted[2], ink[2]) - max(extracted[0], ink[0]))
    iy = max(0.0, min(extracted[3], ink[3]) - max(extracted[1], ink[1]))
    area = (ink[2] - ink[0]) * (ink[3] - ink[1])
    return ix * iy >= 0.5 * area and (extracted[2] - extracted[0]) * (extracted[3] - extracted[1]) <= 4 * area


def _check_pdf_pages(pdf_path, rows, placement):
    import pymupdf

    doc = pymupdf.open(pdf_path)
    assert doc.page_count == len(rows)
    for row in rows:
        page = doc[row["page_index"]]
        assert len(page.get_images()) == 1  # the scan itself, untouched
        assert cer(page.get_text("text"), row["text"]) < 0.01
        extracted = page.get_text("words")
        to_pdf = placement(row)
        words = [w for line in row["lines"] for w in line["words"]]
        # a word's box comes back a line tall (one font size a line), so: half its ink covered by a
        # box of the same word no more than a few times its size
        hits = sum(any(e[4] == w["text"] and _on_ink(e[:4], tf.apply_matrix(to_pdf, w["box_source"])) for e in extracted)
                   for w in words)
        assert hits >= 0.9 * len(words), (row["page_index"], hits, len(words))
        if row["page_index"] == SIDEWAYS and row["source_uri"].endswith(".pdf"):
            long_words = [e for e in extracted if len(e[4]) >= 4]
            assert np.mean([e[3] - e[1] > e[2] - e[0] for e in long_words]) > 0.9  # sideways, like the scan


def test_searchable_pdf_text_matches_and_words_sit_on_their_ink(exported):
    [f] = glob.glob(os.path.join(exported["dest"], "pdf", "book-*.pdf"))
    _check_pdf_pages(f, _rows(exported, "book.pdf"), lambda r: r["pdf_transform"])


def test_searchable_pdf_of_an_image_folder_book(exported):
    [f] = glob.glob(os.path.join(exported["dest"], "pdf", "folder_book-*.pdf"))
    rows = _rows(exported, "folder_book")
    assert len(rows) == 3 and all(r["pdf_transform"] is None for r in rows)
    _check_pdf_pages(f, rows, lambda r: (72 / r["dpi"], 0, 0, 0, 72 / r["dpi"], 0) if r["dpi"] else (0.24, 0, 0, 0, 0.24, 0))


def test_searchable_pdf_of_a_page_the_pdf_itself_rotates(tmp_path):
    """A scanner stored the page sideways and set /Rotate 90: the page is rendered (as displayed) and
    the words must still sit on their ink in the displayed page."""
    import pymupdf

    doc = pymupdf.open(stream=scanned_pdf([rot90(text_page_image(PARAGRAPHS[1]), 270)]))
    doc[0].set_rotation(90)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "rotated.pdf").write_bytes(doc.tobytes())
    out = str(tmp_path / "out")
    run_job(JobConfig(source=str(tmp_path / "src"), output=out, executor="local", progress=False, dpi=150))
    assert main(["export", out, str(tmp_path / "dest"), "--format", "pdf"]) == 0
    [row] = pq.read_table(os.path.join(out, "pages")).to_pylist()
    assert row["image_origin"] == "rendered" and row["orientation"] == 0
    [f] = glob.glob(str(tmp_path / "dest" / "pdf" / "*.pdf"))
    page = pymupdf.open(f)[0]
    assert page.rotation == 90 and cer(page.get_text("text"), row["text"]) < 0.01
    pix = page.get_pixmap(dpi=72, colorspace=pymupdf.csGRAY)  # the page as a reader shows it
    ink = np.frombuffer(pix.samples, np.uint8).reshape(pix.height, pix.stride)[:, : pix.width] < 128
    shown = [pymupdf.Rect(w[:4]) * page.rotation_matrix for w in page.get_text("words")]
    density = np.mean([ink[int(r.y0):int(r.y1) + 1, int(r.x0):int(r.x1) + 1].mean() for r in shown])
    assert len(shown) > 20 and density > 5 * ink.mean()
