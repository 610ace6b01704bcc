"""Identical source bytes under different names: read and OCR'd once, every copy listed in
`documents` (status duplicate, duplicate_of the first copy), its pages once; within a run, across
runs, across drivers, for PDFs and folders of page images; exports that carry the text once."""
import json
import os
import shutil

import pytest

from folioscan.pipeline.cli import main
from folioscan.pipeline.committed import CommittedIndex
from folioscan.pipeline.config import JobConfig
from folioscan.pipeline.duplicates import ContentClaims, First, settle
from folioscan.pipeline.job import run_job
from folioscan.pipeline.leases import Leases
from folioscan.pipeline.storage import LocalStore, S3Store
from tests.helpers import png_bytes, scanned_pdf, text_page_image
from tests.test_durability import _CountingStore, driver, table


@pytest.fixture(scope="module")
def pdfs():
    """Three different scanned books (two pages each)."""
    pages = [text_page_image(f"Page {i}: the quick brown fox jumps over the lazy dog.", dpi=60) for i in range(4)]
    return [scanned_pdf([pages[i], pages[i + 1]], dpi=60) for i in range(3)]


def cfg(src, out, **kw):
    return JobConfig(**{"source": str(src), "output": str(out), "executor": "local", "progress": False,
                        "prep": {"enabled": False}, **kw})


def check_read_once(out, copies: dict[str, list[str]]):
    """`copies`: content name -> the file names holding those bytes. One copy of each content has
    pages (status ok); every other copy is a duplicate of it, without pages."""
    docs, pages = table(out, "documents"), table(out, "pages")
    docs["name"] = docs.source_uri.str.rsplit("/", n=1).str[-1]
    assert docs.doc_id.is_unique and sorted(docs.name) == sorted(n for names in copies.values() for n in names)
    for names in copies.values():
        group = docs[docs.name.isin(names)]
        [first] = group[group.status == "ok"].doc_id  # exactly one copy read
        dups = group[group.doc_id != first]
        assert (dups.status == "duplicate").all() and (dups.duplicate_of == first).all()
        assert (dups.pages_out == 0).all() and dups.text.isna().all() and (dups.page_count == 2).all()
        assert group.content_sha256.nunique() == 1 and group.duplicate_of.isna().sum() == 1
    assert set(pages.doc_id) == set(docs[docs.status == "ok"].doc_id)
    assert len(pages) == 2 * len(copies) and (pages.groupby(["doc_id", "page_index"]).size() == 1).all()
    return docs, pages


def test_identical_copies_under_different_names_are_read_once(tmp_path, pdfs):
    src = tmp_path / "src"
    src.mkdir()
    copies = {"a": [f"a-copy{i:02d}.pdf" for i in range(20)], "b": ["b.pdf", "zz-b-again.pdf"], "c": ["c.pdf"]}
    for content, names in copies.items():
        for name in names:
            (src / name).write_bytes(pdfs["abc".index(content)])
    out = tmp_path / "out"
    summary = run_job(cfg(src, out, shard_docs=4))  # copies in the same shard and in later shards
    check_read_once(out, copies)
    assert (summary.documents, summary.documents_duplicate, summary.pages, summary.documents_failed) == (23, 20, 6, 0)
    assert summary.stages["ocr"]["pages"] == 6  # the copies were never OCR'd
    record = json.load(open(out / "_runs" / f"{summary.run_id}.json"))
    assert record["summary"]["documents_duplicate"] == 20
    assert run_job(cfg(src, out)).documents == 0  # a rerun skips duplicates like any committed book
    # the same bytes again, under a new name, in a later run: a duplicate of the committed first copy
    (src / "late-a.pdf").write_bytes(pdfs[0])
    (src / "new.pdf").write_bytes(scanned_pdf([text_page_image("Another book entirely, with other words.", dpi=60)] * 2, dpi=60))
    summary = run_job(cfg(src, out))
    assert (summary.documents, summary.documents_duplicate, summary.pages) == (2, 1, 2)
    check_read_once(out, {**copies, "a": copies["a"] + ["late-a.pdf"], "new": ["new.pdf"]})


def test_keep_duplicates_reads_every_copy(tmp_path, pdfs):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("x.pdf", "y.pdf"):
        (src / name).write_bytes(pdfs[0])
    summary = run_job(cfg(src, tmp_path / "out", dedupe=False))
    docs = table(str(tmp_path / "out"), "documents")
    assert summary.documents_duplicate == 0 and (docs.status == "ok").all() and docs.duplicate_of.isna().all()
    assert docs.content_sha256.nunique() == 1  # recorded all the same


def test_identical_folders_of_page_images_keep_their_pages_once(tmp_path):
    src = tmp_path / "src"
    pages = [png_bytes(text_page_image(f"Folio {i}: pages scanned as image files.", dpi=60)) for i in range(2)]
    for folder in ("vol1", "vol1-copy", "vol2"):
        (src / folder).mkdir(parents=True)
        for i, data in enumerate(pages if folder != "vol2" else pages[::-1]):  # vol2: same files, other order
            (src / folder / f"p{i}.png").write_bytes(data)
    summary = run_job(cfg(src, tmp_path / "out"))
    docs = table(str(tmp_path / "out"), "documents").set_index("source_uri")
    first, copy, other = (docs.loc[str(src / f)] for f in ("vol1", "vol1-copy", "vol2"))
    assert first.status == "ok" and copy.status == "duplicate" and copy.duplicate_of == first.doc_id
    assert other.status == "ok" and other.content_sha256 != first.content_sha256  # page order is content
    assert summary.documents_duplicate == 1 and summary.pages == 4  # the copy was read (its hash needs its last page), then dropped
    assert set(table(str(tmp_path / "out"), "pages").doc_id) == {first.doc_id, other.doc_id}


@pytest.mark.slow
def test_two_drivers_over_many_copies_read_each_content_once(tmp_path, pdfs):
    src = tmp_path / "src"
    src.mkdir()
    copies = {"a": [f"a{i}.pdf" for i in range(6)], "b": [f"b{i}.pdf" for i in range(3)], "c": ["c.pdf"]}
    for content, names in copies.items():
        for name in names:
            (src / name).write_bytes(pdfs["abc".index(content)])
    out = str(tmp_path / "out")
    procs = [driver(src, out, run_id) for run_id in ("driverA", "driverB")]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    check_read_once(out, copies)


def test_a_duplicate_of_a_first_copy_that_was_never_committed_is_read_by_a_later_run(tmp_path, pdfs):
    src = tmp_path / "src"
    src.mkdir()
    (src / "copy.pdf").write_bytes(pdfs[0])
    out = str(tmp_path / "out")
    import hashlib

    sha = hashlib.sha256(pdfs[0]).hexdigest()
    ghost = Leases(LocalStore(), out, "ghost", ttl_s=60).start()  # a live driver in the middle of reading the same bytes
    assert ContentClaims(LocalStore(), out, "ghost", 60).claim(sha, "ghostbook") is None
    summary = run_job(cfg(src, out))
    docs = table(out, "documents")
    assert summary.documents_duplicate == 1 and docs.duplicate_of.tolist() == ["ghostbook"]  # first copy in flight
    ghost.stop()  # ... and it died without committing it
    summary = run_job(cfg(src, out))  # its first copy gone: this copy is read now
    docs = table(out, "documents")
    assert (summary.documents, summary.pages) == (1, 2) and docs.status.tolist() == ["ok"] and len(table(out, "pages")) == 2
    assert json.load(open(os.path.join(out, "_content", f"{sha}.json")))["doc_id"] == docs.doc_id[0]


def test_at_commit_a_duplicate_whose_first_copy_is_gone_becomes_a_transient_error(tmp_path):
    out = str(tmp_path / "out")
    store = LocalStore()
    claims = ContentClaims(store, out, "run-1", 60)
    Leases(store, out, "run-1", 60).renew()
    index = CommittedIndex(store, os.path.join(out, "documents"))
    row = {"doc_id": "d2", "source_uri": "s3://b/d2.pdf", "status": "duplicate", "duplicate_of": "d1",
           "content_sha256": "f" * 64, "error": None, "error_kind": None}
    pages, docs, firsts = settle(claims, index, [], [dict(row)])
    assert firsts == [] and docs[0]["status"] == "error" and docs[0]["error_kind"] == "transient"
    assert docs[0]["duplicate_of"] is None and "d1" in docs[0]["error"]


def test_a_claim_on_bytes_is_not_looked_at_again_at_commit_unless_its_run_stalled(tmp_path):
    """The generation a loader took travels with the book: while the run has been live without a lapse
    since it claimed the book, the first copy is settled with no request; a run that stalled past its
    TTL (and whose claim on the bytes was taken over meanwhile) looks again, and its book is a duplicate."""
    import time

    store, out, sha = _CountingStore(), str(tmp_path / "out"), "e" * 64
    index = CommittedIndex(store, os.path.join(out, "documents"))
    row = {"doc_id": "book1", "source_uri": "s3://b/book1.pdf", "status": "ok", "duplicate_of": None,
           "content_sha256": sha, "error": None, "error_kind": None}
    run = Leases(store, out, "run-1", ttl_s=2.0)
    run.renew()  # announced; no heartbeat
    mine = ContentClaims(store, out, "run-1", 2.0)
    assert run.claim("book1") and mine.take(sha, "book1") == (None, "00000000")  # the book, then its loader's claim
    store.ls_calls = store.reads = 0
    _, docs, firsts = settle(mine, index, [], [dict(row)], run, {"book1": "00000000"})
    assert firsts == [First(row, "00000000")] and (store.ls_calls, store.reads) == (0, 0)  # not looked at
    time.sleep(2.3)  # run-1 looks dead ...
    other = Leases(store, out, "run-2", ttl_s=30).start()
    assert ContentClaims(store, out, "run-2", 30).take(sha, "book2") == (None, "00000001")  # ... and loses the bytes
    run.start()  # its heartbeat comes back: fresh, but not unbroken since it claimed book1
    pages, docs, firsts = settle(mine, index, [{"doc_id": "book1"}], [dict(row)], run, {"book1": "00000000"})
    assert firsts == [] and pages == [] and docs[0]["status"] == "duplicate" and docs[0]["duplicate_of"] == "book2"
    run.stop()
    other.stop()


def test_content_claims_are_exclusive_on_local_and_s3(tmp_path, s3_endpoint):
    import boto3

    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="content")
    sha = "0" * 64
    for store, out in ((LocalStore(), str(tmp_path / "out")), (S3Store(s3_endpoint), "s3://content/out")):
        runs = [Leases(store, out, f"run-{i}", ttl_s=30).start() for i in (1, 2)]
        one, two = (ContentClaims(store, out, f"run-{i}", 30) for i in (1, 2))
        assert one.claim(sha, "A") is None and one.claim(sha, "A") is None  # first copy; asking again is idempotent
        assert two.claim(sha, "B") == "A" and one.claim(sha, "C") == "A"  # in flight: other books are its copies
        assert two.holder(sha) == "A"
        one.register(sha, "A", "s3://x/A.pdf")
        one.release(sha, "A")
        assert two.claim(sha, "B") == "A" and two.first_copy(sha)["doc_id"] == "A"  # committed
        two.forget(sha, "A")
        runs[0].stop()
        assert two.claim(sha, "B") is None  # no record, no live claim: B is the first copy now
        runs[1].stop()


def test_exports_carry_each_content_once_and_count_the_copies(tmp_path, pdfs, capsys):
    src = tmp_path / "src"
    src.mkdir()
    from tests.helpers import PARAGRAPHS

    book = scanned_pdf([text_page_image(p, dpi=100) for p in PARAGRAPHS[:2]], dpi=100)
    for name in ("one.pdf", "one-again.pdf"):
        (src / name).write_bytes(book)
    out, dest = str(tmp_path / "out"), str(tmp_path / "dest")
    run_job(cfg(src, out))
    capsys.readouterr()
    assert main(["export", out, dest, "--format", "jsonl,hocr"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["books"], summary["duplicates"], summary["jsonl"]["documents"], summary["jsonl"]["skipped_duplicate"]) == (1, 1, 1, 1)
    assert len(os.listdir(os.path.join(dest, "hocr"))) == 1
    import gzip

    [lines] = [gzip.open(os.path.join(dest, "jsonl", f)).read().splitlines() for f in os.listdir(os.path.join(dest, "jsonl"))]
    [line] = lines  # the text once in the corpus
    assert "Ishmael" in json.loads(line)["text"]
    shutil.rmtree(dest)
    # --also: the same rule as each shard commits
    out2 = str(tmp_path / "out2")
    s = run_job(cfg(src, out2, also=["hocr"]))
    assert s.documents_duplicate == 1 and len(os.listdir(os.path.join(out2, "hocr"))) == 1 and not s.export_errors


def test_on_ray_copies_loaded_side_by_side_are_read_once(tmp_path, pdfs, ray_local):
    """Ray's loaders run at once: copies race for the claim on their bytes, in the workers."""
    src = tmp_path / "src"
    src.mkdir()
    copies = {"a": [f"a{i}.pdf" for i in range(4)], "b": ["b0.pdf", "b1.pdf"]}
    for content, names in copies.items():
        for name in names:
            (src / name).write_bytes(pdfs["ab".index(content)])
    out = tmp_path / "out"
    summary = run_job(cfg(src, out, executor="ray", shard_docs=3))
    check_read_once(out, copies)
    assert (summary.documents_duplicate, summary.stages["ocr"]["pages"]) == (4, 4)


@pytest.fixture(scope="module")
def counting_s3():
    """moto's S3 server on 127.0.0.1, counting the requests it serves by kind and area (bench/s3_count.py's
    middleware, in a thread here): a URL and a function returning the counts since the last call."""
    import importlib.util
    import threading

    from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location("s3_count", os.path.join(root, "bench", "s3_count.py"))
    s3_count = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(s3_count)
    app = s3_count.Counting(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, app, True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def counts() -> dict[str, int]:
        with app.lock:
            taken = dict(app.counts)
            app.counts.clear()
        return taken

    yield f"http://127.0.0.1:{server.server_port}", counts
    server.shutdown()


def content_requests(counts: dict[str, int]) -> dict[str, int]:
    """The requests for duplicate detection: first-copy records and claims on bytes."""
    return {k: n for k, n in counts.items() if k.endswith((" out/_content", " out/_leases/content-"))}


def test_a_first_copy_costs_five_requests_for_duplicate_detection_and_a_copy_one(counting_s3, monkeypatch):
    """S3 requests per book for duplicate detection, counted where moto's server receives them: a first
    copy needs the loader's look-up, the claim (listing, exclusive create), the look-up again and the
    record, and its share of one DeleteObjects per shard; no second look at commit (before: about 11
    a book here, 14 with the Ray executor, whose every loader task probed for conditional writes)."""
    import boto3

    import numpy as np

    endpoint, counts = counting_s3
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket="dedupe")
    books = 12
    pages = [np.full((260, 200), 255, np.uint8) for _ in range(books)]
    for i, page in enumerate(pages):
        page[20 + 10 * i:26 + 10 * i, 20:180] = 0  # every book's bytes different
    pdfs = [scanned_pdf([page], dpi=60) for page in pages]
    for i, data in enumerate(pdfs):
        s3.put_object(Bucket="dedupe", Key=f"src/book{i:02d}.pdf", Body=data)

    def run(out, **kw):
        counts()
        summary = run_job(JobConfig(source="s3://dedupe/src/", output=f"s3://dedupe/out/{out}", endpoint_url=endpoint,
                                    executor="local", progress=False, engine={"kind": "synthetic"},
                                    prep={"enabled": False}, **kw))
        return summary, counts()

    run("warm", dedupe=False)  # the process's S3 client and its probe of conditional writes, once per process
    summary, kept = run("kept", dedupe=False)
    assert summary.documents == books and content_requests(kept) == {}
    summary, seen = run("seen")
    assert (summary.documents, summary.documents_duplicate, summary.pages) == (books, 0, books)
    per_kind = content_requests(seen)
    assert per_kind == {"GET out/_content": 2 * books, "LIST out/_leases/content-": books,
                        "PUT-IF-NONE-MATCH out/_leases/content-": books, "PUT out/_content": books,
                        "DELETE-MANY out/_leases/content-": 1}, per_kind
    assert sum(per_kind.values()) / books <= 5.1
    assert sum(seen.values()) - sum(kept.values()) == sum(per_kind.values())  # nothing else changed
    left = s3.list_objects_v2(Bucket="dedupe", Prefix="out/seen/_leases/").get("Contents", [])
    assert left == []  # every claim released
    # copies of committed books under new names, in a later run: one look-up each
    for i in range(4):
        s3.put_object(Bucket="dedupe", Key=f"src/copy{i}.pdf", Body=pdfs[i])
    summary, seen = run("seen")
    assert (summary.documents, summary.documents_duplicate, summary.pages) == (4, 4, 0)
    assert content_requests(seen) == {"GET out/_content": 4}
    docs = table("s3://dedupe/out/seen", "documents", s3)
    assert docs.groupby("content_sha256").status.apply(sorted).map(tuple).value_counts().to_dict() == {
        ("duplicate", "ok"): 4, ("ok",): books - 4}


def test_a_first_copys_record_that_cannot_be_read_is_not_taken_for_no_first_copy(tmp_path, pdfs):
    """Only a record that does not exist means the bytes have no committed first copy. One that exists
    and cannot be read (here a folder where the record's file is, as S3's AccessDenied or a 5xx after
    retries would be) made the copy a first copy again: OCR'd, its pages committed beside the first
    copy's. Now the copy is a transient error row, read again by a later run, and its pages are not
    committed; the first copy's record is left as it was."""
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    (src / "a.pdf").write_bytes(pdfs[0])
    run_job(cfg(src, out))
    [record] = os.listdir(out / "_content")
    (out / "_content" / record).unlink()
    (out / "_content" / record).mkdir()  # it exists, and reading it fails
    (src / "b-copy.pdf").write_bytes(pdfs[0])
    summary = run_job(cfg(src, out))
    docs, pages = table(out, "documents"), table(out, "pages")
    b = docs[docs.source_uri.str.endswith("b-copy.pdf")]
    assert len(b) == 1 and b.status.iloc[0] == "error" and b.error_kind.iloc[0] == "transient", b.to_dict("records")
    assert "_content" in b.error.iloc[0]
    assert set(pages.doc_id) == set(docs[docs.source_uri.str.endswith("/a.pdf")].doc_id) and len(pages) == 2
    assert summary.status == "finished" and (out / "_content" / record).is_dir()
