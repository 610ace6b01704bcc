"""Dolma-style gzipped JSON lines: one line per book with its clean reading text and signals.

    {"id", "text", "source", "added", "created", "metadata": {...}}

`source` is "folioscan"; `added` is when the export ran and `created` when the text was made
(the documents row's processed_at), both ISO 8601 UTC. One DEST/<part>.jsonl.gz per committed
documents part, written book by book from Parquet record batches (one part in memory at a time).
Books with no text (failed as a whole) are counted, not written; so are duplicates (the same bytes as
an earlier book, whose line carries the text once: docs/duplicates.md).
"""
from __future__ import annotations

import gzip
import io
import json
from datetime import datetime, timezone

import pyarrow.parquet as pq

from folioscan.pipeline.storage import Store, StorageError, join

SOURCE = "folioscan"
METADATA = ("source_uri", "kind", "fingerprint", "content_sha256", "status", "error", "page_count", "pages_out", "pages_ok",
            "pages_blank", "pages_failed", "engine", "run_id", "page_spans", "page_numbers_consistent",
            "language", "language_share", "lexicon_fraction", "repetition", "mean_confidence", "ocr_quality")
BATCH_ROWS = 8


def _iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def record(row: dict, added: str) -> dict:
    created = row.get("processed_at")
    return {"id": row["doc_id"], "text": row["text"], "source": SOURCE, "added": added,
            "created": _iso(created) if created else added,
            "metadata": {k: row.get(k) for k in METADATA}}


def export(output: str, dest: str, source_store: Store, dest_store: Store) -> dict:
    docs_dir = join(output.rstrip("/"), "documents")
    added = _iso(datetime.now(timezone.utc))
    summary = {"format": "jsonl", "files": [], "documents": 0, "skipped_no_text": 0, "skipped_duplicate": 0}
    parts = sorted(n for n in source_store.ls(docs_dir) if n.endswith(".parquet"))
    if not parts:
        raise StorageError(f"{docs_dir}: no documents parts (is {output} a folioscan output?)")
    for name in parts:
        parquet = pq.ParquetFile(io.BytesIO(source_store.read(join(docs_dir, name))))
        buf = io.BytesIO()
        written = 0
        with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
            for batch in parquet.iter_batches(batch_size=BATCH_ROWS):
                for row in batch.to_pylist():
                    if row.get("status") == "duplicate":
                        summary["skipped_duplicate"] += 1
                        continue
                    if not row.get("text"):
                        summary["skipped_no_text"] += 1
                        continue
                    gz.write(json.dumps(record(row, added), ensure_ascii=False).encode() + b"\n")
                    written += 1
        if written:
            target = join(dest.rstrip("/"), name.removesuffix(".parquet") + ".jsonl.gz")
            dest_store.write(target, buf.getvalue())
            summary["files"].append(target)
            summary["documents"] += written
    return summary
