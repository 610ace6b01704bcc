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
from folioscan.pipeline.duplicates import ContentClaims, settle
from folioscan.pipeline.job import run_job
from folioscan.pipeline.leases import Leases
from folioscan.pipeline.storage import LocalStore, S3Store
from tests.helpers import png_bytes, scanned_pdf, text_page_image
from tests.test_durability import driver, table


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
