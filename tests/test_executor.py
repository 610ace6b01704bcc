"""The streaming executors: engines loaded once per run, one bad page or book never fails the job,
the per-book page cap, and the shape of the run record (engine loads, per-stage seconds)."""
import io
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from folioscan.pipeline.cli import main
from folioscan.pipeline.config import JobConfig
from folioscan.pipeline.executors import make_executor
from folioscan.pipeline.job import run_job
from folioscan.pipeline.sources import iter_documents
from folioscan.pipeline.stages import Stages
from folioscan.pipeline.storage import store_for
from folioscan.records import PageWork
from folioscan.workers.load import LoadOptions
from folioscan.workers.prep import PrepOptions
from tests.helpers import PARAGRAPHS, EngineBuiltTwice, cer, drive, pages_of, scanned_pdf


def _encode(img, fmt: str, mode: str | None = None, **kw) -> bytes:
    from PIL import Image

    im = Image.fromarray(img)
    if mode == "PA":  # palette with a transparent entry
        im = im.convert("P")
        im.info["transparency"] = 0
    elif mode:
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **({"transparency": 0} if mode == "PA" else {}), **kw)
    return buf.getvalue()


# (file, kind): "text" pages carry PARAGRAPHS[0] in an unusual encoding and must be read;
# "empty" pages hold no text (a strip, all black, all white) and must come out blank
DEGENERATE = [
    ("p01_strip_1px_high.png", "empty"), ("p02_strip_1px_wide.png", "empty"), ("p03_black.png", "empty"),
    ("p04_white.png", "empty"), ("p05_16bit.png", "text"), ("p06_cmyk.jpg", "text"), ("p07_cmyk.tif", "text"),
    ("p08_palette_alpha.png", "text"),
]


def _degenerate_files(page: np.ndarray) -> dict[str, bytes]:
    return {
        "p01_strip_1px_high.png": _encode(np.full((1, 3000), 255, np.uint8), "PNG"),
        "p02_strip_1px_wide.png": _encode(np.full((3000, 1), 255, np.uint8), "PNG"),
        "p03_black.png": _encode(np.zeros((1100, 850), np.uint8), "PNG"),
        "p04_white.png": _encode(np.full((1100, 850), 255, np.uint8), "PNG"),
        "p05_16bit.png": _encode(page.astype(np.uint16) * 257, "PNG"),
        "p06_cmyk.jpg": _encode(page, "JPEG", "CMYK", quality=95),
        "p07_cmyk.tif": _encode(page, "TIFF", "CMYK"),
        "p08_palette_alpha.png": _encode(page, "PNG", "PA"),
    }


@pytest.fixture(scope="module")
def degenerate_library(tmp_path_factory, page_images):
    root = tmp_path_factory.mktemp("degenerate")
    (root / "good_a.pdf").write_bytes(scanned_pdf(page_images[:2]))
    (root / "good_b.pdf").write_bytes(scanned_pdf(page_images[2:3]))
    book = root / "odd_pages"
    book.mkdir()
    for name, data in _degenerate_files(page_images[0]).items():
        (book / name).write_bytes(data)
    good = scanned_pdf(page_images[:2])
    (root / "cut_short.pdf").write_bytes(good[: len(good) // 3])
    (root / "garbage.pdf").write_bytes(b"%PDF-1.7\n" + os.urandom(4000))
    return root


def _tables(out):
    docs = pq.read_table(os.path.join(out, "documents")).to_pandas()
    docs.index = docs.source_uri.str.rsplit("/", n=1).str[-1]
    return docs, pq.read_table(os.path.join(out, "pages")).to_pandas()


@pytest.mark.parametrize("executor", ["local", pytest.param("ray", marks=pytest.mark.ray)])
def test_degenerate_pages_and_corrupt_pdfs_become_rows_and_the_good_pages_are_written(
        degenerate_library, tmp_path, executor, request):
    if executor == "ray":
        request.getfixturevalue("ray_local")
    out = str(tmp_path / "out")
    code = main(["run", str(degenerate_library), out, "--executor", executor, "--shard-docs", "2", "--quiet"])
    assert code == 1  # finished, with failed books: not a crash
    docs, pages = _tables(out)
    assert len(docs) == 5 and docs.doc_id.is_unique
    assert not pages.duplicated(["doc_id", "page_index", "side"]).any()
    for name, texts in (("good_a.pdf", PARAGRAPHS[:2]), ("good_b.pdf", PARAGRAPHS[2:3])):
        got = pages[pages.doc_id == docs.loc[name, "doc_id"]].sort_values("page_index")
        assert docs.loc[name, "status"] == "ok" and list(got.status) == ["ok"] * len(texts)
        assert [cer(t, p) < 0.05 for t, p in zip(got.text, texts)] == [True] * len(texts)
    odd = pages[pages.doc_id == docs.loc["odd_pages", "doc_id"]].sort_values("page_index")
    assert list(odd.page_index) == list(range(len(DEGENERATE)))
    for (name, kind), (_, row) in zip(DEGENERATE, odd.iterrows()):
        if kind == "text":
            assert row.status == "ok" and cer(row.text, PARAGRAPHS[0]) < 0.05, name
        else:
            assert row.status == "blank" and row.text == "", name
    for name in ("cut_short.pdf", "garbage.pdf"):
        assert docs.loc[name, "status"] == "error" and docs.loc[name, "error"], name
        assert docs.loc[name, "error_kind"] == "permanent"
        rows = pages[pages.doc_id == docs.loc[name, "doc_id"]]
        assert (rows.status != "ok").all()  # (a truncated PDF's lost pages as errors, not blanks: issue 10.5)
        assert rows[rows.status == "error"].error.str.len().gt(0).all()


def test_an_exception_while_cleaning_a_page_becomes_that_pages_error_row(tmp_path):
    stages = Stages(store_for(str(tmp_path)), LoadOptions(), PrepOptions(), engine=None)
    work = PageWork("doc", "file:///book.pdf", 3, 10, image=np.zeros((50, 40, 3), np.float64))  # no cleaning step takes this
    [row] = stages.prepare(work)
    assert row.image is None and row.parts == 1
    assert row.error.startswith("file:///book.pdf page 4: cleaning: ValueError: ") and row.error_kind == "permanent"  # page_index 3


def test_page_cap_reads_the_first_pages_and_records_the_rest(tmp_path, page_images):
    src = tmp_path / "src"
    src.mkdir()
    (src / "long.pdf").write_bytes(scanned_pdf([page_images[i % 3] for i in range(5)]))
    (src / "short.pdf").write_bytes(scanned_pdf(page_images[:1]))
    out = str(tmp_path / "out")
    summary = run_job(JobConfig(source=str(src), output=out, executor="local", max_pages_per_book=2, progress=False))
    docs, pages = _tables(out)
    long = docs.loc["long.pdf"]
    assert long.status == "partial" and long.page_count == 5 and long.pages_ok == 2
    assert "pages 3..5 not read (--max-pages-per-book 2)" in long.error and long.error_kind == "permanent"
    assert sorted(pages[pages.doc_id == long.doc_id].page_index) == [0, 1]
    assert docs.loc["short.pdf", "status"] == "ok"
    assert summary.documents_partial == 1


@pytest.mark.parametrize("value", ["0", "-1"])
def test_shard_docs_below_one_is_rejected(tmp_path, capsys, value):
    assert main(["run", str(tmp_path), str(tmp_path / "out"), "--executor", "local", "--shard-docs", value]) == 2
    assert "shard_docs" in capsys.readouterr().err


@pytest.mark.ray
def test_ray_run_of_many_shards_loads_each_engine_once(tmp_path, page_images, ray_local):
    """Eight one-book shards with one shard open at a time: the old executor built a new actor
    pool (and loaded every engine again) for every window of shards."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(8):
        (src / f"book{i}.pdf").write_bytes(scanned_pdf([page_images[i % 3]]))
    out = tmp_path / "out"
    summary_file = tmp_path / "summary.json"
    code = main(["run", str(src), str(out), "--executor", "ray", "--shard-docs", "1", "--ocr-workers", "2",
                 "--quiet", "--summary-json", str(summary_file)])
    assert code == 0
    summary = json.loads(summary_file.read_text())
    assert len(summary["shards"]) == 8 and summary["pages"] == 8
    assert summary["ocr_actors"] == 2 and summary["engine_loads"] == 2
    [record] = os.listdir(out / "_runs")
    run = json.loads((out / "_runs" / record).read_text())["summary"]
    assert run["engine_loads"] == 2
    assert run["oom_backoffs"] == 0 and run["vlm_batch_size"] is None  # Tesseract never backs off
    assert {k: v["pages"] for k, v in run["stages"].items()} == {"load": 8, "clean": 8, "ocr": 8, "write": 8}
    assert all(v["seconds"] > 0 for v in run["stages"].values())


@pytest.mark.parametrize("executor", ["local", pytest.param("ray", marks=pytest.mark.ray)])
def test_an_engine_built_again_inside_a_worker_counts_as_a_second_load(tmp_path, page_images, executor, request):
    """engine_loads counts engines really built, not workers started: one worker that builds its
    engine twice reports 2 (each executor used to report one load per worker whatever happened)."""
    if executor == "ray":
        request.getfixturevalue("ray_local")
    src = tmp_path / "src"
    src.mkdir()
    (src / "book.pdf").write_bytes(scanned_pdf(page_images[:1]))
    cfg = JobConfig(source=str(src), output=str(tmp_path / "out"), executor=executor, ocr_workers=1, progress=False)
    store = store_for(cfg.source)
    ex = make_executor(cfg, EngineBuiltTwice(store, cfg.load_options(), cfg.prep, cfg.engine))
    try:
        done = drive(ex, iter_documents(store, cfg.source))
        stats = ex.stats()
    finally:
        ex.close()
    [(doc, book)] = done
    [page] = pages_of(doc, book)
    assert page["status"] == "ok" and cer(page["text"], PARAGRAPHS[0]) < 0.05
    assert (stats["ocr_actors"], stats["engine_loads"]) == (1, 2)
    assert stats["oom_backoffs"] == 0 and "vlm_batch_size" not in stats  # no back-off: the run record keeps its None


@pytest.mark.parametrize("executor", ["local", pytest.param("ray", marks=pytest.mark.ray)])
def test_a_book_whose_text_raises_is_a_permanent_error_row_in_either_executor(tmp_path, page_images, executor,
                                                                               request, monkeypatch):
    """A book whose text cannot be made (book text raising on it: here one entry among its TextFacts it
    cannot read). The Ray executor makes it a permanent error row (ray_texts.TextFailed); the local one
    made its text only at commit (assemble_books), where the exception escaped and crashed the whole run,
    every other book of the run lost with it. Both now: that book a permanent error, the others written."""
    from folioscan.pipeline import job
    from folioscan.pipeline.pagerows import BookPages
    from folioscan.records import DOCUMENT_LEVEL

    if executor == "ray":
        request.getfixturevalue("ray_local")

    class TextRaises(BookPages):
        def append(self, r):  # a page's result (the local executor); not the error row of a book given up
            f = super().append(r)
            if f.page_index != DOCUMENT_LEVEL:
                self.texts.append(["not a TextFacts"])
            return f

        def extend(self, part, texts) -> None:
            super().extend(part, texts)
            self.texts.append(["not a TextFacts"])

    class Sink(job.BookSink):
        def __call__(self, doc):
            pages = super().__call__(doc)
            if "text-raises" in doc.uri:
                pages.__class__ = TextRaises
            return pages

    monkeypatch.setattr(job, "BookSink", Sink)
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a", "b-text-raises", "c"):
        (src / f"{name}.pdf").write_bytes(scanned_pdf([page_images[i % len(page_images)] for i in range(2)]))
    out = str(tmp_path / "out")
    summary = run_job(JobConfig(source=str(src), output=out, executor=executor, ocr_workers=1, progress=False,
                                shard_docs=3))
    assert summary.status == "finished"
    docs, pages = _tables(out)
    assert docs.loc["a.pdf", "status"] == docs.loc["c.pdf", "status"] == "ok"
    bad = docs.loc["b-text-raises.pdf"]
    assert bad.status == "error" and bad.error_kind == "permanent", bad
    assert "book text: AttributeError" in bad.error and "gave up after" not in bad.error, bad.error
    assert (pages.doc_id == bad.doc_id).sum() == 0
    assert sorted(pages[pages.doc_id != bad.doc_id].page_index) == [0, 0, 1, 1]
