"""The committed index in compacted form (pipeline/compacted.py): a rerun reads it instead of every
documents part, still skips exactly the committed books (some only in parts no index object covers),
two drivers merging at once lose nothing, and a damaged index object is read around, and said."""
import json
import os
import threading

import boto3
import pyarrow.parquet as pq
import pytest

from folioscan.pipeline import compacted
from folioscan.pipeline.committed import CommittedIndex
from folioscan.pipeline.config import JobConfig
from folioscan.pipeline.job import run_job
from folioscan.pipeline.storage import LocalStore, S3Store, join
from folioscan.workers.engines.registry import SyntheticOptions
from tests.helpers import text_pdf


@pytest.fixture(params=["local", "s3"])
def where(request, tmp_path, s3_endpoint):
    """(store, source, output, put(name, bytes)) in a local folder, or in S3 through moto's HTTP endpoint."""
    if request.param == "local":
        src, out = tmp_path / "src", str(tmp_path / "out")
        src.mkdir()
        return LocalStore(), str(src), out, lambda name, data: (src / name).write_bytes(data), None
    bucket = f"ix-{os.urandom(4).hex()}"
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket=bucket)
    return (S3Store(s3_endpoint), f"s3://{bucket}/src/", f"s3://{bucket}/out",
            lambda name, data: s3.put_object(Bucket=bucket, Key=f"src/{name}", Body=data), s3_endpoint)


def run(src, out, endpoint, **kw):
    return run_job(JobConfig(source=src, output=out, executor="local", progress=False, shard_docs=1,
                             prep={"enabled": False}, engine=SyntheticOptions(), endpoint_url=endpoint, **kw))


def committed(store, out) -> dict[str, str]:
    """source file name -> status, from every documents part."""
    rows = []
    for name in store.ls(join(out, "documents")):
        import io

        rows += pq.read_table(io.BytesIO(store.read(join(out, "documents", name)))).to_pylist()
    return {r["source_uri"].rsplit("/", 1)[1]: r["status"] for r in rows}


def test_a_rerun_skips_exactly_the_committed_books_from_the_index_and_the_parts_it_does_not_cover(where, monkeypatch):
    store, src, out, put, endpoint = where
    for i in range(4):
        put(f"b{i}.pdf", text_pdf([f"book {i}"]))
    first = run(src, out, endpoint)  # 4 parts, one delta at the run's end
    assert first.documents == 4 and first.committed_index["deltas_written"] == 1
    for i in (4, 5):
        put(f"b{i}.pdf", text_pdf([f"book {i}"]))
    second = run(src, out, endpoint)
    assert second.committed_index["deltas_read"] == 1 and second.committed_index["parts_read_directly"] == 0
    assert (second.documents, second.documents_skipped) == (2, 4)
    ix = join(out, "_index")
    second_delta = [n for n in store.ls(ix) if second.run_id in n]
    assert len(second_delta) == 1
    store.delete(join(ix, second_delta[0]))  # as a run killed before its delta leaves its parts: uncovered
    for i in (6, 7):
        put(f"b{i}.pdf", text_pdf([f"book {i}"]))
    monkeypatch.setattr(compacted, "MERGE_PARTS", 2)  # the run that finds 2 uncovered parts merges
    third = run(src, out, endpoint)
    assert third.committed_index["deltas_read"] == 1 and third.committed_index["parts_read_directly"] == 2
    assert (third.documents, third.documents_skipped) == (2, 6)
    assert third.committed_index["base_written"] and not third.committed_index["problems"]
    head = json.loads(store.read(join(ix, "HEAD.json")))
    assert head["base"] == third.committed_index["base_written"] and head["rows"] == 6
    put("b8.pdf", text_pdf(["book 8"]))
    fourth = run(src, out, endpoint)  # the base (6 books), the third run's delta (2 books)
    ci = fourth.committed_index
    assert (ci["base"], ci["deltas_read"], ci["parts_read_directly"], ci["books"]) == (head["base"], 1, 0, 8)
    assert (fourth.documents, fourth.documents_skipped) == (1, 8)
    assert committed(store, out) == {f"b{i}.pdf": "ok" for i in range(9)}  # each book once
    record = json.loads(store.read(join(out, "_runs", f"{fourth.run_id}.json")))
    assert record["summary"]["committed_index"]["base"] == head["base"]


def test_a_newer_row_in_a_delta_wins_over_the_base_and_a_removed_part_uncommits_its_books(tmp_path, monkeypatch):
    """New content under a committed name (a newer row of its URI, in a delta) supersedes the base's row,
    and a part removed from documents/ takes its books out of the index, as the parts themselves would."""
    src, out = tmp_path / "src", str(tmp_path / "out")
    src.mkdir()
    (src / "bad.pdf").write_bytes(b"%PDF-1.4 not really")
    (src / "good.pdf").write_bytes(text_pdf(["good"]))
    monkeypatch.setattr(compacted, "MERGE_DELTAS", 1)
    run(str(src), out, None)
    merged = run(str(src), out, None)  # nothing new; merges the first run's delta into a base
    assert merged.committed_index["base_written"] and merged.documents == 0
    (src / "bad.pdf").write_bytes(text_pdf(["fixed"]))  # new content under the committed name: replaced
    again = run(str(src), out, None)
    assert (again.documents, again.documents_replaced) == (1, 1)
    ix = CommittedIndex(LocalStore(), os.path.join(out, "documents"))
    ix.refresh()
    assert committed(LocalStore(), out) == {"bad.pdf": "ok", "good.pdf": "ok"}  # the old row superseded
    uri = str(src / "bad.pdf")
    assert ix.by_id[ix.by_uri.get(uri)].status == "ok"
    good = ix.by_uri.get(str(src / "good.pdf"))
    part = ix.by_id[good].part
    os.remove(os.path.join(out, "documents", part))  # a documents part removed: its book is not committed
    ix = CommittedIndex(LocalStore(), os.path.join(out, "documents"))
    ix.refresh()
    assert good not in ix.by_id and ix.by_id[ix.by_uri.get(uri)].status == "ok"


def _legacy_output(store, out, books: int, run_id: str = "20260101T000000Z-old", first: int = 0) -> list[str]:
    """`books` one-book parts committed by the real writer (run `run_id`, books `first`...), no index
    (today's layout); their doc ids."""
    from folioscan.pipeline.assemble import assemble_shard
    from folioscan.pipeline.output import DatasetWriter
    from folioscan.pipeline.sources import pdf_document
    from folioscan.records import OcrResult, PageResult, PageWork, SourceObject

    writer = DatasetWriter(store, out, run_id)
    ids = []
    for i in range(first, first + books):
        d = pdf_document(SourceObject(f"s3://lib/book_{i:04d}.pdf", 10, f"etag:{i:032x}"))
        writer.commit(*assemble_shard([d], [PageResult(PageWork(d.doc_id, d.uri, 0, 1), "ok",
                                                       OcrResult("x", [], 0.9), "tesseract", "5")], writer.run_id))
        ids.append(d.doc_id)
    return ids


def test_two_drivers_merging_at_once_lose_nothing(tmp_path, monkeypatch):
    store, out = LocalStore(), str(tmp_path / "out")
    ids = _legacy_output(store, out, 70)
    docs, ix_dir = os.path.join(out, "documents"), os.path.join(out, "_index")
    monkeypatch.setattr(compacted, "MERGE_PARTS", 10)
    loaded, errors = threading.Barrier(2), []
    more = {"r1": [f"{i:032x}" for i in (1, 2)], "r2": [f"{i:032x}" for i in (3, 4)], "r3": [f"{i:032x}" for i in (5,)]}

    def commit(ix: CommittedIndex, run_id: str) -> None:  # as a run's commit: a documents part, then its delta
        part = f"part-{run_id}-00000.parquet"
        store.write(os.path.join(docs, part), b"PAR1")  # listed, never read: its delta covers it
        ix.record(part, [{"doc_id": d, "source_uri": f"s3://lib/{d}.pdf", "status": "ok", "processed_at": 1e9}
                         for d in more[run_id]])
        ix.flush()

    def driver(run_id: str) -> None:
        try:
            ix = CommittedIndex(store, docs, run_id)
            ix.refresh()
            loaded.wait(timeout=30)  # both loaded the same output: both merge it, at once
            assert ix.compact()
            commit(ix, run_id)
        except BaseException as e:  # noqa: BLE001  (reported below, from the main thread)
            errors.append(e)

    threads = [threading.Thread(target=driver, args=(r,)) for r in ("r1", "r2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    everything = ids + more["r1"] + more["r2"]
    fresh = CommittedIndex(store, docs)
    fresh.refresh()
    assert all(d in fresh.by_id for d in everything)  # the 70 books of either base, the 4 of both deltas
    assert (fresh.report["deltas_read"], fresh.report["parts_read_directly"], fresh.report["problems"]) == (2, 0, [])
    assert len([n for n in store.ls(ix_dir) if n.startswith("base-")]) == 2
    # a third driver merges both deltas: every older object is retired, none deleted within the grace
    monkeypatch.setattr(compacted, "MERGE_DELTAS", 2)
    third = CommittedIndex(store, docs, "r3")
    third.refresh()
    assert third.compact() and len(store.ls(ix_dir)) == 6  # 3 bases, 2 deltas, HEAD
    commit(third, "r3")
    # a merge past the grace deletes what was retired; what is left still holds every book
    monkeypatch.setattr(compacted, "MERGE_DELTAS", 1)
    later = compacted.time.time() + compacted.GRACE_S + 1
    monkeypatch.setattr(compacted.time, "time", lambda: later)
    fourth = CommittedIndex(store, docs, "r4")
    fourth.refresh()
    assert fourth.compact() and sorted(n.split("-")[0] for n in store.ls(ix_dir)) == ["HEAD.json", "base", "base", "delta"]
    fresh = CommittedIndex(store, docs)
    fresh.refresh()
    assert all(d in fresh.by_id for d in everything + more["r3"])
    assert (fresh.report["parts_read_directly"], fresh.report["problems"]) == (0, [])


@pytest.mark.parametrize("damage", ["base", "delta"])
def test_a_damaged_index_object_is_read_around_and_said_in_the_run_record(tmp_path, monkeypatch, damage):
    src, out = tmp_path / "src", str(tmp_path / "out")
    src.mkdir()
    for i in range(3):
        (src / f"b{i}.pdf").write_bytes(text_pdf([f"book {i}"]))
    monkeypatch.setattr(compacted, "MERGE_DELTAS", 1)
    run(str(src), out, None)
    run(str(src), out, None)  # merges the first run's delta into a base
    (src / "b3.pdf").write_bytes(text_pdf(["book 3"]))
    run(str(src), out, None)  # a delta with b3
    ix = os.path.join(out, "_index")
    head = json.load(open(os.path.join(ix, "HEAD.json")))
    name = head["base"] if damage == "base" else next(n for n in os.listdir(ix) if n.startswith("delta-") and n not in
                                                      head_absorbed(os.path.join(ix, head["base"])))
    if damage == "base":  # the deltas it absorbed long deleted (retired, past the grace): nothing else covers b0..b2
        for old in head_absorbed(os.path.join(ix, head["base"])):
            os.remove(os.path.join(ix, old))
    path = os.path.join(ix, name)
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])  # cut short, as a partial upload or a damaged copy
    (src / "b4.pdf").write_bytes(text_pdf(["book 4"]))
    monkeypatch.setattr(compacted, "MERGE_DELTAS", 100)
    summary = run(str(src), out, None)
    ci = summary.committed_index
    assert len(ci["problems"]) == 1 and name in ci["problems"][0] and "checksum" in ci["problems"][0]
    assert ci["parts_read_directly"] == (3 if damage == "base" else 1)  # what the damaged object covered
    assert (summary.documents, summary.documents_skipped) == (1, 4)
    record = json.load(open(os.path.join(out, "_runs", f"{summary.run_id}.json")))
    assert record["summary"]["committed_index"]["problems"] == ci["problems"]
    assert committed(LocalStore(), out) == {f"b{i}.pdf": "ok" for i in range(5)}


def head_absorbed(path: str) -> list[str]:
    return compacted.decode(open(path, "rb").read()).absorbed


def test_the_index_object_format_checks_itself():
    chunk = compacted.chunk_from_rows([("p1", [{"doc_id": "ab" * 16, "source_uri": "u", "status": "ok",
                                                 "processed_at": 5.0, "duplicate_of": "cd" * 16}])])
    data = compacted.encode(chunk)
    back = compacted.decode(data)
    assert back.parts == ["p1"] and compacted.key_hex(back.cols["dup_hi"][0], back.cols["dup_lo"][0]) == "cd" * 16
    for bad in (data[:-1], data[:40], b"x" + data[1:], data[:100] + bytes([data[100] ^ 1]) + data[101:]):
        with pytest.raises(compacted.IndexObjectError):
            compacted.decode(bad)
    assert compacted.chunk_from_rows([("p", [{"doc_id": "d1", "source_uri": "u", "status": "ok"}])]) is None


def test_with_an_index_recovery_finds_a_killed_runs_orphan_pages_by_its_liveness_record(tmp_path, monkeypatch):
    """Recovery lists only the parts of runs that left a liveness record and are not live (not the whole
    folders), and still removes a killed driver's pages part that never got its documents part."""
    src, out = tmp_path / "src", str(tmp_path / "out")
    src.mkdir()
    (src / "b0.pdf").write_bytes(text_pdf(["book 0"]))
    monkeypatch.setattr(compacted, "MERGE_DELTAS", 1)
    run(str(src), out, None)
    assert run(str(src), out, None).committed_index["base_written"]  # the output has an index now
    pages = os.path.join(out, "pages")
    orphan = os.path.join(pages, "part-20260101T000000Z-dead-00000.parquet")
    open(orphan, "wb").write(open(os.path.join(pages, os.listdir(pages)[0]), "rb").read())
    os.makedirs(os.path.join(out, "_live"), exist_ok=True)
    with open(os.path.join(out, "_live", "20260101T000000Z-dead.json"), "w") as f:  # killed: its record expired
        json.dump({"run_id": "20260101T000000Z-dead", "host": "elsewhere", "pid": 1, "expires_at": 1.0}, f)
    summary = run(str(src), out, None)
    assert summary.orphans_removed == 1 and not os.path.exists(orphan)
    assert (summary.documents, summary.documents_skipped) == (0, 1)


def test_a_run_that_commits_and_ends_between_the_load_and_its_look_at_live_runs_is_not_missed(tmp_path):
    """A driver's index lists documents/ for its load, then reads which runs are live; a refresh lists
    only those runs' parts. Another run that started, committed a book and ended in between was live
    at neither look: its part was never listed, and a third driver committed that book again
    (fresh-clone CI, test_durability). Its run record (`_runs/`), written before its liveness record
    goes, makes the next refresh list it."""
    from folioscan.pipeline.output import DatasetWriter

    store, out = LocalStore(), str(tmp_path / "out")
    _legacy_output(store, out, 1)
    ix = CommittedIndex(store, join(out, "documents"), "C")
    ix.note_ended_runs()
    listed = store.ls(join(out, "documents"))  # the load's listing, before B commits
    [late] = _legacy_output(store, out, 1, run_id="B", first=1)
    DatasetWriter(store, out, "B").write_run_record({"status": "finished"})  # B ended: no liveness record
    assert not os.path.exists(join(out, "_live", "B.json"))
    ix.refresh(listed)  # the load: B's part was not in its listing
    assert ix.by_id.get(late) is None
    assert late in ix.refresh()  # found by B's run record
    assert late in ix.by_id and ix.refresh() == set()  # and B's parts are listed once

