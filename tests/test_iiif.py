"""IIIF Presentation 3 and page images: the manifest of rows built by the real assembler (checked
by the iiif-prezi3 models), then a real job exported as images, ALTO, hOCR and IIIF, served on
127.0.0.1 and opened in Mirador 4 (the npm package, offline) in headless Chromium."""
import functools
import http.server
import io
import json
import os
import posixpath
import subprocess
import threading

import numpy as np
import pyarrow.parquet as pq
import pytest

from folioscan.export import iiif
from folioscan.export.dataset import ExportContext
from folioscan.pipeline.cli import main
from folioscan.pipeline.config import JobConfig
from folioscan.pipeline.job import run_job
from folioscan.records import OcrLine
from tests.helpers import PARAGRAPHS, png_bytes, scanned_pdf, text_page_image
from tests.test_export_formats import CTX, _book, _row, _word_line
from tests.test_load import _sepia

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIRADOR = os.path.join(REPO, ".cache", "mirador-4.0.0", "package", "dist", "mirador.min.js")
BASE = "https://example.org/books/"


def _prezi(manifest: dict):
    """The manifest loaded into iiif-prezi3's models (generated from the IIIF validator's schema)."""
    prezi3 = pytest.importorskip("iiif_prezi3", reason="iiif-prezi3 is in the test extra (make install-test)")
    return prezi3.Manifest(**manifest)


def _prezi_page(page: dict):
    prezi3 = pytest.importorskip("iiif_prezi3", reason="iiif-prezi3 is in the test extra (make install-test)")
    return prezi3.AnnotationPage(**page)


def test_manifest_has_a_canvas_per_page_row_with_line_and_word_annotations():
    rows = [_row(lines=[_word_line(["Call", "me"], 100), _word_line(["Ishmael."], 140)], index=0)]
    rows[0]["printed_page_number"] = "xiv"
    for side in ("left", "right"):  # a split spread: two rows of one scan
        rows.append(_row(lines=[_word_line([side], 100)], index=1))
        rows[-1]["side"] = side
    book = _book(*rows)
    m, files = iiif.manifest(book, ExportContext("/nonexistent", base_url=BASE))
    assert m["@context"][-1] == "http://iiif.io/api/presentation/3/context.json"
    name = book.name
    assert m["id"] == f"{BASE}iiif/{name}/manifest.json"
    assert [c["label"] for c in m["items"]] == [{"none": ["xiv"]}, {"none": ["2 (left)"]}, {"none": ["2 (right)"]}]
    first = m["items"][0]
    assert (first["width"], first["height"]) == (1000, 1400)  # the scan as loaded
    [painting] = first["items"][0]["items"]
    assert painting["motivation"] == "painting" and painting["target"] == first["id"]
    assert painting["body"] == {"id": f"{BASE}images/{name}/00001.jpg", "type": "Image", "format": "image/jpeg",
                                "width": 1000, "height": 1400}
    assert m["items"][2]["items"][0]["items"][0]["body"]["id"] == f"{BASE}images/{name}/00002-right.jpg"
    # the text: AnnotationPages of their own, referenced from the canvas (a viewer fetches them by id)
    assert [a["id"] for a in first["annotations"]] == [f"{BASE}iiif/{name}/annotations/00001-{k}.json" for k in ("lines", "words")]
    assert sorted(files) == [f"annotations/{k}-{kind}.json" for k in ("00001", "00002-left", "00002-right") for kind in ("lines", "words")]
    lines, words = files["annotations/00001-lines.json"], files["annotations/00001-words.json"]
    assert lines["id"] == first["annotations"][0]["id"] and lines["@context"] == iiif.CONTEXT
    assert [a["textGranularity"] for a in lines["items"]] == ["line", "line"]
    assert [a["textGranularity"] for a in words["items"]] == ["word"] * 3
    assert all(a["motivation"] == "supplementing" and a["body"]["type"] == "TextualBody"
               for a in lines["items"] + words["items"])
    assert [a["body"]["value"] for a in lines["items"]] == ["Call me", "Ishmael."]
    assert [a["body"]["value"] for a in words["items"]] == ["Call", "me", "Ishmael."]
    # _word_line: words 20 px a letter, 15 px apart, from x=100; lines 30 px high
    assert lines["items"][0]["target"] == f"{first['id']}#xywh=100,100,135,30"
    assert [a["target"].split("#")[1] for a in words["items"]] == ["xywh=100,100,80,30", "xywh=195,100,40,30", "xywh=100,140,160,30"]
    alto_link, hocr_link = first["seeAlso"]
    assert alto_link["id"] == f"{BASE}alto/{name}/00001.xml" and alto_link["profile"] == iiif.ALTO_PROFILE
    assert hocr_link["id"] == f"{BASE}hocr/{name}.html#page_1" and hocr_link["format"] == "text/vnd.hocr+html"
    assert m["seeAlso"][0]["id"] == f"{BASE}hocr/{name}.html"
    ids = [a["id"] for p in files.values() for a in p["items"]]
    assert len(ids) == 5 + 2 + 2 and len(set(ids)) == len(ids)  # unique across canvases, sides included
    _prezi(m)  # last: the checks above do not depend on iiif-prezi3 being installed
    for page in files.values():
        _prezi_page(page)


def test_page_text_without_boxes_failed_pages_and_relative_links():
    lines = [OcrLine("Call me Ishmael.", 0.8, ()), OcrLine("Some years ago", 0.7, ())]  # a VLM's page text
    vlm = _row(lines=lines, index=0)
    blank = _row(status="blank", index=1)
    failed = _row(status="error", error="render failed", index=2)
    failed["source_width"] = failed["source_height"] = None  # the page never loaded
    book = _book(vlm, blank, failed)
    m, files = iiif.manifest(book, CTX)
    assert len(m["items"]) == 2  # the page without an image has no canvas, and the metadata says so
    meta = {e["label"]["en"][0]: e["value"]["none"][0] for e in m["metadata"]}
    assert meta["Pages without an image"].startswith("page 3 ")
    assert list(files) == ["annotations/00001-page.json"] and len(m["items"][0]["annotations"]) == 1
    [whole] = files["annotations/00001-page.json"]["items"]
    assert whole["textGranularity"] == "page" and whole["target"] == m["items"][0]["id"]  # no invented box
    assert whole["body"]["value"] == vlm["text"]
    assert "annotations" not in m["items"][1]  # blank: nothing to say
    # without --base-url every link is relative to DEST/iiif/<book>/manifest.json
    assert m["items"][0]["items"][0]["items"][0]["body"]["id"] == f"../../images/{book.name}/00001.jpg"
    assert m["items"][0]["seeAlso"][0]["id"] == f"../../alto/{book.name}/00001.xml"
    with pytest.raises(ValueError, match="relative URL without a base"):  # IIIF wants absolute URIs: --base-url
        _prezi(m)
    _prezi(iiif.manifest(book, ExportContext("/nonexistent", base_url=BASE))[0])


# --- a real job, exported and opened in Mirador ----------------------------------------------------

def _page(n: int, text: str) -> np.ndarray:
    """A book page with its number printed in the running head, as old books print it."""
    return text_page_image(f"{n}                                    THE BOOK OF TESTS\n\n{text}")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A 3-page PDF book (printed page numbers 11-13) and a folder book (a colour page), run by a real job, exported
    under DEST served over HTTP on 127.0.0.1 with --base-url pointing there, and again without it
    (served too, under relative/)."""
    root = tmp_path_factory.mktemp("iiif")
    src, out, dest = root / "src", root / "out", root / "dest"
    (src / "folder_book").mkdir(parents=True)
    (src / "book.pdf").write_bytes(scanned_pdf([_page(11 + i, PARAGRAPHS[i]) for i in range(3)]))
    (src / "folder_book" / "p1.png").write_bytes(png_bytes(_sepia(text_page_image(PARAGRAPHS[1]))))  # a colour scan
    summary = run_job(JobConfig(source=str(src), output=str(out), executor="local", progress=False))
    assert summary.ok and summary.pages == 4
    dest.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{server.server_address[1]}/"
    base = origin + "dest/"  # DEST as served; the export without a base URL is served at origin/relative/
    assert main(["export", str(out), str(dest), "--format", "images,alto,hocr,iiif", "--base-url", base]) == 0
    assert main(["export", str(out), str(root / "relative"), "--format", "images,alto,hocr,iiif"]) == 0
    rows = pq.read_table(out / "pages").to_pylist()
    yield {"root": root, "src": src, "out": out, "dest": dest, "base": base, "origin": origin, "rows": rows}
    server.shutdown()


def _manifests(folder) -> dict:
    found = {}
    for book in sorted(os.listdir(os.path.join(folder, "iiif"))):
        with open(os.path.join(folder, "iiif", book, "manifest.json"), "rb") as f:
            found[book] = json.load(f)
    return found


def test_page_images_are_the_scans_as_loaded(served):
    from PIL import Image

    from folioscan.export.dataset import image_file, books_from_rows

    docs = pq.read_table(served["out"] / "documents").to_pylist()
    books = list(books_from_rows(served["rows"], docs))
    assert sum(len(b.pages) for b in books) == 4
    for book in books:
        for page in book.pages:
            with Image.open(served["dest"] / "images" / image_file(book, page)) as im:
                assert im.format == "JPEG" and im.size == (page["source_width"], page["source_height"])
                assert im.mode == ("RGB" if book.doc["kind"] == "images" else "L")  # the colour scan in colour
                if im.mode == "RGB":
                    r, g, b = np.asarray(im, dtype=np.float32).reshape(-1, 3).mean(axis=0)
                    assert r > g + 10 > b + 20  # yellowed paper, as scanned
                pixels = np.asarray(im.convert("L"), dtype=np.int16)
            # the words' boxes (box_source) lie on ink in the image: the image is in the boxes' pixels
            for line in page["lines"]:
                for w in line["words"]:
                    x0, y0, x1, y1 = w["box_source"]
                    assert pixels[y0:y1, x0:x1].min() < 100, (page["page_index"], w["text"])
    book = next(b for b in books if b.doc["kind"] == "pdf")
    with Image.open(served["dest"] / "images" / image_file(book, book.pages[0])) as im:
        expected = _page(11, PARAGRAPHS[0])  # what the PDF embeds, at its native resolution
        assert im.size == expected.shape[::-1]
        assert np.abs(np.asarray(im.convert("L"), dtype=np.int16) - expected).mean() < 3  # JPEG, quality 85


def test_manifests_validate_and_every_link_resolves(served):
    base = served["base"]
    published = []  # the --base-url export's manifests and annotation pages, for iiif-prezi3 at the end
    for folder, absolute in ((served["dest"], True), (served["root"] / "relative", False)):
        for book, m in _manifests(folder).items():
            if absolute:
                published.append(m)
            where = f"{base}iiif/{book}/manifest.json" if absolute else posixpath.join(str(folder), "iiif", book, "manifest.json")
            links = [m["seeAlso"][0]["id"]] + [c["items"][0]["items"][0]["body"]["id"] for c in m["items"]] + \
                [s["id"] for c in m["items"] for s in c["seeAlso"]] + [a["id"] for c in m["items"] for a in c["annotations"]]
            assert sum("/annotations/" in link for link in links) == 2 * len(m["items"])  # lines and words of each page
            for link in links:
                path = link.split("#")[0]
                if absolute:
                    assert path.startswith(base)
                    path = os.path.join(str(folder), path[len(base):])
                else:
                    assert not path.startswith(("/", "http"))
                    path = posixpath.normpath(posixpath.join(posixpath.dirname(where), path))
                assert os.path.isfile(path), link
                if "/annotations/" in link and absolute:
                    with open(path, "rb") as f:
                        page = json.load(f)
                    assert page["id"] == link
                    published.append(page)
    m = next(v for k, v in _manifests(served["dest"]).items() if k.startswith("book-"))
    assert m["label"] == {"none": ["book.pdf"]}
    assert [c["label"]["none"][0] for c in m["items"]] == ["11", "12", "13"]  # the printed page numbers
    words_file = m["items"][0]["annotations"][1]["id"][len(served["base"]):]
    with open(served["dest"] / words_file, "rb") as f:
        words = json.load(f)["items"]
    assert len(words) > 20 and all(a["textGranularity"] == "word" and a["target"].startswith(m["items"][0]["id"] + "#xywh=")
                                   for a in words)
    assert len(published) == 2 + 2 * 4  # two manifests, lines and words of 4 pages
    for doc in published:
        (_prezi if doc["type"] == "Manifest" else _prezi_page)(doc)


def _mirador() -> str:
    """Mirador 4's browser bundle: `make mirador` (npm pack) fetches it once into .cache/."""
    if not os.path.isfile(MIRADOR):
        got = subprocess.run(["make", "--no-print-directory", "mirador"], cwd=REPO, capture_output=True, text=True, timeout=300)
        if not os.path.isfile(MIRADOR):
            pytest.skip(f"Mirador 4 could not be fetched from npm (make mirador): {(got.stderr or got.stdout).strip()[-300:]}")
    return MIRADOR


VIEWER = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>folioscan IIIF in Mirador</title></head>
<body style="margin:0"><div id="viewer" style="position:absolute;inset:0"></div>
<script src="mirador.min.js"></script>
<script>
Mirador.viewer({id: "viewer",
  windows: [{manifestId: MANIFEST, sideBarOpen: true, sideBarPanel: "annotations", thumbnailNavigationPosition: "far-bottom"}],
  // Mirador lists commenting and tagging annotations by default; OCR text is `supplementing`
  annotations: {filteredMotivations: ["oa:commenting", "oa:tagging", "sc:painting", "commenting", "tagging", "supplementing"]}});
</script></body></html>
"""


def test_manifest_renders_in_mirador_with_its_text_annotations(served):
    """Mirador 4 in headless Chromium, every request outside 127.0.0.1 refused: the thumbnails and
    the page image load, the window shows the printed page number, the annotations panel lists the
    page's lines and words, and selecting a line draws its box on the page. The export without a
    base URL shows the same from a viewer page in the manifest's folder."""
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from tests.browser import chromium_path

    bundle = _mirador()
    dest, base, origin = served["dest"], served["base"], served["origin"]
    m_id = next(m["id"] for k, m in _manifests(dest).items() if k.startswith("book-"))
    with open(bundle, "rb") as f:
        (dest / "mirador.min.js").write_bytes(f.read())
    (dest / "viewer.html").write_text(VIEWER.replace("MANIFEST", json.dumps(m_id)))
    seen = {"errors": [], "refused": [], "served": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.on("pageerror", lambda e: seen["errors"].append(str(e)))
            page.on("response", lambda r: seen["served"].append((r.url[len(origin):], r.status)))

            def only_local(route):
                if route.request.url.startswith(origin):
                    return route.continue_()
                seen["refused"].append(route.request.url)
                return route.abort()

            page.route("**/*", only_local)
            page.goto(base + "viewer.html", wait_until="load")
            items = page.locator("li[annotationid]")
            items.first.wait_for(timeout=30_000)
            # the three thumbnails of the book's pages (not any three images: a loaded machine draws them late)
            page.wait_for_function("() => [...document.images].filter(i => i.complete && i.naturalWidth > 0"
                                   " && i.currentSrc.includes('/images/book-')).length >= 3", timeout=30_000)
            thumbs = page.eval_on_selector_all("img", "els => els.map(e => [e.currentSrc, e.naturalWidth, e.naturalHeight])")
            texts = items.all_inner_texts()
            heading = page.get_by_text("Showing", exact=False).first.inner_text()
            label = page.locator(".mirador-canvas-label").first.inner_text()  # under the page: "1 of 3 • <canvas label>"
            canvas_area = page.locator(".openseadragon-canvas").first
            before = np.asarray(Image.open(io.BytesIO(canvas_area.screenshot())).convert("L"))
            items.first.click()  # select the first line: Mirador draws its box over the page
            page.wait_for_timeout(1000)
            after = np.asarray(Image.open(io.BytesIO(canvas_area.screenshot())).convert("L"))
            # docs/iiif-mirador.png is this screenshot: FOLIOSCAN_UPDATE_DOCS=1 writes it there
            shot = os.path.join(REPO, "docs", "iiif-mirador.png") if os.environ.get("FOLIOSCAN_UPDATE_DOCS") else str(dest / "mirador.png")
            page.screenshot(path=shot)
            # the export without --base-url, its links relative to the manifest: Mirador resolves them
            # against its own page, so a viewer page in the manifest's folder shows it all
            rel_book = next(k for k in _manifests(served["root"] / "relative") if k.startswith("book-"))
            (served["root"] / "relative" / "iiif" / rel_book / "viewer.html").write_text(
                VIEWER.replace("MANIFEST", '"manifest.json"').replace('src="mirador.min.js"', 'src="/dest/mirador.min.js"'))
            relative = browser.new_page(viewport={"width": 1280, "height": 860})
            relative.on("pageerror", lambda e: seen["errors"].append(str(e)))
            relative.on("response", lambda r: seen["served"].append((r.url[len(origin):], r.status)))
            relative.route("**/*", only_local)
            relative.goto(f"{origin}relative/iiif/{rel_book}/viewer.html", wait_until="load")
            relative.locator("li[annotationid]").first.wait_for(timeout=30_000)
            drawn = "() => [...document.images].filter(i => i.complete && i.naturalWidth > 0 && i.src.includes('/relative/images/')).length"
            relative.wait_for_function(f"({drawn})() >= 3", timeout=30_000)
            relative_images = relative.evaluate(drawn)  # from the page itself: response events can arrive late
            relative_texts = relative.locator("li[annotationid]").all_inner_texts()
        finally:
            browser.close()
    assert seen["errors"] == [] and seen["refused"] == []
    assert ("dest/" + m_id[len(base):], 200) in seen["served"]
    assert sum(1 for url, status in seen["served"] if url.startswith("dest/images/") and status == 200) >= 3  # 3 pages' images
    assert relative_images >= 3  # the relative export's own page images, drawn
    assert relative_texts == texts and all(status == 200 for url, status in seen["served"] if not url.endswith("favicon.ico"))
    fetched = {url.rsplit("/", 1)[1] for url, status in seen["served"] if url.startswith("dest/") and "/annotations/" in url}
    assert {"00001-lines.json", "00001-words.json"} <= fetched  # the shown page's text, fetched by its id
    # the thumbnails: the three page images, at the scans' size
    pages = sorted((r for r in served["rows"] if r["source_uri"].endswith("book.pdf")), key=lambda r: r["page_index"])
    assert sorted(tuple(t[1:]) for t in thumbs if "/images/book-" in t[0]) == sorted((r["source_width"], r["source_height"]) for r in pages)
    # the page is drawn: the canvas area holds the scan's dark text, not an empty viewer
    assert (before >= 254).mean() > 0.3 and (before < 100).mean() > 0.0005  # white paper (Mirador's ground is grey), black text
    # the text annotations: every line and word of page 11, in the panel
    rows = pages[0]
    n_words = sum(len(l["words"]) for l in rows["lines"])
    assert heading.strip() == f"Showing {len(rows['lines']) + n_words} annotations"
    assert texts[:len(rows["lines"])] == [l["text"] for l in rows["lines"]]
    assert texts[len(rows["lines"]):] == [w["text"] for l in rows["lines"] for w in l["words"]]
    assert label.strip() == "• 11"  # the printed page number names the canvas
    assert np.abs(after.astype(np.int16) - before).max() > 60  # the selected line's box is drawn


def test_page_images_of_a_changed_or_missing_source_are_an_error_not_a_wrong_image(tmp_path, page_images):
    """The images are loaded from the source again: one changed since the run (its boxes measured on
    other pixels) or gone is the book's export error, with the reason, and nothing is written."""
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    (src / "a.pdf").write_bytes(scanned_pdf(page_images[:1]))
    (src / "b.pdf").write_bytes(scanned_pdf(page_images[1:2]))
    assert run_job(JobConfig(source=str(src), output=str(out), executor="local", progress=False)).ok
    (src / "a.pdf").write_bytes(scanned_pdf(page_images[2:3], dpi=100))  # another scan under the same name
    (src / "b.pdf").unlink()
    from folioscan.export import export_dataset

    summary = export_dataset(str(out), str(tmp_path / "dest"), ["images", "iiif"])
    assert sorted(e.split(": ", 2)[1] for e in summary.errors) == ["images", "images"]
    assert any("a.pdf: images: ValueError:" in e and "the source changed since the run" in e for e in summary.errors)
    assert any("b.pdf: images: StorageError:" in e and "no such file" in e for e in summary.errors), summary.errors
    assert not (tmp_path / "dest" / "images").exists()
    assert len(os.listdir(tmp_path / "dest" / "iiif")) == 2  # the manifests do not need the source


def test_a_book_without_a_page_to_show_gets_no_manifest():
    failed = _row(status="error", error="not a PDF", index=0)
    failed["source_width"] = failed["source_height"] = None
    assert list(iiif.write_book(_book(failed), CTX)) == [] and list(iiif.write_book(_book(), CTX)) == []


def test_a_manifest_whose_linked_files_were_not_exported_says_so(tmp_path):
    """IIIF exported alone: its images, ALTO and hOCR links point at nothing, and the export's warnings say which."""
    rows = [_row(lines=[_word_line(["Call", "me"], 100)]), _row(lines=[_word_line(["Ishmael."], 100)], index=1)]
    book = _book(*rows)
    dest = tmp_path / "dest"
    (dest / "alto" / book.name).mkdir(parents=True)
    (dest / "alto" / book.name / "00001.xml").write_text("<alto/>")  # one of the two ALTO files is there
    ctx = ExportContext("/nonexistent", dest=str(dest))
    assert [rel for rel, _ in iiif.write_book(book, ctx)][-1] == f"{book.name}/manifest.json"
    [warning] = ctx.warnings
    assert "hocr 1 of 1" in warning and "images 2 of 2" in warning and "alto 1 of 2" in warning
    assert f"{book.name}/00002.xml" in warning
