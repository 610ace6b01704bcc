"""The whole job on a local folder, with both executors, bad inputs, resume and crash recovery."""
import os
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from folioscan.pipeline.cli import main
from folioscan.pipeline.config import JobConfig
from folioscan.pipeline.job import run_job
from folioscan.schemas import DOCUMENTS, DOCUMENTS_SCHEMA, METADATA_KEY, PAGES, PAGES_SCHEMA
from tests.helpers import PARAGRAPHS, cer, scanned_pdf


def read(out, table):
    return pq.read_table(os.path.join(out, table)).to_pandas()


def check_library_output(out):
    docs = read(out, "documents").set_index(read(out, "documents").source_uri.str.rsplit("/", n=1).str[-1])
    pages = read(out, "pages")
    assert len(docs) == 7 and docs.index.is_unique
    assert docs.loc["scan_book.pdf", "status"] == "ok" and docs.loc["scan_book.pdf", "page_count"] == 2
    assert docs.loc["image_book", "pages_ok"] == 3
    assert docs.loc["image_book", "fingerprint"].startswith("sha256:")  # the image files' content, not the id
    assert docs.loc["scan_book.pdf", "fingerprint"].startswith("sha256:")
    for bad, reason in [("empty.pdf", "zero-byte"), ("not_a_pdf.pdf", "not a PDF"), ("locked.pdf", "encrypted")]:
        assert docs.loc[bad, "status"] == "error" and reason in docs.loc[bad, "error"]
    assert docs.loc["truncated.pdf", "status"] in ("error", "partial")
    book = pages[pages.source_uri.str.endswith("scan_book.pdf")].sort_values("page_index")
    assert list(book.page_index) == [0, 1] and list(book.image_origin) == ["embedded"] * 2
    assert cer(book.text.iloc[1], PARAGRAPHS[1]) < 0.05
    img = pages[pages.source_uri.str.endswith("image_book")].sort_values("page_index")
    assert [cer(t, p) < 0.05 for t, p in zip(img.text, PARAGRAPHS)] == [True] * 3  # natural order 1, 2, 10
    assert not pages.duplicated(["doc_id", "page_index", "side"]).any()
    spans, text = docs.loc["scan_book.pdf", "page_spans"], docs.loc["scan_book.pdf", "text"]
    assert len(spans) == 2 and spans[0] == 0 < spans[1] < len(text) and "\f" not in text
    return docs, pages


@pytest.mark.parametrize("executor", ["local", pytest.param("ray", marks=pytest.mark.ray)])
def test_job_on_a_folder_with_good_and_bad_books(library, tmp_path, executor, request):
    if executor == "ray":
        request.getfixturevalue("ray_local")
    out = str(tmp_path / "out")
    summary = run_job(JobConfig(source=str(library), output=out, executor=executor, shard_docs=3, progress=False))
    assert summary.documents == 7 and summary.documents_failed >= 3 and not summary.ok
    assert summary.objects_ignored == 1
    check_library_output(out)
    again = run_job(JobConfig(source=str(library), output=out, executor=executor, progress=False))
    assert again.documents == 0 and again.documents_skipped == 7
    check_library_output(out)


def test_schema_round_trip_and_readers(library, tmp_path):
    import duckdb

    out = str(tmp_path / "out")
    assert main(["run", str(library), out, "--executor", "local", "--quiet"]) == 1  # some inputs are bad
    for table, schema in (("pages", PAGES_SCHEMA), ("documents", DOCUMENTS_SCHEMA)):
        [part] = os.listdir(os.path.join(out, table))
        f = pq.ParquetFile(os.path.join(out, table, part))
        assert f.schema_arrow.remove_metadata() == schema
        assert f.schema_arrow.metadata[METADATA_KEY] == {"pages": PAGES, "documents": DOCUMENTS}[table].tag
    n = duckdb.sql(f"select count(*) from read_parquet('{out}/pages/*.parquet') where status = 'ok'").fetchall()[0][0]
    assert n == 3 + 3  # scan_book 2, digital 1, image_book 3
    lines = duckdb.sql(f"select unnest(lines).confidence from read_parquet('{out}/pages/*.parquet')").fetchall()
    assert lines and all(0 <= c <= 1 for (c,) in lines)
    import datasets

    for table, schema in (("pages", PAGES_SCHEMA), ("documents", DOCUMENTS_SCHEMA)):
        ds = datasets.load_dataset("parquet", data_files=os.path.join(out, table, "*.parquet"), split="train")
        assert len(ds) == pq.read_table(os.path.join(out, table)).num_rows and ds.column_names == schema.names
    assert len(ds) == 7


def test_orphan_pages_part_from_a_crash_is_removed_on_rerun(library, tmp_path):
    out = tmp_path / "out"
    run_job(JobConfig(source=str(library), output=str(out), executor="local", shard_docs=100, progress=False))
    [part] = os.listdir(out / "documents")
    os.remove(out / "documents" / part)  # as if the process died between the two writes
    summary = run_job(JobConfig(source=str(library), output=str(out), executor="local", progress=False))
    assert summary.orphans_removed == 1 and summary.documents == 7
    check_library_output(str(out))


@pytest.mark.slow
def test_killed_run_resumes_without_duplicates_or_gaps(tmp_path, page_images):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        (src / f"book{i}.pdf").write_bytes(scanned_pdf([page_images[i % 3], page_images[(i + 1) % 3]]))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "folioscan", "run", str(src), str(out), "--executor", "local", "--shard-docs", "1", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(os.listdir(out / "documents") if (out / "documents").exists() else []) < 2:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    done_before = len(os.listdir(out / "documents"))
    assert 2 <= done_before < 6, "the run must be killed part-way"
    assert subprocess.run(cmd).returncode == 0
    docs, pages = read(out, "documents"), read(out, "pages")
    assert len(docs) == 6 and docs.doc_id.is_unique
    assert len(pages) == 12 and not pages.duplicated(["doc_id", "page_index"]).any()
    assert sorted(pages.groupby("doc_id").page_index.apply(list).map(tuple).unique()) == [(0, 1)]
