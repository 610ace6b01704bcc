"""Word boxes for VLM-read pages (`--boxes tesseract`) through real jobs: the `truth` engine plays a
VLM that reads perfectly (its text is the pages' own), the tiny random VLM a real one that reads
noise. Tesseract, Parquet, the exports and the ALTO schema are the real ones."""
import glob
import json
import os
import re
import shutil

import pyarrow.parquet as pq
import pytest

from folioscan.export import alto
from folioscan.pipeline.cli import main
from tests.helpers import PARAGRAPHS, cer, normalized, scanned_pdf, text_page_image

TEXTS = [PARAGRAPHS[0] + " " + PARAGRAPHS[1], PARAGRAPHS[2]]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A scanned two-page book and a truth manifest giving each page's text, one paragraph a line."""
    root = tmp_path_factory.mktemp("vlmboxes")
    (root / "src").mkdir()
    (root / "src" / "book.pdf").write_bytes(scanned_pdf([text_page_image(t) for t in TEXTS]))
    (root / "gt").mkdir()
    rows = ["source,page_index,gt"]
    for i, t in enumerate(TEXTS):
        (root / "gt" / f"p{i}.txt").write_text(t.replace(". ", ".\n", 1))  # two "VLM lines" per page
        rows.append(f"book.pdf,{i},gt/p{i}.txt")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


def run(source, out, *extra, executor="local"):
    summary = out.parent / (out.name + ".json")
    code = main(["run", str(source / "src"), str(out), "--engine", "truth", "--truth", str(source / "manifest.csv"),
                 "--executor", executor, "--quiet", "--summary-json", str(summary), *extra])
    return code, pq.read_table(out / "pages").to_pylist(), json.loads(summary.read_text())


@pytest.fixture(scope="module")
def boxed(source):
    out = source / "out"
    code, rows, summary = run(source, out, "--boxes", "tesseract", "--also", "alto,hocr,pdf,images,iiif")
    assert code == 0
    return out, sorted(rows, key=lambda r: r["page_index"]), summary


def test_without_boxes_a_text_only_engine_locates_nothing(source):
    code, rows, _ = run(source, source / "plain")
    assert code == 0
    for row in rows:
        assert row["box_level"] == "none" and row["box_alignment"] is None
        assert all(not l["box"] and not l["words"] for l in row["lines"])


def test_with_boxes_the_engines_words_lie_on_tesseracts_boxes(boxed):
    _, rows, summary = boxed
    assert summary["pages_boxes_failed"] == 0
    for row, truth in zip(rows, TEXTS):
        a = row["box_alignment"]
        n = len(truth.split())
        assert row["box_level"] == "words" and a["error"] is None and a["engine"].startswith("tesseract ")
        assert a["words"] + a["lines"] + a["none"] == n and a["words"] >= 0.95 * n
        assert a["tesseract_ms"] > 0 and a["align_ms"] > 0
        # the page text is the engine's, unchanged; the lines are the printed lines, in its words
        assert row["text"] == truth.replace(". ", ".\n", 1)
        assert len(row["lines"]) > 2  # the engine's two "lines" cut into the printed lines
        assert normalized("\n".join(" ".join(w["text"] for w in l["words"]) for l in row["lines"])) == normalized(truth)
        words = [w for l in row["lines"] for w in l["words"]]
        boxed_words = [w for w in words if w["box"]]
        assert len(boxed_words) >= 0.95 * n and all(w["box_source"] for w in boxed_words)
        for line in row["lines"]:
            inside = [w["box"] for w in line["words"] if w["box"]]
            if inside:  # a line's box is the union of its words' measured boxes
                assert line["box"] == [min(b[0] for b in inside), min(b[1] for b in inside),
                                       max(b[2] for b in inside), max(b[3] for b in inside)]
            else:
                assert line["box"] is None


def test_boxes_through_the_ray_executor(source, tmp_path, ray_local, boxed):
    """The box read runs in the Ray loader tasks and rides on the page to the OCR actor."""
    code, rows, summary = run(source, tmp_path / "out", "--boxes", "tesseract", executor="ray")
    assert code == 0 and summary["pages_boxes_failed"] == 0
    assert summary["engine_loads"] == summary["ocr_actors"]  # the actors built no Tesseract: the loaders read
    local = {r["page_index"]: r for r in boxed[1]}
    for row in rows:
        assert row["box_level"] == "words"
        same = {k: v for k, v in row["box_alignment"].items() if not k.endswith("_ms")}
        assert same == {k: v for k, v in local[row["page_index"]]["box_alignment"].items() if not k.endswith("_ms")}
        assert row["lines"] == local[row["page_index"]]["lines"]


def test_alto_of_boxed_vlm_pages_validates_and_its_strings_have_coordinates(boxed):
    out, rows, _ = boxed
    files = sorted(glob.glob(str(out / "alto" / "*" / "*.xml")))
    assert len(files) == 2
    for path, truth in zip(files, TEXTS):
        xml = open(path, "rb").read()
        assert alto.validate(xml) == [], path
        strings = re.findall(rb"<String [^>]*>", xml)
        located = [s for s in strings if b"HPOS=" in s]
        assert len(strings) >= len(truth.split()) and len(located) >= 0.95 * len(truth.split())
        assert len(re.findall(rb"<TextLine [^>]*HPOS=", xml)) > 2


def test_iiif_word_annotations_of_boxed_vlm_pages_target_their_boxes(boxed):
    out, rows, _ = boxed
    for row, truth in zip(rows, TEXTS):
        [words_file] = glob.glob(str(out / "iiif" / "*" / "annotations" / f"{row['page_index'] + 1:05d}-words.json"))
        items = json.loads(open(words_file).read())["items"]
        assert all(a["motivation"] == "supplementing" and a["textGranularity"] == "word" for a in items)
        assert "#xywh=" in items[0]["target"] and len(items) >= 0.95 * len(truth.split())
        assert normalized(" ".join(a["body"]["value"] for a in items)) in normalized(truth)  # the engine's words


def test_hocr_words_of_boxed_vlm_pages_carry_bboxes(boxed):
    out, _, _ = boxed
    [path] = glob.glob(str(out / "hocr" / "*.html"))
    html = open(path, encoding="utf-8").read()
    words = re.findall(r'<span class="ocrx_word"[^>]*title="([^"]*)"', html)
    n = sum(len(t.split()) for t in TEXTS)
    assert len(words) >= n and sum("bbox" in w for w in words) >= 0.95 * n


def test_the_pdf_of_boxed_vlm_pages_has_their_text_layer(boxed):
    import pymupdf

    out, _, _ = boxed
    [path] = glob.glob(str(out / "pdf" / "*.pdf"))
    doc = pymupdf.open(path)
    for page, truth in zip(doc, TEXTS):
        assert cer(page.get_text(), truth) < 0.02


def test_a_failed_box_read_keeps_the_text_without_boxes_and_says_so(source, tmp_path):
    broken = tmp_path / "tessdata"
    broken.mkdir()
    (broken / "eng.traineddata").write_bytes(b"not language data")
    config = tmp_path / "job.json"
    config.write_text(json.dumps({"engine": {"kind": "truth", "boxes": "tesseract",
                                             "boxes_tesseract": {"tessdata": str(broken)}}}))
    code, rows, summary = run(source, tmp_path / "out", "--config", str(config))
    assert code == 0 and summary["pages_boxes_failed"] == 2
    for row, truth in zip(sorted(rows, key=lambda r: r["page_index"]), TEXTS):
        a = row["box_alignment"]
        assert row["status"] == "ok" and row["text"] == truth.replace(". ", ".\n", 1)
        assert row["box_level"] == "none" and a["error"].startswith("tesseract") and a["none"] == len(truth.split())


def test_configuration_errors_exit_2_before_any_work(source, tmp_path):
    src = str(source / "src")
    assert main(["run", src, str(tmp_path / "a"), "--engine", "truth", "--executor", "local", "--quiet"]) == 2  # no --truth
    assert main(["run", src, str(tmp_path / "b"), "--boxes", "tesseract", "--executor", "local", "--quiet"]) == 2  # tesseract has its own
    assert not os.path.exists(tmp_path / "a" / "pages") and not os.path.exists(tmp_path / "b" / "pages")


def test_the_tiny_vlm_in_a_whole_job_with_boxes(tmp_path, source):
    from folioscan.workers.engines.vlm.random_init import save_random_model

    model = save_random_model("deepseek-ocr-2", str(tmp_path / "model"))
    out = tmp_path / "out"
    code = main(["run", str(source / "src"), str(out), "--engine", "deepseek-ocr-2", "--model", model, "--device", "cpu",
                 "--executor", "local", "--max-new-tokens", "24", "--max-attempts", "1", "--vlm-batch-size", "2",
                 "--batch-size", "2", "--boxes", "tesseract", "--also", "alto", "--quiet"])
    assert code == 0
    rows = pq.read_table(out / "pages").to_pylist()
    assert len(rows) == 2
    for row in rows:
        a = row["box_alignment"]
        assert a is not None and a["error"] is None and a["tesseract_ms"] > 0
        assert a["words"] + a["lines"] + a["none"] == len(row["text"].split())  # every word of its reading counted
        assert row["box_level"] == ("words" if a["words"] else "lines" if a["lines"] else "none")
    for path in glob.glob(str(out / "alto" / "*" / "*.xml")):
        assert alto.validate(open(path, "rb").read()) == []
    shutil.rmtree(tmp_path / "model")


def test_a_page_turned_after_the_box_read_is_read_again_in_its_new_orientation():
    """The OCR stage's 180-degree re-read may turn a page after the page stage's box read: the boxes
    must be those of the turned image the page keeps, not of the one Tesseract read first."""
    import numpy as np

    from folioscan.records import OcrLine, OcrResult, PageWork
    from folioscan.workers.boxes import place_words, read_boxes
    from folioscan.workers.engines.registry import TruthOptions

    options = TruthOptions(manifest="unused.csv", boxes="tesseract")
    upside_down = np.ascontiguousarray(text_page_image(PARAGRAPHS[0])[::-1, ::-1])
    work = PageWork("d", "book.pdf", 0, 1, image=upside_down)
    read_boxes(work, options)
    assert work.box_read.orientation == 0 and not work.box_read.result.error
    work.image, work.prep.orientation = np.ascontiguousarray(upside_down[::-1, ::-1]), 180  # what the stage does
    ocr = OcrResult(PARAGRAPHS[0], [OcrLine(PARAGRAPHS[0], 0.9, ())], 0.9)
    place_words(work, ocr, options)
    n = len(PARAGRAPHS[0].split())
    assert ocr.box_alignment.error is None and ocr.box_alignment.words >= 0.95 * n
    upright = PageWork("d", "book.pdf", 0, 1, image=work.image)
    read_boxes(upright, options)
    boxes = [tuple(w.box) for l in upright.box_read.result.lines for w in l.words]
    assert [tuple(w.box) for l in ocr.lines for w in l.words if w.box] == boxes[:ocr.box_alignment.words]


def test_the_pdf_layer_writes_a_words_without_box_with_its_boxed_neighbour():
    from folioscan.export.pdf import _boxed_runs

    words = [{"text": "Lo", "box": None}, {"text": "It", "box": [0, 0, 10, 10]}, {"text": "wus", "box": None},
             {"text": "the", "box": [20, 0, 40, 10]}, {"text": "end", "box": None}]
    assert _boxed_runs(words) == [("Lo It wus", [0, 0, 10, 10]), ("the end", [20, 0, 40, 10])]
    assert _boxed_runs([{"text": "no", "box": None}]) == []
