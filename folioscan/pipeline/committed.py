"""What the output already holds, and what a run does with each listed book.

The index is loaded once at the run's start in compacted form (compacted.py: `OUTPUT/_index/`, a
merged base, the deltas of later runs, and the documents parts none of them covers, all read in
parallel), held as sorted numpy arrays, and refreshed incrementally during the run: parts committed
since are read directly, and this run's own commits are recorded without reading them back (a small
overlay of dicts over the arrays). Each book's newest row wins. Older rows of the same book (a retry)
or of the same source URI under another doc_id (a replaced input) are *stale*: the writer removes
them from their parts, so a plain `read_parquet('pages/*.parquet')` sees each page once.
"""
from __future__ import annotations

import io
import logging
import time
import uuid
from dataclasses import dataclass
from typing import NamedTuple, Optional

import numpy as np
import pyarrow.parquet as pq

from folioscan.failures import TRANSIENT
from folioscan.pipeline import compacted
from folioscan.pipeline.compacted import Chunk, doc_key, key_hex, uri_key
from folioscan.pipeline.storage import Store, join, parallel
from folioscan.records import SourceDocument

log = logging.getLogger(__name__)

_COLUMNS = ("doc_id", "source_uri", "status", "error_kind", "processed_at", "attempts_made", "duplicate_of")


class Entry(NamedTuple):
    part: str
    source_uri: str  # "" for a book known from the compacted index (which keeps the URI's hash only)
    status: str
    error_kind: Optional[str]
    processed_at: float  # epoch seconds
    attempts_made: int
    duplicate_of: Optional[str] = None  # status duplicate: the first copy's doc_id


class _ById:
    """`index.by_id`: doc_id -> Entry, over the arrays and the overlay (read-only)."""

    def __init__(self, index: "CommittedIndex"):
        self.index = index

    def get(self, doc_id: str, default=None):
        entry = self.index.get(doc_id)
        return default if entry is None else entry

    def __contains__(self, doc_id) -> bool:
        return self.index.get(doc_id) is not None

    def __getitem__(self, doc_id: str) -> Entry:
        entry = self.index.get(doc_id)
        if entry is None:
            raise KeyError(doc_id)
        return entry


class _ByUri:
    """`index.by_uri`: source URI -> doc_id of its newest row (read-only)."""

    def __init__(self, index: "CommittedIndex"):
        self.index = index

    def get(self, uri: str, default=None):
        doc_id = self.index.uri_doc(uri)
        return default if doc_id is None else doc_id


class _Known:
    """What the first refresh returns: every committed doc_id (a membership test, not a set of strings)."""

    def __init__(self, index: "CommittedIndex"):
        self.index = index

    def __contains__(self, doc_id) -> bool:
        return self.index.get(doc_id) is not None


class CommittedIndex:
    """`run_id`: the run whose commits this index records; with it, the run writes its deltas and may
    merge the base (`compact`). Without it (a dry run, the progress count's snapshot) nothing is written."""

    def __init__(self, store: Store, docs_dir: str, run_id: Optional[str] = None):
        self.store, self.docs_dir, self.run_id = store, docs_dir, run_id
        self.index_dir = join(docs_dir.rstrip("/").rsplit("/", 1)[0], "_index")
        self.stale: dict[str, set[str]] = {}  # part -> doc_ids whose rows there are superseded
        self._parts: set[str] = set()
        self._loaded: Optional[compacted.Loaded] = None
        self._set_frozen(compacted.empty_chunk())
        self._over: dict[str, Entry] = {}  # books read or recorded since the load
        self._over_uri: dict[tuple[int, int], str] = {}  # URI hash -> doc_id, for those
        self._gone: set[str] = set()  # books of the arrays removed since (superseded)
        self._pending: list[tuple[str, list[dict]]] = []  # this run's parts not in a delta yet
        self._token = uuid.uuid4().hex[:8]
        self._deltas = 0
        self._direct_canonical = 0
        self._present: set[str] = set()
        self._runs_seen: set[str] = set()  # runs with a liveness record at the last refresh
        self._runs_ended: Optional[set[str]] = None  # runs with a run record whose parts this index has listed
        self.report: dict = {}  # how the index was loaded and written: the run record's `committed_index`
        self.by_id, self.by_uri = _ById(self), _ByUri(self)

    # -- lookups -------------------------------------------------------------------------------------
    def _set_frozen(self, chunk: Chunk) -> None:
        self._frozen = chunk
        c = chunk.cols
        self._hi, self._lo = c["doc_hi"], c["doc_lo"]
        self._uorder = np.lexsort((c["uri_lo"], c["uri_hi"])) if len(chunk) else np.zeros(0, np.int64)
        self._uhi = c["uri_hi"][self._uorder]

    def _row(self, key: tuple[int, int]) -> int:
        hi, lo, n = self._hi, self._lo, len(self._hi)
        i = int(np.searchsorted(hi, np.uint64(key[0])))
        while i < n and hi[i] == key[0]:
            if lo[i] == key[1]:
                return i
            i += 1
        return -1

    def get(self, doc_id: str) -> Optional[Entry]:
        entry = self._over.get(doc_id)
        if entry is not None or doc_id in self._gone:
            return entry
        key = doc_key(doc_id) if isinstance(doc_id, str) else None
        i = self._row(key) if key is not None and len(self._hi) else -1
        if i < 0:
            return None
        f, c = self._frozen, self._frozen.cols
        dup = key_hex(c["dup_hi"][i], c["dup_lo"][i]) if c["dup_hi"][i] or c["dup_lo"][i] else None
        return Entry(f.parts[int(c["part"][i])], "", f.statuses[int(c["status"][i])], f.kinds[int(c["kind"][i])],
                     float(c["at"][i]), int(c["attempts"][i]), dup)

    def uri_doc(self, uri: str) -> Optional[str]:
        """doc_id of the newest committed row of this source URI."""
        key = uri_key(uri)
        doc_id = self._over_uri.get(key)
        if doc_id is not None or not len(self._uhi):
            return doc_id
        c = self._frozen.cols
        j = int(np.searchsorted(self._uhi, np.uint64(key[0])))
        while j < len(self._uhi) and self._uhi[j] == key[0]:
            i = self._uorder[j]
            if c["uri_lo"][i] == key[1]:
                return key_hex(c["doc_hi"][i], c["doc_lo"][i])
            j += 1
        return None

    # -- loading -------------------------------------------------------------------------------------
    def _read(self, name: str) -> list[dict]:
        f = pq.ParquetFile(io.BytesIO(self.store.read(join(self.docs_dir, name))))
        columns = [c for c in _COLUMNS if c in f.schema_arrow.names]  # parts of older schema versions lack some
        return f.read(columns=columns).to_pylist()

    def _read_many(self, names: list[str]) -> list[tuple[str, Optional[list[dict]]]]:
        def one(name: str):
            try:
                return name, self._read(name)
            except Exception as e:  # rewritten or removed under us by another driver's tidy-up
                log.info("documents part %s unreadable now (%s); skipped", name, e)
                return name, None
        return parallel(one, names, compacted.READ_THREADS)

    def refresh(self, listed: Optional[list[str]] = None):
        """Read parts committed since the last refresh; returns the doc_ids found in them (the first
        refresh, the load: a membership test over everything committed). `listed`: documents/ as just
        listed (by DatasetWriter.recover), not listed again."""
        if self._loaded is None:
            self._load([n for n in (self.store.ls(self.docs_dir) if listed is None else listed) if n.endswith(".parquet")])
            return _Known(self)
        names = [n for n in self._listing_since_load() if n.endswith(".parquet")]
        new_ids: set[str] = set()
        fresh = [n for n in names if n not in self._parts]
        self._parts.update(fresh)
        for name, rows in self._read_many(fresh):
            for row in rows or ():
                self.add(name, row)
                new_ids.add(row["doc_id"])
        return new_ids

    def _listing_since_load(self) -> list[str]:
        """The documents parts that can have been committed since the load: those of the runs with a
        liveness record now or at the previous refresh (a part is written by a live run), and of the
        runs that ended since the load (a run record in `_runs/` this index has not seen: a run can
        start, commit and end between two refreshes, or between the load's listing and its look at
        `_live/`, and be seen live by neither; a run keeps its liveness record until its run record is
        written, job.py). One LIST by name prefix each, not the whole folder (at a million books, 63
        LISTs a refresh, and a run refreshes every claim batch); an ended run's parts once."""
        now = self._live_runs()
        ended = self._ended_runs() - self._runs_ended
        runs, self._runs_seen = (now | self._runs_seen | ended) - {self.run_id}, now
        names = [n for run in sorted(runs) for n in self.store.ls(self.docs_dir, f"part-{run}-")]
        self._runs_ended |= ended  # listed after their end: no more parts to come
        return names

    def note_ended_runs(self) -> None:
        """The runs ended so far (`_runs/`): call before the documents folder is listed for the load;
        their parts are all in that listing, and later refreshes look only at runs that end after."""
        self._runs_ended = self._ended_runs()

    def _live_runs(self) -> set[str]:
        return {n.removesuffix(".json") for n in self.store.ls(self._live_dir()) if n.endswith(".json")}

    def _ended_runs(self) -> set[str]:
        return {n.removesuffix(".json") for n in self.store.ls(join(self._out_dir(), "_runs")) if n.endswith(".json")}

    def _out_dir(self) -> str:
        return self.docs_dir.rstrip("/").rsplit("/", 1)[0]

    def _live_dir(self) -> str:
        return join(self._out_dir(), "_live")

    def _load(self, names: list[str]) -> None:
        t0 = time.perf_counter()
        present = set(names)
        loaded = self._loaded = compacted.load(self.store, self.index_dir, present)
        t_index = time.perf_counter()
        for problem in loaded.problems:
            log.warning("committed index: %s; the parts it covered are read directly", problem)
        uncovered = [n for n in names if n not in loaded.covered]
        chunks = [compacted.only_parts(c, present) for c in loaded.chunks]
        odd: list[tuple[str, list[dict]]] = []  # parts with doc ids of another form: kept out of the arrays
        for name, rows in self._read_many(uncovered):
            if rows is None:
                continue
            chunk = compacted.chunk_from_rows([(name, rows)])
            if chunk is None:
                odd.append((name, rows))
            else:
                chunks.append(chunk)
                self._direct_canonical += 1
        t_parts = time.perf_counter()
        merged = compacted.concat(chunks)
        del chunks  # the objects' bytes go as soon as their rows are copied: one copy of the index at a time
        loaded.chunks = []
        resolved, stale = compacted.resolve(merged)
        del merged
        self._set_frozen(resolved)
        for part, ids in stale.items():
            self.stale.setdefault(part, set()).update(ids)
        self._parts, self._present = set(names), present
        self._runs_seen = self._live_runs()
        if self._runs_ended is None:  # not noted before the listing: what ended before the load is in it but for a race
            self._runs_ended = set()
        for name, rows in odd:
            for row in rows:
                self.add(name, row)
        self.report = {"base": loaded.head.get("base") if not any(p.startswith("base") for p in loaded.problems) else None,
                       "books": len(resolved) + len(self._over), "parts": len(names), "parts_covered": len(loaded.covered),
                       "deltas_read": len(loaded.deltas), "parts_read_directly": len(uncovered),
                       "load_seconds": round(time.perf_counter() - t0, 3), "index_objects_seconds": round(t_index - t0, 3),
                       "parts_seconds": round(t_parts - t_index, 3), "problems": list(loaded.problems),
                       "deltas_written": 0, "base_written": None}
        log.debug("committed index: %d books from %s, %d delta(s), %d part(s) read directly, in %.1f s",
                 self.report["books"], self.report["base"] or "no base", len(loaded.deltas), len(uncovered),
                 self.report["load_seconds"])

    def compact(self) -> Optional[str]:
        """Merge what the load found into a new base, when there is enough to merge (MERGE_DELTAS deltas,
        MERGE_PARTS uncovered parts, or a damaged base). Call after the stale rows the load found are
        removed (DatasetWriter.supersede), so the base, which keeps only each book's newest row, does not
        hide stale rows still in the parts. Returns the new base's name, or None."""
        loaded = self._loaded
        if self.run_id is None or loaded is None:
            return None
        damaged = any(p.startswith("base") for p in loaded.problems)
        if not (len(loaded.deltas) >= compacted.MERGE_DELTAS or self._direct_canonical >= compacted.MERGE_PARTS
                or (damaged and len(self._frozen))):
            return None
        t0 = time.perf_counter()
        base = _prune_parts(self._frozen, self._present)  # the parts read, or covered, at the load
        name = compacted.write_base(self.store, self.index_dir, self.run_id, base, loaded)
        self.report["base_written"], self.report["base_write_seconds"] = name, round(time.perf_counter() - t0, 3)
        log.debug("committed index: merged %d books of %d parts into %s", len(base), len(base.parts), name)
        return name

    # -- changes -------------------------------------------------------------------------------------
    def _put(self, doc_id: str, entry: Entry) -> None:
        self._over[doc_id] = entry
        self._gone.discard(doc_id)

    def _remove(self, doc_id: str) -> None:
        self._over.pop(doc_id, None)
        self._gone.add(doc_id)

    def add(self, part: str, row: dict) -> None:
        at = row.get("processed_at")
        at = at if isinstance(at, (int, float)) else (at.timestamp() if at is not None else 0.0)
        entry = Entry(part, row["source_uri"], row["status"], row.get("error_kind"),
                      at, row.get("attempts_made") or 1, row.get("duplicate_of"))
        doc_id = row["doc_id"]
        old = self.get(doc_id)
        if old is not None and old.part != part:
            newer, older = (entry, old) if entry.processed_at >= old.processed_at else (old, entry)
            self.stale.setdefault(older.part, set()).add(doc_id)
            entry = newer._replace(source_uri=entry.source_uri)
        self._put(doc_id, entry)
        other = self.uri_doc(entry.source_uri)
        previous = self.get(other) if other is not None and other != doc_id else None
        if previous is not None:
            if previous.processed_at <= entry.processed_at:  # the old content of a replaced input
                self.stale.setdefault(previous.part, set()).add(other)
                self._remove(other)
            else:
                self.stale.setdefault(part, set()).add(doc_id)
                self._remove(doc_id)
                return
        self._over_uri[uri_key(entry.source_uri)] = doc_id

    def record(self, part: str, rows: list[dict]) -> None:
        """A part this run just committed: known without reading it back, and kept for the run's next delta."""
        self._parts.add(part)
        for row in rows:
            self.add(part, row)
        if self.run_id is not None:
            self._pending.append((part, [{c: row.get(c) for c in _COLUMNS} for row in rows]))
            if len(self._pending) >= compacted.DELTA_PARTS:
                self.flush()

    def flush(self) -> Optional[str]:
        """Write this run's parts not in a delta yet as one delta object (compacted.py). Parts whose doc
        ids are not in the canonical form get none: later runs read them directly."""
        pending, self._pending = self._pending, []
        if not pending or self.run_id is None:
            return None
        chunk = compacted.chunk_from_rows(pending)
        if chunk is None:
            return None
        name = compacted.write_delta(self.store, self.index_dir, f"{self.run_id}-{self._token}", self._deltas, chunk)
        self._deltas += 1
        if self.report:
            self.report["deltas_written"] = self._deltas
        return name

    def take_stale(self) -> dict[str, set[str]]:
        stale, self.stale = self.stale, {}
        return stale

    def snapshot(self) -> "CommittedIndex":
        """A copy as the output stands now (the arrays shared, the overlay copied), that writes nothing."""
        copy = CommittedIndex(self.store, self.docs_dir)
        copy._set_frozen(self._frozen)
        copy._loaded, copy._parts = self._loaded, set(self._parts)
        copy._over, copy._over_uri, copy._gone = dict(self._over), dict(self._over_uri), set(self._gone)
        return copy


def runs_to_recover(store: Store, output: str, is_live) -> Optional[list[str]]:
    """The runs whose orphan pages parts DatasetWriter.recover looks for: those with a liveness record that
    are not live (a killed driver's record outlives it). None (look at every part) on an output with no
    committed index yet, which older versions may have left orphans in."""
    if "HEAD.json" not in store.ls(join(output, "_index")):
        return None
    return sorted(run for run in (n.removesuffix(".json") for n in store.ls(join(output, "_live")) if n.endswith(".json"))
                  if not is_live(run))


def _prune_parts(chunk: Chunk, present: set[str]) -> Chunk:
    """`chunk` with its parts table cut to the parts still in documents/ (renumbered)."""
    keep = [p for p in chunk.parts if p in present]
    new = {p: i for i, p in enumerate(keep)}
    remap = np.array([new.get(p, 0) for p in chunk.parts] or [0], "u4")
    cols = dict(chunk.cols)
    cols["part"] = remap[cols["part"]] if len(chunk) else cols["part"]
    return Chunk(cols, keep, chunk.statuses, chunk.kinds)


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
