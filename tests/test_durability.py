"""Nothing lost, nothing doubled: two drivers and a kill -9, leases that expire, recovery that
spares a live run, failed books retried and their old rows superseded, replaced inputs, retries."""
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

from folioscan.pipeline.cli import main
from folioscan.pipeline.config import JobConfig
from folioscan.pipeline.job import run_job
from folioscan.pipeline.leases import Leases
from folioscan.pipeline.storage import LocalStore, S3Store, StorageError
from folioscan.retry import RetryPolicy
from folioscan.schemas import PAGES
from tests.helpers import scanned_pdf, text_page_image


@pytest.fixture(scope="module")
def small_pages():
    return [text_page_image(f"Page {i}: the quick brown fox jumps over the lazy dog.", dpi=60) for i in range(3)]


def make_source(root, pages, books=6):
    root.mkdir()
    for i in range(books):
        (root / f"book{i}.pdf").write_bytes(scanned_pdf([pages[i % 3], pages[(i + 1) % 3]], dpi=60))
    return root


def table(out, name, s3=None):
    if s3 is None:
        folder = os.path.join(out, name)
        parts = [os.path.join(folder, n) for n in sorted(os.listdir(folder)) if n.endswith(".parquet")]
        return pd.concat([pq.read_table(p).to_pandas() for p in parts]) if parts else pd.DataFrame()
    bucket, prefix = out[len("s3://"):].split("/", 1)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{name}/").get("Contents", [])]
    return pd.concat([pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=k)["Body"].read())).to_pandas() for k in keys])


def assert_exactly_once(out, books, pages_per_book=2, s3=None):
    docs, pages = table(out, "documents", s3), table(out, "pages", s3)
    assert len(docs) == books and docs.doc_id.is_unique and (docs.status == "ok").all()
    counts = pages.groupby(["doc_id", "page_index"]).size()
    assert len(pages) == books * pages_per_book and (counts == 1).all(), counts[counts != 1]
    # no committed book without its pages
    assert (pages.groupby("doc_id").size().reindex(docs.doc_id).fillna(0).values == docs.pages_out.values).all()
    return docs, pages


def driver(src, out, run_id, *extra, endpoint=None):
    cmd = [sys.executable, "-m", "folioscan", "run", str(src), str(out), "--executor", "local", "--shard-docs", "1",
           "--quiet", "--no-prep", *extra] + (["--endpoint-url", endpoint] if endpoint else [])
    env = {**os.environ, "FOLIOSCAN_RUN_ID": run_id, "PYTHONPATH": os.getcwd()}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def committed_by(out, run_id, s3=None):
    if s3 is None:
        folder = os.path.join(out, "documents")
        return [n for n in os.listdir(folder) if n.startswith(f"part-{run_id}-")] if os.path.isdir(folder) else []
    bucket, prefix = out[len("s3://"):].split("/", 1)
    return s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/documents/part-{run_id}-").get("Contents", [])


def claims_of(out, run_id, s3=None):
    """doc_ids on which `run_id` holds a claim, read from the store."""
    if s3 is None:
        root = os.path.join(out, "_leases")
        records = [(key, open(os.path.join(root, key, g), "rb").read())
                   for key in (os.listdir(root) if os.path.isdir(root) else []) for g in os.listdir(os.path.join(root, key))
                   if not g.startswith(".")]
    else:
        bucket, prefix = out[len("s3://"):].split("/", 1)
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/_leases/").get("Contents", [])]
        records = []
        for k in keys:
            try:
                records.append((k.split("/")[-2], s3.get_object(Bucket=bucket, Key=k)["Body"].read()))
            except s3.exceptions.NoSuchKey:  # released by a live driver while we looked
                pass
    # books only: claims on source bytes (`content-<sha256>`, pipeline/duplicates.py) are not doc_ids
    return {key for key, raw in records if json.loads(raw)["run_id"] == run_id and not key.startswith("content-")}


@pytest.mark.slow
@pytest.mark.parametrize("where", ["local", "s3"])
def test_two_drivers_then_a_third_after_a_kill_process_every_page_exactly_once(tmp_path, small_pages, where, request):
    # enough books that A is sure to be caught between books (a commit behind it, a claim in hand):
    # with 8, claims taken one book at a time at first, A could finish its share between two looks
    src = make_source(tmp_path / "src", small_pages, books=16)
    s3 = endpoint = None
    out = str(tmp_path / "out")
    if where == "s3":
        import boto3

        endpoint = request.getfixturevalue("s3_endpoint")
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="twodrivers")
        out = "s3://twodrivers/out"
    a, b = driver(src, out, "driverA", endpoint=endpoint), driver(src, out, "driverB", endpoint=endpoint)
    deadline = time.time() + 120
    while time.time() < deadline and a.poll() is None:
        # Freeze A, then look: a claim seen while it is stopped is still held when the kill lands
        # (looking first and killing after raced with A releasing its last claim).
        a.send_signal(signal.SIGSTOP)
        if committed_by(out, "driverA", s3) and claims_of(out, "driverA", s3):
            break
        a.send_signal(signal.SIGCONT)
        time.sleep(0.02)
    assert a.poll() is None, "driver A finished before it could be caught holding a claim"
    a.send_signal(signal.SIGKILL)  # mid-run: it holds a claim on the book it is reading
    a.wait()
    abandoned = claims_of(out, "driverA", s3)
    assert abandoned  # the kill left claims behind (up to a window of books in flight)
    c = driver(src, out, "driverC", endpoint=endpoint)
    for p in (b, c):
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    docs, _ = assert_exactly_once(out, books=16, s3=s3)
    by_run = docs.set_index("doc_id").run_id
    unfinished = abandoned - set(by_run[by_run == "driverA"].index)  # some may have committed, not released
    assert (by_run == "driverA").sum() >= 1 and set(by_run[sorted(unfinished)]) <= {"driverB", "driverC"}


def test_a_claim_is_exclusive_and_expires_when_its_run_stops_renewing(tmp_path, s3_endpoint):
    import boto3

    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="leases")
    for store, out in ((LocalStore(), str(tmp_path / "out")), (S3Store(s3_endpoint), "s3://leases/out")):
        # the TTL leaves room for the claims below on a loaded machine (at 1 s, moto's round trips under
        # load let run-1's liveness lapse before run-2 was meant to be refused)
        first = Leases(store, out, "run-1", ttl_s=3.0)
        first.renew()  # announced, but no heartbeat: as if it hung or its host died
        renewed = time.monotonic()
        second = Leases(store, out, "run-2", ttl_s=3.0).start()
        assert first.claim("book") and not second.claim("book")
        assert second.claim("other") and not first.claim("other")
        time.sleep(max(0.0, renewed + 3.3 - time.monotonic()))
        assert not first.fresh() and second.claim("book")  # taken over once run-1's liveness expired
        assert first.still_held({"book"}) == set()  # the stalled run learns it lost the book before committing
        second.stop()
        third = Leases(store, out, "run-3", ttl_s=30).start()
        assert third.claim("other")  # a run that ended released its claims
        third.stop()
    assert store._conditional_writes is True  # moto's server honours If-None-Match: *, as S3 does


class _CountingStore(LocalStore):
    """The real local store, counting the listings and reads it serves."""

    def __init__(self):
        self.ls_calls = self.reads = 0

    def ls(self, uri):
        self.ls_calls += 1
        return super().ls(uri)

    def read(self, uri):
        self.reads += 1
        return super().read(uri)


def test_a_fresh_run_releases_its_claims_without_looking_and_a_stalled_one_never_deletes_its_takers(tmp_path, s3_endpoint):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="release")

    def generations(out, key):
        if out.startswith("s3://"):
            found = s3.list_objects_v2(Bucket="release", Prefix=f"out/_leases/{key}/").get("Contents", [])
            return sorted(o["Key"].rsplit("/", 1)[1] for o in found)
        folder = os.path.join(out, "_leases", key)
        return sorted(os.listdir(folder)) if os.path.isdir(folder) else []

    for store, out in ((_CountingStore(), str(tmp_path / "out")), (S3Store(s3_endpoint), "s3://release/out")):
        first = Leases(store, out, "run-1", ttl_s=30).start()
        assert all(first.claim(k) for k in ("a", "b", "c")) and generations(out, "a") == ["00000000"]
        if isinstance(store, _CountingStore):
            store.ls_calls = store.reads = 0
        first.release_many(["a", "b"])  # fresh: nobody can have taken them; its own generations go
        if isinstance(store, _CountingStore):
            assert (store.ls_calls, store.reads) == (0, 0)  # nothing looked up
            assert not os.path.exists(os.path.join(out, "_leases", "a"))  # no empty folder left
        assert generations(out, "a") == generations(out, "b") == [] and generations(out, "c") == ["00000000"]
        first.stop()  # ending the run releases what it still holds
        assert generations(out, "c") == []

        stalled = Leases(store, out, "run-2", ttl_s=1.0)
        stalled.renew()  # announced, then no heartbeat
        assert stalled.claim("book")
        time.sleep(1.3)
        taker = Leases(store, out, "run-3", ttl_s=30).start()
        assert taker.claim("book")  # taken over: generation 1 is run-3's
        stalled.release("book")  # not fresh: looks before deleting, and leaves run-3's claim alone
        assert generations(out, "book") == ["00000001"] and taker.still_held({"book"}) == {"book"}
        taker.stop()
        assert generations(out, "book") == []


def test_a_run_whose_heartbeat_was_late_looks_at_its_claims_again_though_fresh_once_more(tmp_path):
    """A driver that stalled past its TTL (its claims taken over meanwhile) and whose heartbeat then beats
    again must not trust its earlier claims because it is fresh now: it checks them in the store."""
    from folioscan.pipeline.leases import LIVE_CACHE_S

    store, out = LocalStore(), str(tmp_path / "out")
    stalled = Leases(store, out, "run-1", ttl_s=1.0)
    stalled.renew()  # announced, then no heartbeat for a while
    assert stalled.claim("book") and stalled.unbroken("book") and stalled.still_held({"book"}) == {"book"}
    time.sleep(1.3)
    taker = Leases(store, out, "run-2", ttl_s=30).start()
    assert taker.claim("book")  # run-1 looked dead
    stalled.start()  # the heartbeat comes back
    assert stalled.fresh() and not stalled.unbroken("book")
    assert stalled.still_held({"book"}) == set()  # looked at in the store: lost
    time.sleep(LIVE_CACHE_S + 0.2)  # once others can no longer hold run-1 for dead, new claims are trusted again
    assert stalled.claim("other") and stalled.unbroken("other") and stalled.still_held({"other"}) == {"other"}
    stalled.stop()
    taker.stop()


def test_recovery_never_deletes_a_live_runs_uncommitted_part(tmp_path, small_pages):
    src = make_source(tmp_path / "src", small_pages, books=1)
    out = str(tmp_path / "out")
    other = Leases(LocalStore(), out, "otherrun", ttl_s=60).start()  # a live driver with a commit in flight
    in_flight = os.path.join(out, "pages", "part-otherrun-00000.parquet")
    LocalStore().write(in_flight, PAGES.to_parquet_bytes([]))
    summary = run_job(JobConfig(source=str(src), output=out, executor="local", progress=False))
    assert summary.orphans_removed == 0 and os.path.exists(in_flight)
    other.stop()  # that run ended without committing: now its part is an orphan
    summary = run_job(JobConfig(source=str(src), output=out, executor="local", progress=False))
    assert summary.orphans_removed == 1 and not os.path.exists(in_flight)


def test_a_killed_drivers_liveness_record_is_removed_by_the_next_run_once_expired(tmp_path, small_pages):
    """`_live/<run>.json` of a driver killed before it could delete it: gone after the next run once it
    has been expired for longer than the TTL; a live run's record and one only just expired stay."""
    src = make_source(tmp_path / "src", small_pages, books=1)
    out = str(tmp_path / "out")
    live_dir = os.path.join(out, "_live")
    killed = Leases(LocalStore(), out, "killed", ttl_s=120)
    killed.renew()  # announced, then killed: the record stays behind, never renewed
    record = json.load(open(os.path.join(live_dir, "killed.json")))
    record["expires_at"] = time.time() - 3600  # killed an hour ago
    LocalStore().write(os.path.join(live_dir, "killed.json"), json.dumps(record).encode())
    late = {**record, "run_id": "late", "expires_at": time.time() - 5}  # a heartbeat just late: within the margin
    LocalStore().write(os.path.join(live_dir, "late.json"), json.dumps(late).encode())
    other = Leases(LocalStore(), out, "otherrun", ttl_s=60).start()  # another driver, live
    try:
        summary = run_job(JobConfig(source=str(src), output=out, executor="local", progress=False, run_id="rerun"))
        assert summary.status == "finished" and summary.documents == 1
        assert summary.stale_live_removed == 1
        assert sorted(os.listdir(live_dir)) == ["late.json", "otherrun.json"]
        run_record = json.load(open(os.path.join(out, "_runs", "rerun.json")))
        assert run_record["summary"]["stale_live_removed"] == 1
    finally:
        other.stop()


def _mark_committed_failure(out, name, kind):
    """Rewrite the output as an earlier run that failed on `name` would have left it. Parts are never
    rewritten in a real output, so the compacted index (`_index/`, pipeline/compacted.py) the run left
    would say otherwise: it goes too, and the rerun reads the parts as they are now."""
    shutil.rmtree(os.path.join(out, "_index"), ignore_errors=True)
    for table_name in ("documents", "pages"):
        folder = os.path.join(out, table_name)
        for part in os.listdir(folder):
            t = pq.read_table(os.path.join(folder, part)).to_pandas()
            hit = t.source_uri.str.endswith(name)
            t.loc[hit, "status"], t.loc[hit, "error"], t.loc[hit, "error_kind"] = "error", "SlowDown: throttled", kind
            if table_name == "pages":
                t.loc[hit, "text"] = None
            schema = pq.read_schema(os.path.join(folder, part))
            import pyarrow as pa

            pq.write_table(pa.Table.from_pandas(t, schema=schema, preserve_index=False), os.path.join(folder, part))


def test_failed_books_are_retried_and_their_old_rows_superseded(tmp_path, small_pages, capsys):
    src = make_source(tmp_path / "src", small_pages, books=3)
    out = str(tmp_path / "out")
    run = ["run", str(src), out, "--executor", "local", "--quiet", "--no-prep"]
    assert main(run) == 0
    _mark_committed_failure(out, "book1.pdf", "transient")
    _mark_committed_failure(out, "book2.pdf", "permanent")
    capsys.readouterr()
    assert main([*run, "--summary-json", str(tmp_path / "s.json")]) == 1  # book2 is still in error, from the earlier run
    s = json.load(open(tmp_path / "s.json"))
    assert (s["documents"], s["documents_retried"], s["documents_carried_failed"], s["documents_still_failed"]) == (1, 1, 1, 1)
    assert "1 books still in error or partial (1 from earlier runs" in capsys.readouterr().out
    docs, pages = table(out, "documents").set_index("source_uri"), table(out, "pages")
    assert len(docs) == 3 and docs.loc[f"{src}/book1.pdf", "status"] == "ok"
    assert docs.loc[f"{src}/book1.pdf", "attempts_made"] == 2
    n = duckdb.sql(f"select count(*), count(distinct (doc_id, page_index)) from read_parquet('{out}/pages/*.parquet')").fetchall()
    assert n == [(6, 6)]  # a plain reader sees each page once
    assert main([*run, "--retry-failed"]) == 0  # now book2 too
    docs = table(out, "documents").set_index("source_uri")
    assert len(docs) == 3 and (docs.status == "ok").all() and docs.loc[f"{src}/book2.pdf", "attempts_made"] == 2
    assert len(table(out, "pages")) == 6


def test_a_replaced_input_is_reprocessed_and_its_old_rows_superseded(tmp_path, small_pages):
    src = make_source(tmp_path / "src", small_pages, books=2)
    out = str(tmp_path / "out")
    cfg = JobConfig(source=str(src), output=out, executor="local", progress=False, shard_docs=1)
    run_job(cfg)
    (src / "book0.pdf").write_bytes(scanned_pdf(small_pages, dpi=60))  # same name, new content: 3 pages
    summary = run_job(cfg)
    assert (summary.documents, summary.documents_replaced, summary.documents_superseded) == (1, 1, 1)
    docs, pages = table(out, "documents"), table(out, "pages")
    assert len(docs) == 2 and docs.source_uri.is_unique
    book0 = pages[pages.source_uri.str.endswith("book0.pdf")]
    assert sorted(book0.page_index) == [0, 1, 2] and book0.doc_id.nunique() == 1
    assert len(os.listdir(os.path.join(out, "documents"))) == 2  # the old part, now empty, is gone
    assert run_job(cfg).documents == 0


class FlakyRead:
    """A store read that fails `n` times with a connection reset before it answers."""

    def __init__(self, data, n, exc=ConnectionResetError):
        self.data, self.n, self.exc, self.calls = data, n, exc, 0

    def __call__(self, uri):
        self.calls += 1
        if self.calls <= self.n:
            raise StorageError(f"{uri}: read failed") from self.exc("connection reset by peer")
        return self.data


def test_transient_read_failures_are_retried_with_backoff_and_counted(small_pages):
    from folioscan.pipeline.sources import pdf_document
    from folioscan.records import SourceObject
    from folioscan.workers.load import LoadOptions, load_pages

    data = scanned_pdf(small_pages[:2], dpi=60)
    doc = pdf_document(SourceObject("s3://b/x.pdf", len(data), "etag:x"))
    opts = LoadOptions(retry=RetryPolicy(attempts=4, base_delay_s=0.01, max_delay_s=0.05))
    read = FlakyRead(data, 2)
    pages = list(load_pages(doc, read, opts))
    assert [p.error for p in pages] == [None, None] and [p.attempts_made for p in pages] == [3, 3] and read.calls == 3
    [failed] = list(load_pages(doc, FlakyRead(data, 9), opts))  # never recovers: a transient error row
    assert failed.error_kind == "transient" and failed.attempts_made == 4
    [gone] = list(load_pages(doc, FlakyRead(data, 9, exc=FileNotFoundError), opts))  # permanent: tried once
    assert gone.error_kind == "permanent" and gone.attempts_made == 1


def test_transient_failures_of_one_image_file_are_retried_too(small_pages):
    from folioscan.pipeline.sources import image_document
    from folioscan.records import SourceObject
    from folioscan.workers.load import LoadOptions, load_pages
    from tests.helpers import png_bytes

    files = {"b/1.png": FlakyRead(png_bytes(small_pages[0]), 1), "b/2.png": FlakyRead(png_bytes(small_pages[1]), 9)}
    doc = image_document("b", [SourceObject(k, 1, "etag:" + k) for k in files])
    opts = LoadOptions(retry=RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.02))
    first, second = load_pages(doc, lambda uri: files[uri](uri), opts)
    assert (first.error, first.attempts_made) == (None, 2)
    assert (second.error_kind, second.attempts_made) == ("transient", 3) and "read failed" in second.error


def test_backoff_grows_exponentially_with_full_jitter_up_to_the_cap():
    from folioscan.retry import call_with_retry

    policy = RetryPolicy(attempts=5, base_delay_s=0.5, max_delay_s=3.0)
    for retry, bound in enumerate([0.5, 1.0, 2.0, 3.0, 3.0]):
        delays = [policy.delay(retry) for _ in range(300)]
        assert 0 <= min(delays) < 0.2 * bound and 0.8 * bound < max(delays) <= bound
    calls = []

    def permanent():
        calls.append(1)
        raise ValueError("bad data")

    with pytest.raises(ValueError) as e:
        call_with_retry(permanent, RetryPolicy(attempts=4, base_delay_s=0.0))
    assert len(calls) == 1 and e.value.attempts_made == 1


def test_a_live_runs_claim_is_not_taken_when_its_liveness_record_cannot_be_read(tmp_path):
    """Only a liveness record that does not exist (or has expired) makes a run dead. One that exists and
    cannot be read (here a folder where the file is, as S3's AccessDenied or a 5xx after retries would be)
    made another driver take the live run's claim, while the live run, fresh and unbroken, trusted its
    claim without looking: both would read and commit the book."""
    store, out = LocalStore(), str(tmp_path / "out")
    owner = Leases(store, out, "run-1", ttl_s=30)
    owner.renew()
    assert owner.claim("book")
    record = os.path.join(out, "_live", "run-1.json")
    os.remove(record)
    os.mkdir(record)  # it exists, and reading it fails
    other = Leases(store, out, "run-2", ttl_s=30)
    assert not other.is_live("run-2x")  # a run with no record at all is dead
    assert not other.claim("book")  # run-1 may well be live: its claim stands
    assert owner.still_held({"book"}) == {"book"}
    assert os.listdir(os.path.join(out, "_leases", "book")) == [owner.held["book"]]


_LIVE_IN_ANOTHER_PID_NAMESPACE = """
import sys, time
from folioscan.pipeline.leases import Leases
from folioscan.pipeline.storage import LocalStore
run = Leases(LocalStore(), sys.argv[1], "run-elsewhere", ttl_s=60)
run.renew()
assert run.claim("book")
print("claimed", flush=True)
time.sleep(60)
"""


def test_a_live_run_in_another_pid_namespace_on_this_host_is_not_taken_for_gone(tmp_path):
    """A run recorded on this host whose pid does not exist here is gone at once, unless it lives in
    another PID namespace with the same host name (two containers with the host's network, as Kubernetes'
    hostNetwork or docker's --network host give): there its pid means nothing here. A driver in a new
    PID namespace (unshare) given a pid that no process here has claims a book; this driver must leave it."""
    import shutil

    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs unshare and root for a PID namespace")
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no PID namespace here: {probe.stderr.decode()[:200]}")
    taken = set(int(p) for p in os.listdir("/proc") if p.isdigit())
    pid = next(p for p in range(30000, 60000) if p not in taken and p + 1 not in taken)
    out = str(tmp_path / "out")
    script = (f"echo {pid} > /proc/sys/kernel/ns_last_pid; {sys.executable} -c '{_LIVE_IN_ANOTHER_PID_NAMESPACE}' {out} & wait")
    live = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "sh", "-c", script], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert live.stdout.readline().strip() == "claimed"
        record = json.loads(open(os.path.join(out, "_live", "run-elsewhere.json")).read())
        assert record["pid"] == pid + 1 and not os.path.exists(f"/proc/{pid + 1}")  # a pid nobody has here
        here = Leases(LocalStore(), out, "run-here", ttl_s=60)
        assert here.is_live("run-elsewhere") and not here.claim("book")
    finally:
        live.kill()
        live.wait()
