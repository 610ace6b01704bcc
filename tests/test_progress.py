"""Progress people can read (issue 17): a real `folioscan run` with stderr a pipe prints plain lines
with pages x/y, books, pages/s, ETA and books failed, moved by pages as they finish (not by shard
commits); the run record keeps the last numbers; the report's throughput chart comes from the pages'
completion times and agrees with the summary's pages/s."""
import io
import json
import os
import re
import subprocess
import sys

import pytest

from folioscan.pipeline.progress import Progress
from folioscan.pipeline.pagerows import PageFacts
from folioscan.records import DOCUMENT_LEVEL, PageResult, PageWork
from tests.helpers import pythonpath_with_repo, scanned_pdf

LINE = re.compile(r"^progress: pages (\d+)(?:/(~?)(\d+) \((\d+)%\))?, books (\d+)(?:/(\d+)| of (\d+) listed so far), "
                  r"(\d+) failed, ([\d.]+) pages/s \(last min\), ETA (\?|[\d:]+), elapsed ([\d:]+)$")
PAGES_PER_BOOK = 4


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, page_images):
    """Two 4-page books and a broken one, one shard (committed only at the end), through the real CLI
    with stderr a pipe (not a terminal) and a progress line every 0.5 s."""
    root = tmp_path_factory.mktemp("progress")
    src = root / "src"
    src.mkdir()
    for name in ("a", "b"):
        (src / f"{name}.pdf").write_bytes(scanned_pdf([page_images[k % len(page_images)] for k in range(PAGES_PER_BOOK)]))
    (src / "broken.pdf").write_bytes(b"GIF89a not a pdf")
    (src / "notes.txt").write_text("neither PDF nor page image")
    out = root / "out"
    env = {**os.environ, "PYTHONPATH": pythonpath_with_repo(os.environ.get("PYTHONPATH"))}
    env.pop("FOLIOSCAN_VERBOSE", None)
    proc = subprocess.run([sys.executable, "-m", "folioscan", "run", str(src), str(out), "--executor", "local",
                           "--batch-size", "2", "--progress-every", "0.5"],
                          capture_output=True, text=True, timeout=600, env=env, cwd=root)
    return proc, out


@pytest.mark.slow
def test_plain_progress_lines_without_a_terminal(cli_run):
    proc, out = cli_run
    assert proc.returncode == 1, proc.stderr  # the broken book
    assert "\x1b" not in proc.stderr and "\r" not in proc.stderr  # no escape codes, no redrawn line
    lines = [line for line in proc.stderr.splitlines() if line.startswith("progress:")]
    others = [line for line in proc.stderr.splitlines() if not line.startswith("progress:")]
    # besides: the failed book's warning, and the ignored object said once (the counting pass says nothing)
    assert [line for line in others if "broken.pdf" not in line] == [f"INFO folioscan.pipeline.sources: skipping "
                                                                     f"{out.parent / 'src' / 'notes.txt'}: not a PDF or page image"]
    parsed = []
    for line in lines:
        m = LINE.match(line)
        assert m, line
        parsed.append(m.groups())
    assert len(parsed) >= 3
    # pages moved before any book was committed (the one shard commits at the very end)
    moving = [g for g in parsed if 0 < int(g[0]) < 2 * PAGES_PER_BOOK and int(g[4]) == 0]
    assert moving, lines
    # a total and an ETA while pages were still coming
    assert any(g[2] and g[9] != "?" for g in moving), lines
    # the last line: everything done, the total exact
    last = parsed[-1]
    assert last[:4] == (str(2 * PAGES_PER_BOOK), "", str(2 * PAGES_PER_BOOK), "100")
    assert (last[4], last[5], last[7]) == ("3", "3", "1") and float(last[8]) > 0
    # the run record holds the same numbers
    record = json.loads(next((out / "_runs").iterdir()).read_text())
    progress = record["summary"]["progress"]
    assert {k: progress[k] for k in ("pages_done", "pages_total", "pages_total_exact", "books_done", "books_total",
                                     "books_failed")} == {"pages_done": 8, "pages_total": 8, "pages_total_exact": True,
                                                          "books_done": 3, "books_total": 3, "books_failed": 1}
    assert f"{progress['pages_per_s_last_minute']:.2f}" == last[8]


@pytest.mark.slow
def test_report_throughput_from_page_completion_times_agrees_with_the_summary(cli_run, tmp_path):
    from folioscan.pipeline.cli import main
    from folioscan.pipeline.storage import store_for
    from folioscan.report.data import collect

    proc, out = cli_run
    summary_rate = re.search(r"([\d.]+) pages/s", proc.stdout).group(1)
    record = json.loads(next((out / "_runs").iterdir()).read_text())["summary"]
    assert f"{record['pages_per_s']:.2f}" == summary_rate
    assert record["pages_per_s"] == pytest.approx(record["pages"] / record["pages_seconds"], abs=1e-3)

    data = collect(store_for(str(out)), str(out))
    [run] = data.runs.values()
    t = run.throughput()
    assert t is not None and t.pages == 8 and t.start_from == "run record"
    assert f"{t.overall:.2f}" == summary_rate and t.overall == pytest.approx(record["pages_per_s"], abs=1e-3)
    # several points for a run that committed once, and they cover the run: their time-weighted mean is the figure
    assert len(t.points) >= 3
    prev, pages = 0.0, 0.0
    for minutes, rate in t.points:
        pages += rate * (minutes * 60 - prev)
        prev = minutes * 60
    assert pages == pytest.approx(8) and prev == pytest.approx(t.seconds)

    html_path = tmp_path / "report.html"
    assert main(["report", str(out), "--out", str(html_path)]) == 0
    html = html_path.read_text()
    tile = re.search(r'<div class="tile"><b>([\d.]+)</b><span>pages/s, run', html).group(1)
    overall = re.search(r'<span class="overall">([\d.]+) pages/s</span>', html).group(1)
    assert tile == overall == summary_rate
    chart = html[html.index('aria-label="pages per second over time"'):]
    chart = chart[:chart.index("</svg>")]
    assert chart.count("<circle") == len(t.points) and 'class="reference"' in chart


@pytest.mark.parametrize("manifest", [False, True, "relative"], ids=["folder", "manifest", "relative-manifest"])
def test_the_counting_pass_leaves_out_books_already_committed(tmp_path, page_images, manifest, capsys, monkeypatch):
    from folioscan.pipeline.config import JobConfig
    from folioscan.pipeline.job import run_job

    src = tmp_path / "src"
    src.mkdir()
    for name in ("one", "two", "three"):
        (src / f"{name}.pdf").write_bytes(scanned_pdf(page_images[:1], dpi=100))
    first = tmp_path / "first.txt"
    first.write_text(f"{src / 'one.pdf'}\n")
    every = tmp_path / "every.txt"
    every.write_text("".join(f"{src / n}.pdf\n" for n in ("three", "one", "two")))
    if manifest == "relative":  # entries relative to the working folder: committed under absolute paths
        monkeypatch.chdir(tmp_path)
        every.write_text("".join(f"src/{n}.pdf\n" for n in ("three", "one", "two")))
    out = str(tmp_path / "out")
    source = str(every) if manifest else str(src)
    assert run_job(JobConfig(source=str(first), output=out, executor="local", progress=False)).documents == 1
    summary = run_job(JobConfig(source=source, output=out, executor="local", progress_every_s=3600))
    assert summary.documents == 2 and summary.documents_skipped == 1
    assert {k: summary.progress[k] for k in ("books_listed", "books_total", "books_done", "pages_done", "pages_total")} == \
        {"books_listed": 2, "books_total": 2, "books_done": 2, "pages_done": 2, "pages_total": 2}
    assert summary.progress["pages_per_s"] == round(summary.pages_per_s, 3) > 0
    err = capsys.readouterr().err
    assert err.count("progress: ") == 1 and "progress: pages 2/2 (100%), books 2/2, 0 failed, " in err


def _page(doc_id: str, index: int, count: int) -> PageFacts:
    return PageFacts.of(PageResult(PageWork(doc_id, f"/{doc_id}.pdf", index, count), "ok", None, "tesseract", "5"))


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_totals_estimates_eta_and_restarts():
    clock, stream = _Clock(), io.StringIO()
    p = Progress(enabled=True, every_s=3600, stream=stream, terminal=False, clock=clock)
    with p:
        p.listed(5)  # the counting pass is still going: a running count
        p.book_started()
        assert p.text().startswith("pages 0, books 0 of 5 listed so far, 0 failed, 0.00 pages/s (last min), ETA ?")
        clock.now = 10.0
        p.pages_read("a", [_page("a", 0, 10), _page("a", 1, 10)])
        p.listed(6, done=True)
        # 10 pages known for book a, 5 more books estimated at 10 each; 2 pages in 10 s
        n = p.numbers()
        assert (n["pages_done"], n["pages_total"], n["pages_total_exact"], n["books_total"]) == (2, 60, False, 6)
        assert n["pages_per_s_last_minute"] == pytest.approx(0.2) and n["eta_s"] == pytest.approx(58 / 0.2, abs=0.1)
        assert "pages 2/~60 (3%), books 0/6" in p.text()
        p.book_restarted("a")  # a lost worker: book a is read again from its first page
        assert p.numbers()["pages_done"] == 0
        clock.now = 100.0  # the window is the last minute: the pages at 10 s are out of it
        p.pages_read("a", [_page("a", k, 10) for k in range(10)])
        assert p.numbers()["pages_per_s_last_minute"] == pytest.approx(10 / 60, abs=1e-3)
        p.book_back("a", 10)
        p.committed([{"status": "ok"}])
        p.listing_done(1)  # the run's own listing ended after one book (the others were taken elsewhere)
        n = p.numbers()
        assert (n["pages_done"], n["pages_total"], n["pages_total_exact"], n["books_done"], n["books_total"]) == (10, 10, True, 1, 1)
        assert n["eta_s"] == 0
    assert stream.getvalue().splitlines() == [f"progress: {p.text()}"]  # one last line at the end
    assert "\x1b" not in stream.getvalue()


def test_a_book_level_error_counts_no_page():
    p = Progress(enabled=False)
    p.pages_read("x", [PageFacts.of(PageResult(PageWork("x", "/x.pdf", DOCUMENT_LEVEL, 0, error="bad"), "error", None, "", ""))])
    assert p.numbers()["pages_done"] == 0


def test_quiet_prints_nothing():
    stream = io.StringIO()
    with Progress(enabled=False, every_s=0.01, stream=stream, terminal=False) as p:
        p.pages_read("a", [_page("a", 0, 1)])
    assert stream.getvalue() == ""


def test_a_page_cap_bounds_the_expected_pages():
    p = Progress(enabled=False, max_pages_per_book=3)
    p.book_started()
    p.listing_done(1)
    p.pages_read("long", [_page("long", 0, 39)])
    assert p.pages_total() == (3, True)


@pytest.mark.slow
def test_quiet_run_has_no_progress_lines(tmp_path, page_images):
    """--quiet keeps its meaning: no progress lines, only warnings and the summary."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "one.pdf").write_bytes(scanned_pdf(page_images[:1], dpi=100))
    (src / "broken.pdf").write_bytes(b"GIF89a not a pdf")
    env = {**os.environ, "PYTHONPATH": pythonpath_with_repo(os.environ.get("PYTHONPATH"))}
    env.pop("FOLIOSCAN_VERBOSE", None)
    proc = subprocess.run([sys.executable, "-m", "folioscan", "run", str(src), str(tmp_path / "out"), "--executor", "local",
                           "--quiet", "--progress-every", "0.1"], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 1, proc.stderr
    assert [line.split(":")[0] for line in proc.stderr.splitlines()] == ["WARNING folioscan.pipeline.job"], proc.stderr
    assert proc.stdout.startswith("folioscan run ") and "2 documents (1 failed" in proc.stdout


@pytest.mark.parametrize("executor", ["local", pytest.param("ray", marks=[pytest.mark.ray, pytest.mark.slow])])
def test_executors_report_pages_before_the_book_is_back(tmp_path, page_images, executor, request):
    """Progress moves per batch of pages, not per finished book (let alone per committed shard)."""
    from folioscan.pipeline.config import JobConfig
    from folioscan.pipeline.executors import make_executor
    from folioscan.pipeline.sources import iter_documents
    from folioscan.pipeline.stages import Stages
    from folioscan.pipeline.storage import store_for

    if executor == "ray":
        request.getfixturevalue("ray_local")
    src = tmp_path / "src"
    src.mkdir()
    (src / "book.pdf").write_bytes(scanned_pdf([page_images[k % len(page_images)] for k in range(3)], dpi=100))
    cfg = JobConfig(source=str(src), output=str(tmp_path / "out"), executor=executor, ocr_workers=1, batch_size=1,
                    progress=False)
    store = store_for(cfg.source)
    ex = make_executor(cfg, Stages(store, cfg.load_options(), cfg.prep, cfg.engine, cfg.pages_per_call, cfg.flip_retry_below))
    heard, back = [], []
    ex.on_pages = lambda doc_id, results: heard.append((len(back), len(results)))
    try:
        [doc] = iter_documents(store, cfg.source)
        ex.submit(doc)
        while ex.busy():
            back += ex.poll()
    finally:
        ex.close()
    [(_, results)] = back
    assert len(results) == 3 and sum(n for _, n in heard) == 3
    assert len(heard) == 3 and all(books_back == 0 for books_back, _ in heard)  # one call per batch of 1, all before
