"""The driver's memory is bounded by pages in flight, not by a book's length: page results leave it as
they arrive (their rows spilled to a local file per book, pipeline/spill.py), a book read again from
its first page drops what it spilled, and a driver killed mid-book leaves exactly-once intact."""
import io
import os
import signal
import subprocess
import sys
import time
import weakref

import pandas as pd
import pyarrow.parquet as pq
import pytest

from folioscan.pipeline.assemble import _page_text_columns, assemble_books, assemble_shard
from folioscan.pipeline.pagerows import PAGE_TEXT, BookPages, PageRows
from folioscan.pipeline.config import JobConfig
from folioscan.pipeline.job import run_job
from folioscan.pipeline.shards import BookSink
from folioscan.pipeline.spill import LOCK, PREFIX, Spill, remove_dead
from folioscan.records import PageResult, PageWork, SourceDocument
from folioscan.schemas import PAGES
from folioscan.text.book import PageText, book_text
from folioscan.text.page import TextPage
from folioscan.workers.engines.synthetic import SyntheticEngine
from tests.helpers import png_bytes, text_page_image

WORDS = 300  # the synthetic engine's words per page


def long_pdf(path, pages: int) -> None:
    """A scanned-style PDF of `pages` pages, all showing one small page image (stored once)."""
    import pymupdf

    img = text_page_image("A page of a long book, read by the synthetic engine.", dpi=40)
    doc = pymupdf.open()
    xref = 0
    for _ in range(pages):
        page = doc.new_page(width=img.shape[1] * 72 / 40, height=img.shape[0] * 72 / 40)
        xref = page.insert_image(page.rect, stream=png_bytes(img) if not xref else None, xref=xref)
    doc.save(str(path))


class HeldResults:
    """How many PageResult objects are alive in the driver at most: each result the driver turns into a
    row (`BookPages.append`: the local executor's, and a Ray driver's own fallback) is tracked by a weak
    reference and the live ones are counted at every arrival; the pages that arrive already made into
    rows elsewhere (`BookPages.extend`: a Ray actor's PageParts) are counted apart."""

    def __init__(self):
        self.refs: list[weakref.ref] = []
        self.peak = self.seen = self.made_elsewhere = 0

    def install(self, monkeypatch) -> None:
        append, extend = BookPages.append, BookPages.extend

        def appended(book, r):
            self.seen += 1
            self.refs = [ref for ref in self.refs if ref() is not None] + [weakref.ref(r)]
            self.peak = max(self.peak, len(self.refs))
            return append(book, r)

        def extended(book, part, texts):
            self.made_elsewhere += len(part.facts)
            return extend(book, part, texts)

        monkeypatch.setattr(BookPages, "append", appended)
        monkeypatch.setattr(BookPages, "extend", extended)


def read(out, name):
    folder = os.path.join(out, name)
    return pd.concat([pq.read_table(os.path.join(folder, n)).to_pandas() for n in sorted(os.listdir(folder))
                      if n.endswith(".parquet")])


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "ray"])
def test_a_300_page_books_results_are_not_held_by_the_driver(tmp_path, executor, request, monkeypatch):
    if executor == "ray":
        request.getfixturevalue("ray_local")
    src, spill = tmp_path / "src", tmp_path / "spill"
    src.mkdir()
    long_pdf(src / "long.pdf", 300)
    cfg = JobConfig(source=str(src), output=str(tmp_path / "out"), executor=executor, ocr_workers=1,
                    engine={"kind": "synthetic", "words": WORDS}, prep={"enabled": False}, progress=False,
                    spill_dir=str(spill))
    held = HeldResults()
    held.install(monkeypatch)
    summary = run_job(cfg)
    assert summary.status == "finished" and summary.pages == 300 and summary.documents == 1
    # the driver used to hold every page's result (300 words with boxes each) until the book committed:
    # all 300 at the last page; now only the batch that just arrived (4 pages a call) is alive, and
    # on Ray none reaches the driver: the actors send the rows, made
    if executor == "local":
        assert held.seen == 300 and held.made_elsewhere == 0
        assert held.peak <= 8, f"{held.peak} PageResult objects alive in the driver at the peak"
    else:
        assert held.seen == 0 and held.made_elsewhere == 300
    assert os.listdir(spill) == []  # the run's spill folder is gone with the run
    pages, docs = read(cfg.output, "pages"), read(cfg.output, "documents")
    assert list(pages.page_index) == list(range(300)) and docs.pages_ok.item() == 300
    assert pages.lines.map(lambda ls: sum(len(l["words"]) for l in ls)).eq(WORDS).all()  # every word written
    assert docs.text.item() and pages.language.notna().all()  # book text and the page text columns


def _result(doc_id: str, i: int, engine: SyntheticEngine, image, side=None, parts=1) -> PageResult:
    [ocr] = engine.predict_batch([image])
    h, w = image.shape
    work = PageWork(doc_id, f"/src/{doc_id}.pdf", i, 12, width=w, height=h, side=side, parts=parts)
    return PageResult(work, "ok", ocr, "synthetic", engine.version)


def test_spilled_rows_come_back_in_reading_order_with_book_text_as_assembled_in_memory(tmp_path):
    """Results arriving out of order (two actors) are written in reading order; the rows read back from the
    spill are the rows assembled from the results in memory."""
    engine = SyntheticEngine(words=40)
    images = [text_page_image(f"page {i}", dpi=20) for i in range(3)]
    doc = SourceDocument("d1", "/src/d1.pdf", "pdf", (), "sha256:x")
    results = [_result("d1", i, engine, images[i % 3]) for i in range(10)]
    results += [_result("d1", 10, engine, images[0], "left", 2), _result("d1", 10, engine, images[1], "right", 2),
                _result("d1", 11, engine, images[2])]
    arrived = results[8:] + results[4:8] + results[:4]
    spill = Spill(str(tmp_path))
    try:
        sink = BookSink(spill, "run")
        pages = sink(doc)
        for r in arrived:
            pages.append(r)
        page_rows, doc_rows = assemble_books([doc], {"d1": pages}, "run")
        assert isinstance(page_rows, PageRows) and len(page_rows) == 13
        spilled = list(page_rows.rows())
        in_memory, mem_docs = assemble_shard([doc], results, "run")
        assert [(p["page_index"], p["side"]) for p in spilled] == [(i, None) for i in range(10)] + [
            (10, "left"), (10, "right"), (11, None)]
        assert spilled == in_memory and doc_rows[0]["text"] == mem_docs[0]["text"]
        # the book text made from the facts kept is the one made from the whole results
        ordered = sorted(results, key=lambda r: (r.work.page_index, r.work.side == "right"))
        whole = book_text([TextPage.from_engine(r.ocr.text, r.ocr.lines, r.ocr.confidence, width=r.work.width,
                                                height=r.work.height) for r in ordered])
        assert doc_rows[0]["text"] == whole.text and doc_rows[0]["page_spans"] == whole.page_spans
        assert [p["header"] for p in spilled] == [t.header for t in whole.pages]
        part = pq.read_table(io.BytesIO(page_rows.parquet_bytes()))  # the pages part, as the commit writes it
        assert part.equals(pq.read_table(io.BytesIO(PAGES.to_parquet_bytes(in_memory))), check_metadata=True)
        page_rows.discard()
        assert os.listdir(spill.dir) == [LOCK]  # the run's lock, held while it lives
    finally:
        spill.close()
    assert not os.path.exists(spill.dir)


def test_the_page_text_columns_are_those_book_text_fills():
    names = set(_page_text_columns(PageText()))
    assert names == set(PAGE_TEXT) and names <= set(PAGES.names)


def test_a_book_started_again_from_its_first_page_drops_what_it_spilled(tmp_path):
    engine = SyntheticEngine(words=40)
    image = text_page_image("page", dpi=20)
    doc = SourceDocument("d1", "/src/d1.pdf", "pdf", (), "sha256:x")
    spill = Spill(str(tmp_path))
    try:
        sink = BookSink(spill, "run")
        first = sink(doc)
        for i in range(40):  # more than one record batch written to the file
            first.append(_result("d1", i, engine, image))
        assert first.rows.path and os.path.getsize(first.rows.path) > 0
        second = sink(doc)  # the executor's retry of the book from page 1
        assert not os.path.exists(first.rows.path) and len(first) == 0 and len(second) == 0
        second.append(_result("d1", 0, engine, image))
        assert [f.page_index for f in second.facts] == [0]
    finally:
        spill.close()


def test_a_spill_folder_left_by_a_killed_driver_is_removed_and_a_live_ones_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f"{PREFIX}{dead.pid}-abc").mkdir()
    (tmp_path / f"{PREFIX}{dead.pid}-abc" / "0.arrow").write_bytes(b"x")
    (tmp_path / f"{PREFIX}{os.getpid()}-def").mkdir()
    (tmp_path / "unrelated").mkdir()
    assert remove_dead(str(tmp_path)) == 1
    assert sorted(os.listdir(tmp_path)) == sorted([f"{PREFIX}{os.getpid()}-def", "unrelated"])


@pytest.mark.slow
def test_a_driver_killed_mid_book_then_rerun_writes_every_page_once(tmp_path):
    """kill -9 while a long book's rows are spilled and not committed: the rerun reads the book again,
    writes each page once, and removes the dead driver's spill folder."""
    src, out, spill = tmp_path / "src", tmp_path / "out", tmp_path / "spill"
    src.mkdir()
    long_pdf(src / "a_short.pdf", 3)
    long_pdf(src / "b_long.pdf", 200)
    cmd = [sys.executable, "-m", "folioscan", "run", str(src), str(out), "--executor", "local", "--shard-docs", "1",
           "--quiet", "--no-prep", "--engine", "synthetic"]
    env = {**os.environ, "FOLIOSCAN_SPILL_DIR": str(spill), "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def spilled() -> int:
        return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(spill) for f in fs) if spill.exists() else 0

    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        committed = len(os.listdir(out / "documents")) if (out / "documents").exists() else 0
        if committed == 1 and spilled() > 200_000:  # the short book committed, the long one part-way
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed mid-book"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(os.listdir(out / "documents")) == 1 and spilled() > 0  # killed mid-book, its rows on disk
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    pages, docs = read(out, "pages"), read(out, "documents")
    assert len(docs) == 2 and docs.doc_id.is_unique and (docs.status == "ok").all()
    assert len(pages) == 203 and not pages.duplicated(["doc_id", "page_index"]).any()
    assert sorted(pages.groupby("doc_id").size()) == [3, 200]
    assert os.listdir(spill) == []  # the killed driver's folder removed, the rerun's own gone with it


_HOLD_A_SPILL = """
import sys, time
from folioscan.pipeline.spill import Spill
spill = Spill(sys.argv[1])
print(spill.dir, flush=True)
time.sleep(120)
"""


def _driver_holding_a_spill(root) -> tuple[subprocess.Popen, str]:
    """A real process with a Spill open in `root` (as a driver's run has): it prints its folder."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD_A_SPILL, str(root)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    return proc, proc.stdout.readline().strip()


def test_a_live_drivers_spill_folder_is_kept_whatever_pid_its_name_shows(tmp_path):
    """A driver's pid is not a test of its life for another process: a driver in another PID namespace (a
    container sharing the spill folder's volume) or on another host (a shared disk) shows a pid that does
    not exist here, and a killed driver's pid may since belong to another process. Here a live driver's
    folder is given a pid that exists nowhere (a finished process's) and must be kept, and a killed
    driver's folder is given a live pid (this process's) and must be removed."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    live, live_dir = _driver_holding_a_spill(tmp_path)
    killed, killed_dir = _driver_holding_a_spill(tmp_path)
    try:
        assert live_dir and killed_dir and os.path.isdir(live_dir) and os.path.isdir(killed_dir)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        as_elsewhere = tmp_path / f"{PREFIX}{gone.pid}-elsewhere"  # pid as another namespace or host shows it
        os.rename(live_dir, as_elsewhere)
        reused = tmp_path / f"{PREFIX}{os.getpid()}-reused"  # the killed driver's pid now someone else's
        os.rename(killed_dir, reused)
        assert remove_dead(str(tmp_path)) == 1
        assert os.listdir(tmp_path) == [as_elsewhere.name]
        assert live.poll() is None  # still running, its folder still there
    finally:
        live.kill()
        live.wait()


_SMALL_FILES = """
import resource, signal, sys
from folioscan.text.signals import language
language("the language model is loaded (a temporary file of 65 MB) before the limit " * 20)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing the process
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
from folioscan.pipeline.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_a_spill_that_cannot_be_written_stops_the_run_as_a_failed_write_with_its_record(tmp_path):
    """The spill's disk refusing a write mid-run (here a file-size limit the long book's spill passes, as a
    full disk would) is the run's failure to write: exit 74, one line naming the spill, the run record
    written with status failed and the short book committed, not a traceback and no record."""
    import json

    src, out, spill = tmp_path / "src", tmp_path / "out", tmp_path / "spill"
    src.mkdir()
    long_pdf(src / "a_short.pdf", 2)
    long_pdf(src / "b_long.pdf", 120)
    cmd = [sys.executable, "-c", _SMALL_FILES, "200000", "run", str(src), str(out), "--executor", "local",
           "--shard-docs", "1", "--quiet", "--no-prep", "--engine", "synthetic"]
    env = {**os.environ, "FOLIOSCAN_SPILL_DIR": str(spill), "PYTHONPATH": os.getcwd()}
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 74, run.stderr[-2000:]
    assert "Traceback" not in run.stderr and "spill" in run.stderr.splitlines()[-1], run.stderr[-2000:]
    records = os.listdir(out / "_runs")
    assert len(records) == 1
    record = json.loads((out / "_runs" / records[0]).read_text())
    assert record["status"] == "failed" and "spill" in record["summary"]["error"]
    docs = read(out, "documents")
    assert [os.path.basename(u) for u in docs.source_uri] == ["a_short.pdf"]  # committed before the spill failed
    assert os.listdir(spill) == []


def _export_peak(tmp_path, pages: int) -> int:
    """Python's peak allocation (tracemalloc) while `--also alto` writes one spilled book of `pages` pages
    of 300 words with boxes, as the commit calls it."""
    import tracemalloc

    from folioscan.export import ExportContext, ExportSummary, format_function
    from folioscan.pipeline.job import _Exporter

    engine, image = SyntheticEngine(words=WORDS), text_page_image("page", dpi=20)
    doc = SourceDocument("d1", "/src/d1.pdf", "pdf", (), "sha256:x")
    spill = Spill(str(tmp_path / "spill"))
    try:
        book = BookSink(spill, "run")(doc)
        for i in range(pages):
            [ocr] = engine.predict_batch([image])
            work = PageWork("d1", "/src/d1.pdf", i, pages, width=image.shape[1], height=image.shape[0])
            book.append(PageResult(work, "ok", ocr, "synthetic", engine.version))
        page_rows, doc_rows = assemble_books([doc], {"d1": book}, "run")
        out = str(tmp_path / f"out{pages}")
        export = _Exporter({"alto": format_function("alto")}, out, ExportContext(out), ExportSummary())
        tracemalloc.start()
        try:
            export(page_rows, doc_rows)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert len(os.listdir(os.path.join(out, "alto", os.listdir(os.path.join(out, "alto"))[0]))) == pages
        page_rows.discard()
        return peak
    finally:
        spill.close()


@pytest.mark.slow
def test_an_export_reads_a_spilled_book_a_chunk_at_a_time(tmp_path):
    """With `--also`, the exporter handed the formats a book's every pages row at once (dicts with words
    and boxes, read back from the spill), so the driver held the whole book again at commit: peak RSS
    698 MB for 1,500 synthetic pages against 468 MB without the export (BENCHMARKS.md). Now a format
    iterates the book's rows read from the spill a chunk at a time: exporting 10x the pages must not take
    anything like 10x the memory."""
    short, long = _export_peak(tmp_path, 40), _export_peak(tmp_path, 400)
    assert long < 3 * short, (short, long)
