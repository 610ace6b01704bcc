"""The output dataset: `pages/` and `documents/` Parquet parts, committed shard by shard.

A shard is committed by writing its pages part, then its documents part under the same
name. Each write is atomic, and the documents part is the commit point: on start, a pages
part with no documents part (a crash between the two writes) is deleted, and documents
already in `documents/` are skipped. So a rerun neither duplicates nor loses a page.
"""
from __future__ import annotations

import io
import json
import logging

import pyarrow.parquet as pq

from folioscan.pipeline.storage import Store, join
from folioscan.schemas import DOCUMENTS, PAGES

log = logging.getLogger(__name__)


class DatasetWriter:
    def __init__(self, store: Store, output: str, run_id: str):
        self.store, self.output, self.run_id = store, output.rstrip("/"), run_id
        self.pages_dir, self.docs_dir = join(self.output, "pages"), join(self.output, "documents")
        self._seq = 0

    def recover(self) -> int:
        """Delete pages parts whose shard never committed. Returns how many were removed."""
        committed = set(self.store.ls(self.docs_dir))
        orphans = [n for n in self.store.ls(self.pages_dir) if n.endswith(".parquet") and n not in committed]
        for name in orphans:
            log.warning("removing uncommitted part %s left by an interrupted run", name)
            self.store.delete(join(self.pages_dir, name))
        return len(orphans)

    def committed_doc_ids(self) -> set[str]:
        ids: set[str] = set()
        for name in self.store.ls(self.docs_dir):
            if name.endswith(".parquet"):
                table = pq.read_table(io.BytesIO(self.store.read(join(self.docs_dir, name))), columns=["doc_id"])
                ids.update(table.column("doc_id").to_pylist())
        return ids

    def commit(self, page_rows: list[dict], doc_rows: list[dict]) -> str:
        name = f"part-{self.run_id}-{self._seq:05d}.parquet"
        self._seq += 1
        pages = PAGES.to_parquet_bytes(page_rows)
        docs = DOCUMENTS.to_parquet_bytes(doc_rows)
        self.store.write(join(self.pages_dir, name), pages)
        self.store.write(join(self.docs_dir, name), docs)  # the commit point
        return name

    def write_run_record(self, record: dict) -> None:
        self.store.write(join(self.output, "_runs", f"{self.run_id}.json"), json.dumps(record, indent=2, default=str).encode())
