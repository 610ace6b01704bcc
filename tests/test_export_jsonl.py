"""`folioscan export OUTPUT DEST --format jsonl`: Dolma-style gzipped JSON lines, local and on S3."""
import gzip
import json

import boto3
import pytest

from folioscan.pipeline.assemble import assemble_shard
from folioscan.pipeline.cli import main
from folioscan.pipeline.output import DatasetWriter
from folioscan.pipeline.storage import store_for
from folioscan.records import OcrLine, OcrResult, PageResult, PageWork, SourceDocument, SourceObject

LINES = [["12 THE MILL AND THE RIVER", "The miller kept his accounts in a leather book and the", "carters came down the lane with sacks of bar-"],
         ["THE FLOODS OF THAT YEAR 13", "ley and oats from the upland farms every morning until", "the floods came over the meadows in the spring."]]


def _book(doc_id: str, pages: list[list[str]]):
    uri = f"file:///scans/{doc_id}.pdf"
    doc = SourceDocument(doc_id, uri, "pdf", (SourceObject(uri, 100, "sha256:" + doc_id),), "sha256:" + doc_id)
    results = []
    for i, lines in enumerate(pages):
        ocr_lines = [OcrLine(t, 0.9, (100, 40 + 30 * k, 100 + 10 * len(t), 60 + 30 * k)) for k, t in enumerate(lines)]
        results.append(PageResult(PageWork(doc_id, uri, i, len(pages), width=800, height=400), "ok",
                                  OcrResult("\n".join(lines), ocr_lines, 0.9, 0.9), "tesseract", "5"))
    return doc, results


def write_output(uri: str, endpoint_url=None) -> None:
    """A real output dataset through the production assembly and writer: two books and a failed one."""
    writer = DatasetWriter(store_for(uri, endpoint_url), uri, "run1")
    (d1, r1), (d2, r2) = _book("book1", LINES), _book("book2", [LINES[1]])
    bad_uri = "file:///scans/bad.pdf"
    bad = SourceDocument("bad", bad_uri, "pdf", (SourceObject(bad_uri, 0, "sha256:0"),), "sha256:0")
    failed = PageResult(PageWork("bad", bad_uri, -1, 0, error="zero-byte file"), "error", None, "tesseract", "5",
                        error="zero-byte file")
    writer.commit(*assemble_shard([d1, d2], r1 + r2, "run1"))
    writer.commit(*assemble_shard([bad], [failed], "run1"))


def test_export_jsonl_loads_with_datasets(tmp_path, capsys):
    import datasets

    out, dest = str(tmp_path / "out"), str(tmp_path / "dolma")
    write_output(out)
    assert main(["export", out, dest, "--format", "jsonl"]) == 0
    summary = json.loads(capsys.readouterr().out)["jsonl"]
    assert summary["documents"] == 2 and summary["skipped_no_text"] == 1 and len(summary["files"]) == 1
    ds = datasets.load_dataset("json", data_files=f"{dest}/jsonl/*.jsonl.gz", split="train")
    assert set(ds.column_names) == {"id", "text", "source", "added", "created", "metadata"}
    book = {r["id"]: r for r in ds}["book1"]
    assert book["source"] == "folioscan" and book["created"].endswith("Z") and book["added"].endswith("Z")
    assert "barley and oats" in book["text"] and "MILL AND THE RIVER" not in book["text"] and "13" not in book["text"]
    meta = book["metadata"]
    assert meta["language"] == "en" and 0 < meta["ocr_quality"] <= 1 and meta["page_numbers_consistent"] is True
    assert meta["page_spans"][0] == 0 and book["text"][meta["page_spans"][1]:].startswith("ley and oats")
    assert meta["source_uri"] == "file:///scans/book1.pdf" and meta["pages_ok"] == 2


def test_page_rows_keep_the_raw_text_and_the_furniture(tmp_path):
    import pyarrow.parquet as pq

    out = str(tmp_path / "out")
    write_output(out)
    pages = sorted((p for p in pq.read_table(f"{out}/pages").to_pylist() if p["doc_id"] == "book1"),
                   key=lambda p: p["page_index"])
    assert [p["text"] for p in pages] == ["\n".join(lines) for lines in LINES]  # as the engine read it
    assert [p["header"] for p in pages] == [LINES[0][0], LINES[1][0]]
    assert [p["printed_page_number"] for p in pages] == ["12", "13"] and pages[0]["language"] == "en"
    doc = next(d for d in pq.read_table(f"{out}/documents").to_pylist() if d["doc_id"] == "book1")
    assert doc["text"].startswith("The miller kept") and "sacks of barley and oats" in doc["text"]
    assert doc["page_spans"] == [0, doc["text"].index("ley and oats")]


def test_export_s3_to_s3(s3_endpoint):
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="corpus-exports")
    write_output("s3://corpus-exports/out", s3_endpoint)
    assert main(["export", "s3://corpus-exports/out", "s3://corpus-exports/dolma", "--format", "jsonl", "--endpoint-url", s3_endpoint]) == 0
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="corpus-exports", Prefix="dolma/")["Contents"]]
    assert len(keys) == 1 and keys[0].endswith(".jsonl.gz")
    lines = gzip.decompress(s3.get_object(Bucket="corpus-exports", Key=keys[0])["Body"].read()).splitlines()
    assert sorted(json.loads(l)["id"] for l in lines) == ["book1", "book2"]


def test_export_of_a_folder_that_is_no_output_is_an_error(tmp_path, capsys):
    assert main(["export", str(tmp_path), str(tmp_path / "d"), "--format", "jsonl"]) == 2
    assert "no documents parts" in capsys.readouterr().err
    assert main(["export", str(tmp_path), str(tmp_path / "d"), "--format", "nope"]) == 2
    assert "unknown export format 'nope'" in capsys.readouterr().err
