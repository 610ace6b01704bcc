"""The output dataset: `pages/` and `documents/` Parquet parts, committed shard by shard.

A shard is committed by writing its pages part, then its `--also` exports, then its documents
part under the same name. Each write is atomic, and the documents part is the commit point (so a
committed book has its exports; a book whose exports failed is not committed, and is redone): on
start, a pages part with no documents part (a crash between the writes) is deleted once the run that
wrote it is no longer live (another driver's commit may be in flight), and documents already
in `documents/` are skipped. So a rerun neither duplicates nor loses a page.

A book processed again (a retry, or new content under the same name) is committed in a new
part; its old rows are then removed from their parts (rewritten, or deleted when empty) under a
claim on the part, pages first, so a plain reader sees each page once. A crash in between
leaves duplicates that the next run's start removes the same way.
"""
from __future__ import annotations

import io
import json
import logging
from typing import Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from folioscan.pipeline.storage import Store, StorageError, join
from folioscan.schemas import DOCUMENTS, PAGES

log = logging.getLogger(__name__)


class DatasetWriter:
    def __init__(self, store: Store, output: str, run_id: str):
        self.store, self.output, self.run_id = store, output.rstrip("/"), run_id
        self.pages_dir, self.docs_dir = join(self.output, "pages"), join(self.output, "documents")
        self._seq = 0
        self.listed_documents: Optional[list[str]] = None  # documents/ as `recover` listed it

    def recover(self, is_live=lambda run_id: False, runs: Optional[list[str]] = None) -> int:
        """Delete pages parts whose shard never committed and whose run is not live. Returns how many.
        `runs`: look only at these runs' parts (the runs that left a liveness record and are no longer
        live: only a driver killed between a shard's pages part and its documents part leaves an orphan,
        and its record outlives it), two LISTs by name prefix a run instead of two whole folders."""
        if runs is None:
            self.listed_documents = self.store.ls(self.docs_dir)  # the committed index's load reuses this listing
            committed, pages = set(self.listed_documents), self.store.ls(self.pages_dir)
        else:
            committed, pages = set(), []
            for run in runs:
                committed.update(self.store.ls(self.docs_dir, f"part-{run}-"))
                pages += self.store.ls(self.pages_dir, f"part-{run}-")
        orphans = [n for n in pages if n.endswith(".parquet") and n not in committed and not is_live(run_of_part(n))]
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

    def commit(self, page_rows, doc_rows: list[dict], before_commit=None) -> str:
        """Write the shard's pages part (`page_rows`: dicts, or the driver's PageRows read back from its spill), then `before_commit()` (the `--also` exports), then its
        documents part, the commit point. When anything before the commit point fails (an output
        that cannot be written), the pages part just written is removed again (recovery would
        remove it on the next start otherwise) and nothing of the shard counts as done."""
        if self._seq == 0:  # a run id used before (a config object reused) must not overwrite its parts
            mine = f"part-{self.run_id}-"  # listed by name prefix: not the whole folders
            taken = [n for n in self.store.ls(self.pages_dir, mine) + self.store.ls(self.docs_dir, mine) if run_of_part(n) == self.run_id]
            self._seq = 1 + max((int(n.removesuffix(".parquet").rsplit("-", 1)[1]) for n in taken), default=-1)
        name = f"part-{self.run_id}-{self._seq:05d}.parquet"
        self._seq += 1
        pages = page_rows.parquet_bytes() if hasattr(page_rows, "parquet_bytes") else PAGES.to_parquet_bytes(page_rows)
        docs = DOCUMENTS.to_parquet_bytes(doc_rows)
        self.store.write(join(self.pages_dir, name), pages)
        try:
            if before_commit is not None:
                before_commit()
            self.store.write(join(self.docs_dir, name), docs)  # the commit point
        except Exception:  # not on an interruption, which may come after the commit point: recovery decides then
            self._drop_uncommitted(name)
            raise
        return name

    def _drop_uncommitted(self, name: str) -> None:
        """Remove the pages part of a shard whose commit failed, unless its documents part made it after all
        (an S3 PUT that landed though the client saw an error)."""
        try:
            if name not in self.store.ls(self.docs_dir):
                self.store.delete(join(self.pages_dir, name))
        except StorageError as e:
            log.warning("uncommitted part %s left for the next run's recovery: %s", name, e)

    def supersede(self, stale: dict[str, set[str]], leases, left: Optional[dict] = None) -> int:
        """Remove the rows of `stale` {part: doc_ids} from their parts. Returns the books removed; the
        parts left as they were (another run rewriting them) go into `left`."""
        removed = 0
        for part, doc_ids in sorted(stale.items()):
            key = f"part-{part.removesuffix('.parquet')}"
            if not leases.claim_waiting(key, timeout_s=60):
                log.warning("part %s is being rewritten by another run; its stale rows go on the next run", part)
                if left is not None:
                    left[part] = doc_ids
                continue
            try:
                removed += self._remove_rows(part, doc_ids)
            finally:
                leases.release(key)
        return removed

    def _remove_rows(self, part: str, doc_ids: set[str]) -> int:
        tables = {}
        for folder in (self.pages_dir, self.docs_dir):
            try:
                tables[folder] = pq.read_table(io.BytesIO(self.store.read(join(folder, part))))
            except StorageError:
                tables[folder] = None  # already gone
        docs = tables[self.docs_dir]
        if docs is None:
            return 0
        drop = pa.array(sorted(doc_ids), pa.string())
        kept = {f: t.filter(pc.invert(pc.is_in(t.column("doc_id"), value_set=drop))) if t is not None else None
                for f, t in tables.items()}
        gone = docs.num_rows - kept[self.docs_dir].num_rows
        if gone == 0 and (tables[self.pages_dir] is None or kept[self.pages_dir].num_rows == tables[self.pages_dir].num_rows):
            return 0
        empty = kept[self.docs_dir].num_rows == 0
        for folder in (self.pages_dir, self.docs_dir):  # pages first: the documents part stays the commit point
            if tables[folder] is None:
                continue
            if empty:
                self.store.delete(join(folder, part))
            else:
                buf = io.BytesIO()
                pq.write_table(kept[folder], buf, compression="zstd")
                self.store.write(join(folder, part), buf.getvalue())
        log.info("removed %d superseded book(s) from part %s", gone, part)
        return gone

    def write_run_record(self, record: dict) -> None:
        self.store.write(join(self.output, "_runs", f"{self.run_id}.json"), json.dumps(record, indent=2, default=str).encode())


def run_of_part(name: str) -> str:
    """The run id in a part name `part-<run_id>-<seq>.parquet`."""
    return name.removeprefix("part-").removesuffix(".parquet").rsplit("-", 1)[0]
