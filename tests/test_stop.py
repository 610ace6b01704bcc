"""How a run ends when it is told to stop, or cannot write its output (issue 17 items 3 and 4).

SIGTERM / SIGINT: no new books, the books in flight finish within --grace-s, claims released,
the run record says `status: interrupted`, exit 143 / 130; a second signal stops at once.
An output that cannot be written: exit 74 and one line naming the object, no `.tmp` file left,
and a book whose `--also` exports were not all written is not committed, so the rerun writes them."""
import errno
import json
import os
import signal
import subprocess
import time

import pytest

from folioscan.export.dataset import Book, page_key
from folioscan.pipeline.config import JobConfig
from folioscan.pipeline.job import run_job
from folioscan.pipeline.storage import LocalStore, S3Store, WriteError
from tests.test_durability import assert_exactly_once, claims_of, committed_by, driver, make_source, small_pages, table

__all__ = ["small_pages"]  # the fixture, shared with test_durability


def wait_for(predicate, timeout=180, what="the condition"):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def run_record(out, run_id):
    with open(os.path.join(out, "_runs", f"{run_id}.json")) as f:
        return json.load(f)


def leftovers(out):
    """`.tmp` files anywhere under the output."""
    return [os.path.join(d, n) for d, _, names in os.walk(out) for n in names if n.endswith(".tmp")]


def folioscan_lines(err):
    return [line for line in err.splitlines() if line.startswith("folioscan: ")]


def missing_exports(out):
    """Committed books whose searchable PDF or any ALTO page file is not in the output."""
    import pyarrow.parquet as pq

    docs, pages = (pq.read_table(os.path.join(out, name)).to_pylist() for name in ("documents", "pages"))
    missing = []
    for doc in docs:
        book = Book(doc, [p for p in pages if p["doc_id"] == doc["doc_id"]])
        wanted = [os.path.join("pdf", f"{book.name}.pdf")] + [os.path.join("alto", book.name, f"{page_key(p)}.xml") for p in book.pages]
        missing += [w for w in wanted if not os.path.isfile(os.path.join(out, w))]
    return missing


# -- graceful stop ---------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", pytest.param("ray", marks=pytest.mark.ray)])
def test_sigterm_lets_books_in_flight_finish_then_exits_143_and_the_rerun_does_the_rest(tmp_path, small_pages, executor):
    books = 6 if executor == "local" else 10  # Ray has more books in flight
    src = make_source(tmp_path / "src", small_pages, books=books)
    out = str(tmp_path / "out")
    # a local Ray in the driver's process: `ray.init` puts in its own SIGTERM handler, run_job takes it back
    proc = driver(src, out, "stopped", *(["--executor", "ray", "--num-cpus", "2"] if executor == "ray" else []))
    wait_for(lambda: committed_by(out, "stopped") or proc.poll() is not None, what="the first commit")
    proc.send_signal(signal.SIGTERM)
    stdout, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "interrupted by SIGTERM" in folioscan_lines(err)[-1], err
    record = run_record(out, "stopped")
    s = record["summary"]
    assert record["status"] == s["status"] == "interrupted" and s["stopped_by"] == "SIGTERM"
    assert record["message"].startswith("interrupted by SIGTERM: ") and "\n" not in record["message"]
    assert 1 <= s["documents"] < books, "the run must be stopped part-way"
    assert s["documents_abandoned"] == 0  # the books in flight finished within the grace period
    assert len(committed_by(out, "stopped")) == s["documents"]
    assert claims_of(out, "stopped") == set() and not os.listdir(os.path.join(out, "_live")) and not leftovers(out)
    assert "folioscan run stopped" in stdout  # the usual summary line
    rerun = driver(src, out, "rerun")
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert run_record(out, "rerun")["summary"]["documents"] == books - s["documents"]
    assert_exactly_once(out, books=books)


class StderrLines:
    """A running process's stderr, read line by line as it comes."""

    def __init__(self, proc):
        import threading

        self.lines: list[str] = []
        self.thread = threading.Thread(target=lambda: self.lines.extend(iter(proc.stderr.readline, "")), daemon=True)
        self.thread.start()

    def text(self) -> str:
        self.thread.join(timeout=60)
        return "".join(self.lines)


def long_books(src, pages, books=4):
    """8 pages a book: a book in flight takes seconds (an engine call reads 4 pages), so a signal finds
    one half read."""
    from tests.helpers import scanned_pdf

    src.mkdir()
    for i in range(books):
        (src / f"book{i}.pdf").write_bytes(scanned_pdf([pages[(i + k) % 3] for k in range(8)], dpi=60))
    return src


@pytest.mark.slow
def test_a_second_sigint_stops_at_once_releasing_the_claims_of_the_books_in_flight(tmp_path, small_pages):
    src = long_books(tmp_path / "src", small_pages)
    out = str(tmp_path / "out")
    proc = driver(src, out, "hurried")
    err = StderrLines(proc)
    wait_for(lambda: (committed_by(out, "hurried") and claims_of(out, "hurried")) or proc.poll() is not None,
             what="a commit with a book in flight")
    proc.send_signal(signal.SIGINT)
    wait_for(lambda: any("SIGINT: stopping" in line for line in err.lines) or proc.poll() is not None,
             what="the first signal to be taken")  # two signals before Python's handler runs would count as one
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    assert proc.returncode == 130, err.text()
    assert "Traceback" not in err.text() and "SIGINT again: stopping now" in err.text(), err.text()
    s = run_record(out, "hurried")["summary"]
    assert s["status"] == "interrupted" and s["stopped_by"] == "SIGINT"
    assert s["documents_abandoned"] >= 1 and s["documents"] + s["documents_abandoned"] <= 4
    assert claims_of(out, "hurried") == set() and not leftovers(out)  # released, not left to expire
    rerun = driver(src, out, "after")
    _, rerr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, rerr
    assert_exactly_once(out, books=4, pages_per_book=8)


@pytest.mark.slow
def test_grace_zero_abandons_the_books_in_flight(tmp_path, small_pages):
    src = long_books(tmp_path / "src", small_pages)
    out = str(tmp_path / "out")
    proc = driver(src, out, "nograce", "--grace-s", "0")
    wait_for(lambda: (committed_by(out, "nograce") and claims_of(out, "nograce")) or proc.poll() is not None,
             what="a commit with a book in flight")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    s = run_record(out, "nograce")["summary"]
    assert s["documents_abandoned"] >= 1 and f"{s['documents_abandoned']} in flight abandoned" in run_record(out, "nograce")["message"]
    assert claims_of(out, "nograce") == set() and not leftovers(out)
    assert len(table(out, "documents")) == s["documents"]  # the abandoned books were not committed


def test_the_first_signal_asks_the_second_interrupts_and_the_old_handlers_come_back():
    from folioscan.pipeline.stop import Interrupted, Stop

    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    stop = Stop(grace_s=60)
    with pytest.raises(Interrupted) as e, stop.handling():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)  # the handler runs between bytecodes
        assert stop.requested and not stop.expired() and stop.exit_code == 143
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)
    assert e.value.signum == signal.SIGINT and stop.hard and stop.expired() and stop.name == "SIGTERM"
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    shielded = Stop(grace_s=0)
    with shielded.handling():
        shielded.shield()  # cleaning up: a signal is noted, never raised
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert shielded.requested and shielded.exit_code == 130 and shielded.expired()


# -- write failures --------------------------------------------------------------------------------

def test_a_failed_local_write_leaves_no_temp_file_and_names_the_object(tmp_path, monkeypatch):
    store, target = LocalStore(), str(tmp_path / "out" / "pdf" / "book.pdf")
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(WriteError) as e:
        store.write(target, b"x" * 100)
    assert str(e.value) == f"{target}: cannot write: No space left on device"
    with pytest.raises(WriteError):
        store.create_exclusive(str(tmp_path / "out" / "_leases" / "k" / "00000000"), b"{}")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert not leftovers(str(tmp_path / "out")) and not os.path.exists(target)


def test_s3_refusing_a_put_is_a_write_error():
    from botocore.exceptions import ClientError, EndpointConnectionError

    class Refusing:
        def put_object(self, **kwargs):
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "denied"}}, "PutObject")

        def delete_object(self, **kwargs):
            raise EndpointConnectionError(endpoint_url="http://s3.invalid")

    store = S3Store()
    store._client, store._conditional_writes = Refusing(), True
    for call in (lambda: store.write("s3://b/out/x", b""), lambda: store.create_exclusive("s3://b/out/_leases/k/0", b"")):
        with pytest.raises(WriteError, match=r"^s3://b/out/.*: cannot write: access denied"):
            call()
    with pytest.raises(WriteError, match="cannot delete"):
        store.delete("s3://b/out/x")


def test_a_book_whose_export_cannot_be_written_is_not_committed_and_the_rerun_writes_it(tmp_path, small_pages, monkeypatch):
    src = make_source(tmp_path / "src", small_pages, books=3)
    out = str(tmp_path / "out")
    cfg = JobConfig(source=str(src), output=out, executor="local", progress=False, shard_docs=1, also=["pdf", "alto"],
                    prep={"enabled": False})
    real_fsync = os.fsync

    def pdf_of_book1_fails(fd):  # the second book's PDF meets a full disk; everything else is written
        if "/pdf/.book1-" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", pdf_of_book1_fails)
    with pytest.raises(WriteError) as e:
        run_job(cfg)
    monkeypatch.setattr(os, "fsync", real_fsync)
    s = e.value.summary
    assert s.status == "failed" and f"{out}/pdf/book1-" in s.error and "No space left on device" in s.error
    docs = table(out, "documents")
    assert list(docs.source_uri.str.rsplit("/", n=1).str[-1]) == ["book0.pdf"]  # book1 not counted done
    assert os.listdir(os.path.join(out, "pages")) == os.listdir(os.path.join(out, "documents"))  # no orphan pages part
    assert not missing_exports(out) and not leftovers(out) and claims_of(out, cfg.run_id) == set()
    record = run_record(out, cfg.run_id)
    assert record["status"] == "failed" and record["message"].startswith(f"stopped: {out}/pdf/book1-")
    again = run_job(cfg.model_copy(update={"run_id": "again"}))
    assert again.status == "finished" and again.documents == 2 and again.ok
    assert_exactly_once(out, books=3)
    assert not missing_exports(out) and not leftovers(out)


def test_folioscan_export_to_a_full_disk_is_exit_74_and_one_line(tmp_path, small_pages, monkeypatch, capsys):
    from folioscan.pipeline.cli import main

    src = make_source(tmp_path / "src", small_pages, books=1)
    out, dest = str(tmp_path / "out"), str(tmp_path / "dest")
    run_job(JobConfig(source=str(src), output=out, executor="local", progress=False, prep={"enabled": False}))
    capsys.readouterr()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    assert main(["export", out, dest, "--format", "alto"]) == 74
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"folioscan: {dest}/alto/book0-") and line.endswith("cannot write: No space left on device")
    assert not leftovers(dest)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 24 MiB tmpfs, mounted for the test (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(folder) -> str:
    """Fill the file system of `folder` to the last byte; returns the filler file."""
    path = os.path.join(folder, "filler")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as e:
                assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return path


@pytest.mark.slow
def test_an_output_filling_up_mid_run_stops_with_exit_74_and_one_line_and_the_rerun_completes(tmp_path, small_pages, small_tmpfs):
    src = make_source(tmp_path / "src", small_pages, books=6)
    out = str(small_tmpfs / "out")
    proc = driver(src, out, "full", "--also", "pdf,alto")
    wait_for(lambda: committed_by(out, "full") or proc.poll() is not None, what="the first commit")
    filler = fill(small_tmpfs)
    stdout, err = proc.communicate(timeout=180)
    assert proc.returncode == 74, err
    assert "Traceback" not in err, err
    [line] = folioscan_lines(err)
    assert line.startswith(f"folioscan: stopped: {out}/") and "No space left on device" in line, line
    assert "rerun once the output can be written" in line
    assert "folioscan run full" in stdout  # the summary line
    assert not leftovers(out) and claims_of(out, "full") == set()
    assert not missing_exports(out)  # what was committed has its exports
    done_before = len(table(out, "documents"))
    assert 1 <= done_before < 6
    os.remove(filler)
    rerun = driver(src, out, "roomy", "--also", "pdf,alto")
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert run_record(out, "roomy")["summary"]["documents"] == 6 - done_before
    assert_exactly_once(out, books=6)
    assert not missing_exports(out) and not leftovers(out)
