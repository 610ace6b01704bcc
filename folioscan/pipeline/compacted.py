"""The committed state in compacted form: what a restart needs to know of every committed book,
in a few numpy arrays, kept beside the output in `OUTPUT/_index/` (docs/scale.md#restart).

The documents parts stay the truth; the index is a cache of them that says which parts it covers:
- `delta-<run_id>-<seq>.fsix`: written by a run every `DELTA_PARTS` commits and at its end, the rows
  of the parts it committed since its last delta.
- `base-<run_id>-<token>.fsix`: everything a driver loaded at its start (the previous base, the
  deltas, the parts no index covered), resolved (each book's newest row, as `CommittedIndex.add`
  decides) and sorted by doc id. Written by the run that finds `MERGE_DELTAS` deltas or
  `MERGE_PARTS` uncovered parts, then pointed to by `HEAD.json` (write new, then point: a reader
  holds either the old base or the new one, both whole). Objects the new base makes redundant (the old
  base, the deltas it absorbed) are listed in HEAD as retired, and deleted by a later merge only
  `GRACE_S` after their retirement, so a reader that read the previous HEAD still finds them.

A restart reads HEAD, its base, the deltas the base did not absorb, and (directly) the documents parts
covered by neither, all GETs on a thread pool. A part that no index object covers (today's layout,
a run killed before its delta, an object lost or corrupt) is read directly, so the index can be missing,
behind or damaged without a book being skipped wrongly: only the restart is slower, and the run record
says why (`summary.committed_index.problems`). Entries of parts no longer in `documents/` are dropped.

Each object is `MAGIC`, a JSON header (row count, the parts covered, the status and error-kind names,
for a base the deltas absorbed), the arrays' bytes, and the SHA-256 of all that: a truncated or
damaged object fails its check and is not used. Per book: doc id and SHA-256(source URI) as 16 bytes
each (two uint64), part number, processed_at, attempts, status and error-kind codes, duplicate_of (16
bytes): 65 bytes, so a million books take 65 MB in the driver, not dicts of strings.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Iterable, Optional

import numpy as np

from folioscan.pipeline.storage import StorageError, Store, join, parallel

log = logging.getLogger(__name__)

MAGIC = b"FOLIOSCAN-INDEX/1\n"
DELTA_PARTS = 64  # a run writes a delta every this many committed parts (and at its end)
MERGE_DELTAS = 16  # a run that finds this many deltas not in the base writes a new base
MERGE_PARTS = 64  # ... or this many documents parts no index object covers
GRACE_S = 3600.0  # a retired index object is deleted this long after its retirement, not before
READ_THREADS = 32  # concurrent GETs of index objects and uncovered parts

FIELDS = (("doc_hi", "u8"), ("doc_lo", "u8"), ("uri_hi", "u8"), ("uri_lo", "u8"), ("part", "u4"),
          ("at", "f8"), ("attempts", "u2"), ("status", "u1"), ("kind", "u1"), ("dup_hi", "u8"), ("dup_lo", "u8"))


class IndexObjectError(ValueError):
    """An index object that fails its checks (truncated, damaged, another format)."""


def doc_key(doc_id: str) -> Optional[tuple[int, int]]:
    """A doc id (32 lowercase hex digits, as sources.doc_id_for makes them) as two uint64; None for any
    other id (those are kept out of the compacted form: their parts are always read directly)."""
    if len(doc_id) != 32:
        return None
    try:
        raw = bytes.fromhex(doc_id)
    except ValueError:
        return None
    if raw.hex() != doc_id:
        return None
    return int.from_bytes(raw[:8], "big"), int.from_bytes(raw[8:], "big")


def key_hex(hi: int, lo: int) -> str:
    return (int(hi).to_bytes(8, "big") + int(lo).to_bytes(8, "big")).hex()


def uri_key(uri: str) -> tuple[int, int]:
    d = hashlib.sha256(uri.encode("utf-8")).digest()
    return int.from_bytes(d[:8], "big"), int.from_bytes(d[8:16], "big")


@dataclass
class Chunk:
    """Rows of one or more documents parts (or a resolved index) as arrays; `parts` names the part
    numbers, `statuses` and `kinds` the codes."""
    cols: dict[str, np.ndarray]
    parts: list[str]
    statuses: list[str]
    kinds: list[Optional[str]]
    absorbed: list[str] = field(default_factory=list)  # a base: the deltas it holds

    def __len__(self) -> int:
        return len(self.cols["doc_hi"])


def empty_chunk() -> Chunk:
    return Chunk({name: np.zeros(0, dtype) for name, dtype in FIELDS}, [], [], [])


def chunk_from_rows(part_rows: Iterable[tuple[str, list[dict]]]) -> Optional[Chunk]:
    """Documents rows of some parts as a Chunk; None when a doc id (or duplicate_of) is not in the
    canonical form (doc_key)."""
    parts, statuses, kinds = [], {}, {}
    cols: dict[str, list] = {name: [] for name, _ in FIELDS}
    for part, rows in part_rows:
        p = len(parts)
        parts.append(part)
        for row in rows:
            key = doc_key(row["doc_id"])
            dup = row.get("duplicate_of")
            dkey = doc_key(dup) if dup else (0, 0)
            if key is None or dkey is None:
                return None
            at = row.get("processed_at")
            at = at if isinstance(at, (int, float)) else (at.timestamp() if at is not None else 0.0)
            ukey = uri_key(row["source_uri"])
            for name, value in zip(("doc_hi", "doc_lo", "uri_hi", "uri_lo", "part", "at", "attempts", "dup_hi", "dup_lo"),
                                   (*key, *ukey, p, at, row.get("attempts_made") or 1, *dkey)):
                cols[name].append(value)
            cols["status"].append(statuses.setdefault(row["status"], len(statuses)))
            cols["kind"].append(kinds.setdefault(row.get("error_kind"), len(kinds)))
    return Chunk({name: np.array(cols[name], dtype) for name, dtype in FIELDS}, parts, list(statuses), list(kinds))


def concat(chunks: list[Chunk]) -> Chunk:
    """One chunk of all rows, in order; codes and part numbers renumbered into shared tables."""
    if not chunks:
        return empty_chunk()
    parts: dict[str, int] = {}
    statuses: dict[str, int] = {}
    kinds: dict[Optional[str], int] = {}
    out: dict[str, list[np.ndarray]] = {name: [] for name, _ in FIELDS}
    for c in chunks:
        remap = {"part": np.array([parts.setdefault(p, len(parts)) for p in c.parts] or [0], "u4"),
                 "status": np.array([statuses.setdefault(s, len(statuses)) for s in c.statuses] or [0], "u1"),
                 "kind": np.array([kinds.setdefault(k, len(kinds)) for k in c.kinds] or [0], "u1")}
        for name, _ in FIELDS:
            col = c.cols[name]
            out[name].append(remap[name][col] if name in remap else col)
    return Chunk({name: np.concatenate(out[name]).astype(dtype, copy=False) for name, dtype in FIELDS},
                 list(parts), list(statuses), list(kinds))


def resolve(chunk: Chunk) -> tuple[Chunk, dict[str, set[str]]]:
    """Each book's newest row (by processed_at; on a tie the later row, in `chunk`'s order, wins),
    then each source URI's newest book, as CommittedIndex.add decides row by row. Returns the winners
    sorted by doc id, and the losers as {part: doc_ids} (stale rows, for DatasetWriter.supersede)."""
    c = chunk.cols
    n = len(chunk)
    stale: dict[str, set[str]] = {}
    if n == 0:
        return chunk, stale
    seq = np.arange(n)
    order = np.lexsort((seq, c["at"], c["doc_lo"], c["doc_hi"]))
    hi, lo = c["doc_hi"][order], c["doc_lo"][order]
    last = np.ones(n, bool)
    last[:-1] = (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])
    group = np.cumsum(np.r_[True, last[:-1]]) - 1  # group number of each sorted row
    winner_of = order[np.flatnonzero(last)][group]  # the winning row of each sorted row's group
    losers = order[~last]
    lose_part = c["part"][losers] != c["part"][winner_of[~last]]
    _add_stale(stale, chunk, losers[lose_part])
    winners = order[last]  # sorted by doc id
    uorder = np.lexsort((winners, c["at"][winners], c["uri_lo"][winners], c["uri_hi"][winners]))
    w = winners[uorder]
    ulast = np.ones(len(w), bool)
    ulast[:-1] = (c["uri_hi"][w][1:] != c["uri_hi"][w][:-1]) | (c["uri_lo"][w][1:] != c["uri_lo"][w][:-1])
    _add_stale(stale, chunk, w[~ulast])
    keep = np.zeros(len(winners), bool)
    keep[uorder[ulast]] = True
    final = winners[keep]
    return Chunk({name: c[name][final] for name, _ in FIELDS}, chunk.parts, chunk.statuses, chunk.kinds), stale


def _add_stale(stale: dict[str, set[str]], chunk: Chunk, rows: np.ndarray) -> None:
    c = chunk.cols
    for r in rows.tolist():
        stale.setdefault(chunk.parts[int(c["part"][r])], set()).add(key_hex(c["doc_hi"][r], c["doc_lo"][r]))


def only_parts(chunk: Chunk, present: set[str]) -> Chunk:
    """The rows of the parts still in `documents/` (a part removed since is no longer committed)."""
    keep_part = np.array([p in present for p in chunk.parts] or [False], bool)
    if len(chunk) == 0 or keep_part[chunk.cols["part"]].all():
        return chunk
    mask = keep_part[chunk.cols["part"]]
    return Chunk({name: col[mask] for name, col in chunk.cols.items()}, chunk.parts, chunk.statuses, chunk.kinds,
                 chunk.absorbed)


# -- objects -----------------------------------------------------------------------------------
def encode(chunk: Chunk) -> bytearray:
    """One buffer, filled in place (a million books: 65 MB, not three copies of it)."""
    header = json.dumps({"rows": len(chunk), "fields": FIELDS, "parts": chunk.parts, "statuses": chunk.statuses,
                         "kinds": chunk.kinds, "absorbed": chunk.absorbed}).encode()
    blob = bytearray(MAGIC + len(header).to_bytes(8, "big") + header)
    for name, dtype in FIELDS:
        blob += memoryview(np.ascontiguousarray(chunk.cols[name], dtype)).cast("B")
    blob += hashlib.sha256(blob).digest()
    return blob


def decode(data: bytes) -> Chunk:
    if len(data) < len(MAGIC) + 40 or not data.startswith(MAGIC):
        raise IndexObjectError("not a folioscan index object (or cut short)")
    blob, digest = memoryview(data)[:-32], data[-32:]  # a view: no copy of the object's bytes
    if hashlib.sha256(blob).digest() != digest:
        raise IndexObjectError("checksum mismatch: truncated or damaged")
    at = len(MAGIC)
    size = int.from_bytes(bytes(blob[at:at + 8]), "big")
    header = json.loads(bytes(blob[at + 8:at + 8 + size]))
    if [tuple(f) for f in header["fields"]] != list(FIELDS):
        raise IndexObjectError("another layout of the index")
    n, offset, cols = header["rows"], at + 8 + size, {}
    for name, dtype in FIELDS:
        cols[name] = np.frombuffer(blob, dtype, n, offset)
        offset += cols[name].nbytes
    if offset != len(blob):
        raise IndexObjectError("size does not match its header")
    return Chunk(cols, header["parts"], header["statuses"], header["kinds"], header.get("absorbed", []))


# -- reading and writing OUTPUT/_index/ ------------------------------------------------------------
@dataclass
class Loaded:
    chunks: list[Chunk]  # the base first, then the deltas (oldest first)
    covered: set[str]  # documents parts the chunks hold
    head: dict  # HEAD.json as read ({} when none)
    names: list[str]  # the objects in _index/
    deltas: list[str]  # the deltas read (not absorbed by the base)
    problems: list[str]


def load(store: Store, index_dir: str, present: set[str]) -> Loaded:
    """HEAD, its base and the deltas the base has not absorbed; an object that is missing or fails its
    checks is left out, and said in `problems` (its parts are then read directly)."""
    problems: list[str] = []
    names = store.ls(index_dir)
    head: dict = {}
    base: Optional[Chunk] = None
    if "HEAD.json" in names:
        try:
            head = json.loads(store.read(join(index_dir, "HEAD.json")))
            base = decode(store.read(join(index_dir, head["base"])))
        except (StorageError, IndexObjectError, ValueError, KeyError, TypeError) as e:
            problems.append(f"base {head.get('base', 'HEAD.json') if isinstance(head, dict) else 'HEAD.json'}: {e}")
            base = None
    absorbed = set(base.absorbed) if base is not None else set()
    deltas = [n for n in names if n.startswith("delta-") and n.endswith(".fsix") and n not in absorbed]

    def read_delta(name: str):
        try:
            return decode(store.read(join(index_dir, name)))
        except (StorageError, IndexObjectError, ValueError, KeyError) as e:
            return f"delta {name}: {e}"

    chunks, read = ([base] if base is not None else []), []
    for name, got in zip(deltas, parallel(read_delta, deltas, READ_THREADS)):
        if isinstance(got, str):
            problems.append(got)
        else:
            chunks.append(got)
            read.append(name)
    covered = {p for c in chunks for p in c.parts} & present
    return Loaded(chunks, covered, head if isinstance(head, dict) else {}, names, read, problems)


def write_delta(store: Store, index_dir: str, run_id: str, seq: int, chunk: Chunk) -> str:
    name = f"delta-{run_id}-{seq:05d}.fsix"
    store.write(join(index_dir, name), encode(chunk))
    return name


def write_base(store: Store, index_dir: str, run_id: str, resolved: Chunk, loaded: Loaded) -> str:
    """Write the merged base, then point HEAD.json at it; retire what it makes redundant and delete
    what was retired more than GRACE_S ago."""
    name = f"base-{run_id}-{uuid.uuid4().hex[:8]}.fsix"
    resolved.absorbed = list(loaded.deltas)
    data = encode(resolved)
    store.write(join(index_dir, name), data)  # a bytearray: botocore and files take it as it is
    now = time.time()
    retired = {r["name"]: r["at"] for r in loaded.head.get("retired", []) if isinstance(r, dict) and "name" in r}
    for old in loaded.names:  # older bases (ours and concurrent drivers') and the deltas now absorbed
        if old != name and (old.startswith("base-") or old in loaded.deltas):
            retired.setdefault(old, now)
    due = sorted(n for n, at in retired.items() if now - at >= GRACE_S)
    head = {"base": name, "sha256": hashlib.sha256(data).hexdigest(), "rows": len(resolved), "parts": len(resolved.parts),
            "written_at": now, "by": run_id,
            "retired": [{"name": n, "at": at} for n, at in sorted(retired.items()) if n not in due]}
    store.write(join(index_dir, "HEAD.json"), json.dumps(head, indent=1).encode())
    if due:
        store.delete_many([join(index_dir, n) for n in due])
    return name
