"""The searchable PDF reads like the book: poppler's pdftotext, in its default reading-order mode,
gets the OCR's lines back (a real job, Tesseract, on scanned pages built here: upright, scanned
sideways and askew, askew, and an image book), its words lie on their ink, and the text layer
keeps any script. The PDF/A-2b copy (Ghostscript) declares itself and keeps the scans and the text;
without Ghostscript the format is refused before any work."""
import glob
import os
import re
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from folioscan.export.pdf import DEFAULT_DPI
from folioscan.pipeline.cli import main
from folioscan.pipeline.config import JobConfig
from folioscan.pipeline.job import run_job
from folioscan.workers.prep import transform as tf
from folioscan.workers.prep.geometry import rot90, rotate
from tests.helpers import PARAGRAPHS, cer, pdftotext, pdftotext_words, png_bytes, scanned_pdf, text_page_image, words_on_ink

PDFTOTEXT = shutil.which("pdftotext")
needs_pdftotext = pytest.mark.skipif(PDFTOTEXT is None, reason="pdftotext (poppler-utils) is not installed; "
                                                                "apt-get install poppler-utils (.ci/run does)")
SIDEWAYS, ASKEW = 1, 2


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    root = tmp_path_factory.mktemp("pdftext")
    src = root / "src"
    (src / "image_book").mkdir(parents=True)
    pages = [text_page_image(" ".join(PARAGRAPHS[i:] + PARAGRAPHS[:i])) for i in range(3)]
    pages[SIDEWAYS] = rotate(rot90(pages[SIDEWAYS], 90), 2.0)  # scanned a quarter turn and 2 degrees off
    pages[ASKEW] = rotate(pages[ASKEW], -1.5)
    (src / "book.pdf").write_bytes(scanned_pdf(pages))
    (src / "image_book" / "p1.png").write_bytes(png_bytes(rotate(text_page_image(PARAGRAPHS[2] + " " + PARAGRAPHS[0]), 1.0)))
    out, dest = str(root / "out"), str(root / "dest")
    assert run_job(JobConfig(source=str(src), output=out, executor="local", progress=False)).ok
    assert main(["export", out, dest, "--format", "pdf"]) == 0
    rows = pq.read_table(os.path.join(out, "pages")).to_pylist()
    [pdf] = glob.glob(os.path.join(dest, "pdf", "book-*.pdf"))
    [images] = glob.glob(os.path.join(dest, "pdf", "image_book-*.pdf"))
    return {"root": root, "out": out, "rows": rows, "pdf": pdf, "images": images}


def _pages(book):
    """(pdf path, page row, box_source -> page as displayed in points) for every page."""
    import pymupdf

    for row in sorted(book["rows"], key=lambda r: (r["source_uri"], r["page_index"])):
        path = book["pdf"] if row["source_uri"].endswith(".pdf") else book["images"]
        scale = 72 / (row["dpi"] or DEFAULT_DPI)  # an image book's page: its image at its DPI
        m = row["pdf_transform"] or (scale, 0, 0, 0, scale, 0)
        page = pymupdf.open(path)[row["page_index"]]

        def shown(box, m=m, rot=page.rotation_matrix):
            r = pymupdf.Rect(tf.apply_matrix(m, box)) * rot
            return r.x0, r.y0, r.x1, r.y1

        yield path, row, shown


@needs_pdftotext
def test_pdftotext_reads_each_ocr_line_as_one_line_in_order(book):
    for path, row, _ in _pages(book):
        n = row["page_index"] + 1
        default, raw = pdftotext(path, n), pdftotext(path, n, "-raw")
        assert cer(default, row["text"]) <= 0.02, (path, n, default[:400])  # the code before this: 0.68 sideways, 0.47 askew
        assert cer(raw, row["text"]) <= 0.02, (path, n, raw[:400])
        got = [l for l in default.splitlines() if l.strip()]
        want = [l["text"] for l in row["lines"] if l["text"].strip()]
        assert len(got) == len(want) >= 5, (path, n, got)
        assert cer(got[0], want[0]) < 0.05 and cer(got[-1], want[-1]) < 0.05


@needs_pdftotext
def test_pdftotext_words_lie_on_their_ink_and_turn_with_the_scan(book):
    for path, row, shown in _pages(book):
        n = row["page_index"] + 1
        extracted = pdftotext_words(path, n)
        words, covered, _ = words_on_ink(extracted, row, shown)
        # measured: every word on the upright pages, 93% on the sideways one 2 degrees off (its
        # lines run along the page's axis; words follow the tilt only so far: pdf.FOLLOW)
        assert words > 50 and covered >= (0.85 if row["page_index"] == SIDEWAYS else 0.97) * words, (path, n, covered, words)
        long_words = [e for e in extracted if len(e[4]) >= 4]
        tall = np.mean([e[3] - e[1] > e[2] - e[0] for e in long_words])
        assert tall > 0.9 if (path == book["pdf"] and row["page_index"] == SIDEWAYS) else tall < 0.1


def test_a_line_is_one_baseline_one_size_words_stretched_to_their_boxes(book):
    """The content stream itself: a Tm and a Tf per OCR line, and on an upright page every word
    moved along the baseline only (Td's second operand 0), stretched by Tz."""
    import pymupdf

    doc = pymupdf.open(book["pdf"])
    row = next(r for r in book["rows"] if r["source_uri"].endswith(".pdf") and r["page_index"] == 0)
    stream = doc[0].read_contents().decode("latin-1")
    layer = stream[stream.rindex("BT"):]
    lines = [l for l in row["lines"] if l["words"]]
    assert layer.count(" Tm") == layer.count(" Tf") == len(lines)
    moves = re.findall(r"(\S+) (\S+) Td (\S+) Tz <", layer)
    assert len(moves) == sum(len(l["words"]) for l in lines)
    assert all(float(dy) == 0 for _, dy, _ in moves) and all(float(tz) > 0 for _, _, tz in moves)
    assert "3 Tr" in layer and len(doc[0].get_images()) == 1


def test_a_drop_capital_neither_sets_the_size_nor_the_baseline_and_close_words_keep_their_space(tmp_path):
    """A line of book_d (old_books): a drop capital read as a quote 131 px tall beside 32 px words.
    The text band is the words' (tops 597, baseline 629), not the line box's (597..734); and two
    words whose boxes almost touch (5 px apart) still read as two words, in -raw order too."""
    import pymupdf

    from folioscan.export import glyphless
    from folioscan.export.pdf import _add_layer, place_line, text_band, text_layer

    words = [("‘", [96, 603, 125, 734]), ("LINE", [183, 598, 292, 629]), ("certainly", [314, 598, 474, 637]),
             ("did", [496, 598, 554, 629]), ("not", [573, 601, 633, 630]), ("gave", [651, 598, 733, 629]),
             ("a", [738, 608, 754, 629]), ("ordinary", [929, 597, 1088, 636])]
    assert text_band([b for _, b in words], 597, 734) == (597, 629)
    line = {"text": " ".join(w for w, _ in words), "box": [96, 597, 1088, 734],
            "words": [{"text": w, "box": b} for w, b in words]}
    scale = 72 / 300
    placed = place_line(line, lambda pts: np.stack([pts[:, 0] * scale, 800 - pts[:, 1] * scale], axis=1))
    assert abs(placed.size - 32 * scale / 0.8) < 0.01 and abs(placed.origin[1] - (800 - 629 * scale)) < 0.01
    doc = pymupdf.open()
    page = doc.new_page(width=300, height=800)
    font = glyphless.add_to(doc)
    _add_layer(doc, page, font, text_layer([placed]))
    glyphless.map_unicode(doc, font, [w for w, _ in words])
    path = str(tmp_path / "line.pdf")
    doc.save(path)
    assert pymupdf.open(path)[0].get_text("text").split() == [w for w, _ in words]
    if PDFTOTEXT:
        assert pdftotext(path, 1).split() == pdftotext(path, 1, "-raw").split() == [w for w, _ in words]


def test_text_layer_keeps_any_script(tmp_path):
    """The glyphless font maps each code back to its character: long s, a ligature, Greek,
    Cyrillic, a diaeresis, a dash and curly quotes come back out of the PDF as the OCR recorded
    them (MuPDF; pdftotext too), and out of its PDF/A copy."""
    import pymupdf

    from folioscan.export import glyphless
    from folioscan.export.pdf import FONT, Line, _add_layer, text_layer

    words = ["ſtrange", "ﬁne", "λόγος", "слово", "—", "“quoted”", "naïve"]
    doc = pymupdf.open()
    page = doc.new_page(width=400, height=200)
    placed, x = [], 0.0
    for w in words:
        placed.append((x, 0.0, 10.0 * len(w), w))
        x += 10.0 * len(w) + 6
    font = glyphless.add_to(doc)
    _add_layer(doc, page, font, text_layer([Line((20.0, 100.0), (1.0, 0.0), (0.0, 1.0), 12.0, placed)]))
    glyphless.map_unicode(doc, font, words)
    data = doc.tobytes(garbage=3, deflate=True)
    page = pymupdf.open(stream=data)[0]
    assert page.get_text("text").split() == words
    assert FONT in {f[4] for f in page.get_fonts()}
    copies = {"pdf": data}
    if shutil.which("gs"):  # Ghostscript 10.0 once turned U+2019 into "9" rewriting a ToUnicode range
        from folioscan.export.pdfa import to_pdfa

        copies["pdfa"] = to_pdfa(data)
        assert pymupdf.open(stream=copies["pdfa"])[0].get_text("text").split() == words
    for name, pdf in copies.items():
        if PDFTOTEXT:
            path = str(tmp_path / f"{name}.pdf")
            with open(path, "wb") as f:
                f.write(pdf)
            assert pdftotext(path, 1).split() == words, name


def test_layer_on_a_page_whose_resources_are_inherited_from_the_page_tree():
    """A scanner's PDF may keep the image in the page tree's /Resources: the page keeps its scan
    and gets the font beside it."""
    import pymupdf

    from folioscan.export import glyphless
    from folioscan.export.pdf import Line, _add_layer, text_layer

    doc = pymupdf.open(stream=scanned_pdf([text_page_image(PARAGRAPHS[0])]))
    page = doc[0]
    kind, resources = doc.xref_get_key(page.xref, "Resources")
    parent = int(doc.xref_get_key(page.xref, "Parent")[1].split()[0])
    doc.xref_set_key(parent, "Resources", resources)
    doc.xref_set_key(page.xref, "Resources", "null")
    page = pymupdf.open(stream=doc.tobytes())[0]
    doc = page.parent
    assert doc.xref_get_key(page.xref, "Resources")[0] == "null" and len(page.get_images()) == 1
    font = glyphless.add_to(doc)
    _add_layer(doc, page, font, text_layer([Line((50.0, 500.0), (1.0, 0.0), (0.0, 1.0), 12.0,
                                                 [(0.0, 0.0, 40.0, "inherited"), (50.0, 0.0, 30.0, "page")])]))
    glyphless.map_unicode(doc, font, ["inherited", "page"])
    page = pymupdf.open(stream=doc.tobytes(garbage=3, deflate=True))[0]
    assert len(page.get_images()) == 1 and page.get_text("text").split() == ["inherited", "page"]


@pytest.mark.skipif(shutil.which("gs") is None, reason="Ghostscript (gs) is not installed; apt-get install ghostscript (.ci/run does)")
def test_pdfa_copy_declares_pdfa_2b_and_keeps_scans_and_text(book, tmp_path):
    import pymupdf

    dest = str(tmp_path / "dest")
    assert main(["export", book["out"], dest, "--format", "pdfa"]) == 0
    [f] = glob.glob(os.path.join(dest, "pdfa", "book-*.pdf"))
    doc, plain = pymupdf.open(f), pymupdf.open(book["pdf"])
    xmp = doc.get_xml_metadata()
    assert re.search(r"pdfaid:part\W{1,3}2\b", xmp) and re.search(r"pdfaid:conformance\W{1,3}B\b", xmp), xmp
    assert "OutputIntents" in doc.xref_object(doc.pdf_catalog())
    for i in range(doc.page_count):
        [a], [b] = plain[i].get_images(full=True), doc[i].get_images(full=True)
        assert pymupdf.Pixmap(plain, a[0]).samples == pymupdf.Pixmap(doc, b[0]).samples  # the scan's pixels, unchanged
        row = next(r for r in book["rows"] if r["source_uri"].endswith(".pdf") and r["page_index"] == i)
        assert cer(doc[i].get_text("text"), row["text"]) < 0.01
        if PDFTOTEXT:
            assert cer(pdftotext(f, i + 1), row["text"]) <= 0.02


def test_pdfa_without_ghostscript_is_refused_before_any_work(book, tmp_path, monkeypatch, capsys):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no gs to be found
    dest = tmp_path / "dest"
    assert main(["export", book["out"], str(dest), "--format", "pdf,pdfa"]) == 2
    err = capsys.readouterr().err
    assert "Ghostscript" in err and "gs" in err and len(err.strip().splitlines()) == 1
    assert not dest.exists()
    out = tmp_path / "out"
    assert main(["run", str(book["root"] / "src"), str(out), "--also", "pdfa", "--quiet"]) == 2
    assert "Ghostscript" in capsys.readouterr().err
    assert not out.exists()
