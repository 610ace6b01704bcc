"""The `documents` table: one row per book; its presence commits the book's pages."""
import pyarrow as pa

DOCUMENTS_VERSION = 1

DOCUMENTS_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("source_uri", pa.string()),
        ("kind", pa.string()),  # "pdf" | "images"
        ("fingerprint", pa.string()),  # content fingerprint the doc_id was derived from
        ("size_bytes", pa.int64()),
        ("page_count", pa.int32()),  # pages in the source
        ("pages_out", pa.int32()),  # rows in `pages` (a split spread counts twice)
        ("pages_ok", pa.int32()),
        ("pages_blank", pa.int32()),
        ("pages_failed", pa.int32()),
        ("status", pa.string()),  # "ok" | "partial" | "error"
        ("error", pa.string()),
        ("mean_confidence", pa.float32()),  # over OCR'd pages, weighted by characters
        ("text", pa.string()),  # the book's pages joined in reading order, form feed between pages
        ("engine", pa.string()),
        ("run_id", pa.string()),
        ("processed_at", pa.timestamp("ms", tz="UTC")),
    ]
)
