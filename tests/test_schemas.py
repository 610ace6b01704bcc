"""Each table's columns are declared once; rows built by the pipeline must match them exactly."""
import pyarrow as pa
import pytest

from folioscan.pipeline.assemble import assemble_shard
from folioscan.records import OcrLine, OcrResult, PageResult, PageWork, SourceDocument, SourceObject
from folioscan.schemas import DOCUMENTS, PAGES, RowError, Table
from folioscan.schemas.table import col


def _shard():
    doc = SourceDocument("d1", "file:///b.pdf", "pdf", (SourceObject("file:///b.pdf", 10, "sha256:x"),), "sha256:x")
    work = PageWork("d1", "file:///b.pdf", 0, 1, width=100, height=50)
    ocr = OcrResult("hello", [OcrLine("hello", 0.9, (0, 0, 10, 10))], 0.9, 0.9)
    return assemble_shard([doc], [PageResult(work, "ok", ocr, "tesseract", "5")], "run")


def test_assembled_rows_have_exactly_the_declared_columns():
    pages, docs = _shard()
    assert [tuple(r) for r in pages] == [PAGES.names]
    assert [tuple(r) for r in docs] == [DOCUMENTS.names]
    assert PAGES.to_arrow(pages).num_rows == 1 and DOCUMENTS.to_arrow(docs).num_rows == 1


def test_misspelt_or_missing_column_is_an_error_not_a_null():
    pages, _ = _shard()
    row = dict(pages[0])
    row["confidense"] = row.pop("confidence")
    with pytest.raises(RowError, match=r"missing columns \['confidence'\], unknown columns \['confidense'\]"):
        PAGES.to_arrow([row])
    del row["confidense"]
    with pytest.raises(RowError, match="missing columns"):
        PAGES.to_arrow([row])


def test_a_column_declared_twice_is_refused():
    with pytest.raises(ValueError, match="declared twice"):
        Table("t", 1, [col("a", pa.string()), col("a", pa.int32())])


@pytest.mark.parametrize("table", [PAGES, DOCUMENTS], ids=lambda t: t.name)
def test_every_column_is_documented_in_the_schema(table, tmp_path):
    # the doc travels in the Arrow field metadata, so readers of the Parquet see it: every column of
    # both tables, read back from a written file
    import pyarrow.parquet as pq

    assert PAGES.schema.field("confidence").metadata[b"doc"].startswith(b"page confidence, 0..1")
    pages, docs = _shard()
    path = tmp_path / f"{table.name}.parquet"
    path.write_bytes(table.to_parquet_bytes(pages if table is PAGES else docs))
    schema = pq.read_schema(path)
    assert schema.names == list(table.names)
    undocumented = [f.name for f in schema if not (f.metadata or {}).get(b"doc", b"").strip()]
    assert undocumented == [], f"{table.name}: columns without a description: {undocumented}"
    assert [d for _, _, d in table.docs()] == [f.metadata[b"doc"].decode() for f in schema]


def test_error_rows_carry_their_kind():
    from folioscan.failures import PERMANENT, TRANSIENT, classify

    doc = SourceDocument("d1", "file:///b.pdf", "pdf", (SourceObject("file:///b.pdf", 10, "sha256:x"),), "sha256:x")
    bad = PageWork("d1", "file:///b.pdf", 0, 2, error="not a PDF")
    lost_worker = PageWork("d1", "file:///b.pdf", 1, 2, error="actor died", error_kind=TRANSIENT)
    pages, docs = assemble_shard([doc], [PageResult(bad, "error", None, "t", "1", error=bad.error),
                                         PageResult(lost_worker, "error", None, "t", "1", error="actor died")], "run")
    assert [p["error_kind"] for p in pages] == [PERMANENT, TRANSIENT]
    assert docs[0]["status"] == "error" and docs[0]["error_kind"] == TRANSIENT
    assert classify(ConnectionResetError("reset")) == TRANSIENT and classify(ValueError("bad")) == PERMANENT
    try:
        try:
            raise TimeoutError("read timed out")
        except TimeoutError as e:
            raise RuntimeError("load failed") from e
    except RuntimeError as wrapped:
        assert classify(wrapped) == TRANSIENT
