"""What the output already holds, and what a run does with each listed book.

The index is read from the `documents` parts (a few small columns) and refreshed incrementally:
parts already read are not read again. Each book's newest row wins. Older rows of the same book
(a retry) or of the same source URI under another doc_id (a replaced input) are *stale*: the
writer removes them from their parts, so a plain `read_parquet('pages/*.parquet')` sees each
page once.
"""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import NamedTuple, Optional

import pyarrow.parquet as pq

from folioscan.failures import TRANSIENT
from folioscan.pipeline.storage import Store, join
from folioscan.records import SourceDocument

log = logging.getLogger(__name__)

_COLUMNS = ("doc_id", "source_uri", "status", "error_kind", "processed_at", "attempts_made", "duplicate_of")


class Entry(NamedTuple):
    part: str
    source_uri: str
    status: str
    error_kind: Optional[str]
    processed_at: float  # epoch seconds
    attempts_made: int
    duplicate_of: Optional[str] = None  # status duplicate: the first copy's doc_id


class CommittedIndex:
    def __init__(self, store: Store, docs_dir: str):
        self.store, self.docs_dir = store, docs_dir
        self.by_id: dict[str, Entry] = {}
        self.by_uri: dict[str, str] = {}  # source URI -> doc_id of its newest row
        self.stale: dict[str, set[str]] = {}  # part -> doc_ids whose rows there are superseded
        self._parts: set[str] = set()

    def refresh(self) -> set[str]:
        """Read parts committed since the last refresh; returns the doc_ids found in them."""
        new_ids: set[str] = set()
        for name in self.store.ls(self.docs_dir):
            if not name.endswith(".parquet") or name in self._parts:
                continue
            self._parts.add(name)
            try:
                rows = self._read(name)
            except Exception as e:  # rewritten or removed under us by another driver's tidy-up
                log.info("documents part %s unreadable now (%s); skipped", name, e)
                continue
            for row in rows:
                self.add(name, row)
                new_ids.add(row["doc_id"])
        return new_ids

    def _read(self, name: str) -> list[dict]:
        f = pq.ParquetFile(io.BytesIO(self.store.read(join(self.docs_dir, name))))
        columns = [c for c in _COLUMNS if c in f.schema_arrow.names]  # parts of older schema versions lack some
        return f.read(columns=columns).to_pylist()

    def add(self, part: str, row: dict) -> None:
        at = row.get("processed_at")
        entry = Entry(part, row["source_uri"], row["status"], row.get("error_kind"),
                      at.timestamp() if at is not None else 0.0, row.get("attempts_made") or 1, row.get("duplicate_of"))
        doc_id = row["doc_id"]
        old = self.by_id.get(doc_id)
        if old is not None and old.part != part:
            newer, older = (entry, old) if entry.processed_at >= old.processed_at else (old, entry)
            self.stale.setdefault(older.part, set()).add(doc_id)
            entry = newer
        self.by_id[doc_id] = entry
        other = self.by_uri.get(entry.source_uri)
        if other is not None and other != doc_id and other in self.by_id:
            previous = self.by_id[other]
            if previous.processed_at <= entry.processed_at:  # the old content of a replaced input
                self.stale.setdefault(previous.part, set()).add(other)
                del self.by_id[other]
            else:
                self.stale.setdefault(part, set()).add(doc_id)
                del self.by_id[doc_id]
                return
        self.by_uri[entry.source_uri] = doc_id

    def record(self, part: str, rows: list[dict]) -> None:
        """A part this run just committed: known without reading it back."""
        self._parts.add(part)
        for row in rows:
            self.add(part, row)

    def take_stale(self) -> dict[str, set[str]]:
        stale, self.stale = self.stale, {}
        return stale

    def ids(self) -> set[str]:
        return set(self.by_id)


@dataclass(frozen=True)
class Decision:
    process: bool
    reason: str
    carried_failure: bool = False  # skipped, and still in error from an earlier run


def decide(index: CommittedIndex, doc: SourceDocument, retry_failed: bool) -> Decision:
    entry = index.by_id.get(doc.doc_id)
    if entry is not None:
        if entry.status == "ok":
            return Decision(False, "committed ok")
        if entry.status == "duplicate":
            if entry.duplicate_of in index.by_id:
                return Decision(False, f"committed as a duplicate of {entry.duplicate_of}")
            return Decision(True, f"first copy gone: committed as a duplicate of {entry.duplicate_of}, no longer in the output")
        if entry.error_kind == TRANSIENT:
            return Decision(True, f"retry: committed {entry.status} with a transient error")
        if retry_failed:
            return Decision(True, f"retry: committed {entry.status}, --retry-failed")
        return Decision(False, f"committed {entry.status} with a permanent error (--retry-failed retries it)",
                        carried_failure=True)
    if index.by_uri.get(doc.uri) not in (None, doc.doc_id):
        return Decision(True, "replaced input: new content under a committed name")
    return Decision(True, "new")
