"""Identical source bytes under another name: read once, every copy listed (docs/duplicates.md).

The loader hashes a book's bytes as it reads them (`content_sha256`: SHA-256 of the PDF's bytes, the
very buffer PyMuPDF opens, so no second read; for a folder of page images, SHA-256 over its files'
SHA-256 digests in page order). Which book is the *first copy* of some bytes is kept in the output
store, beside the claims on books, so that every driver and every run agree:

- `OUTPUT/_content/<sha256>.json` ({doc_id, source_uri, run_id}): the committed first copy. Written
  by the driver right after the first copy's documents part (the commit point), so a record always
  names a committed book (a crash in between leaves no record: see the claim below).
- `OUTPUT/_leases/content-<sha256>/<generation>` ({run_id, doc_id}): the first copy in flight, made
  by exclusive create like a claim on a book (`leases.py`) and held while its run is live. Of two
  loaders that read the same bytes at once, one wins; the other book is a duplicate of the winner.

A book whose bytes have a first copy (committed, or in flight in a live run) is not cleaned or OCR'd:
its documents row says `status` duplicate and `duplicate_of` the first copy's doc_id, and it has no
pages rows. At commit the driver checks each book once more (`settle`): a duplicate whose first copy
is neither committed nor in flight any more (its run died before committing it, or its source was
replaced since) becomes a transient error, read again by the next run; a book that was read in full
but whose bytes got a first copy meanwhile (a folder of page images, whose hash is known only after
its last page; a claim taken over from a stalled run) becomes a duplicate, its pages dropped. So
each content is OCR'd and committed with pages once, whichever driver or run reads it first.

The claim's generation travels with the book's pages (`PageWork.content_claim`), so a first copy whose
loader took the claim costs no second look at commit while the run has been live without a lapse since
it claimed the book (`Leases.unbroken`: nobody takes over a live run's claims), and its claim is
released by deleting that generation, a shard's claims in one request (S3's DeleteObjects). A first
copy then costs 5 requests: the loader's look-up, the claim's listing and exclusive create, the look-up
again (a first copy committed and released between the two looks), and the record; plus its share of
the shard's DeleteObjects. A run whose heartbeat was late looks again, as before.

Lookups go through `first_copy(sha)`: one object read per book, no memory per committed book in the
driver (a million-book restart holds nothing more than before).
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Iterable, NamedTuple, Optional

from folioscan.pipeline.leases import Leases
from folioscan.pipeline.storage import LocalStore, NotFound, StorageError, Store, join

log = logging.getLogger(__name__)


class RecordUnreadable(StorageError):
    """A first copy's record exists and cannot be read: the book's error is transient (failures.py), not its own."""


class Claim(NamedTuple):
    first: Optional[str]  # doc_id of the first copy of the bytes; None when the book asking is it
    generation: Optional[str] = None  # of this run's claim on the bytes for that book, when it holds one


class ContentClaims:
    """First copies of source bytes, by content hash, in the output store. Picklable: loaders on
    Ray workers use it to decide before they clean and OCR a book."""

    def __init__(self, store: Store, output: str, run_id: str, ttl_s: float):
        self.store, self.output, self.run_id, self.ttl_s = store, output.rstrip("/"), run_id, ttl_s
        self.dir = join(self.output, "_content")
        self._leases: Optional[Leases] = None

    def __getstate__(self):
        return {"store": self.store, "output": self.output, "run_id": self.run_id, "ttl_s": self.ttl_s}

    def __setstate__(self, state):
        self.__init__(**state)

    @property
    def leases(self) -> Leases:
        """For the claims' generations and the liveness of runs; no heartbeat here (the driver's keeps the run live)."""
        if self._leases is None:
            self._leases = Leases(self.store, self.output, self.run_id, self.ttl_s)
        return self._leases

    # -- committed first copies ------------------------------------------------------------
    def first_copy(self, sha: str) -> Optional[dict]:
        """{doc_id, source_uri, run_id} of the committed first copy of these bytes, or None when there is
        none. A record that exists and cannot be read (access denied, the store failing after its
        retries) raises StorageError: taken for none, the book would be read and committed again beside
        its first copy (a loader's error becomes the book's transient error row)."""
        uri = join(self.dir, f"{sha}.json")
        try:
            raw = self.store.read(uri)
        except NotFound:
            return None
        except StorageError as e:
            raise RecordUnreadable(f"{e} (the record of a first copy of the book's bytes)") from e
        try:
            record = json.loads(raw)
        except ValueError:
            record = None
        if isinstance(record, dict) and record.get("doc_id"):
            return record
        log.warning("%s: not a first copy's record; taken for none", uri)
        return None

    def register(self, sha: str, doc_id: str, source_uri: str) -> None:
        """After the commit point of the first copy: every later copy is its duplicate."""
        record = {"doc_id": doc_id, "source_uri": source_uri, "run_id": self.run_id}
        self.store.write(join(self.dir, f"{sha}.json"), json.dumps(record).encode())

    def forget(self, sha: str, doc_id: str) -> None:
        """Drop the record when it still names `doc_id` (a first copy no longer in the output)."""
        record = self.first_copy(sha)
        if record is not None and record["doc_id"] == doc_id:
            self.store.delete(join(self.dir, f"{sha}.json"))

    # -- first copies in flight ------------------------------------------------------------
    def _key(self, sha: str) -> str:
        return f"content-{sha}"

    def _record(self, sha: str, generation: str) -> Optional[dict]:
        try:
            raw = self.store.read(join(self.leases.lease_dir, self._key(sha), generation))
        except StorageError:
            return None  # released or taken over while we looked
        try:
            record = json.loads(raw.split(b"\n", 1)[0])
            return record if isinstance(record, dict) else {}
        except ValueError:
            return {}

    def holder(self, sha: str) -> Optional[str]:
        """doc_id of the book whose live run holds the claim on these bytes, or None."""
        gens = self.leases._generations(self._key(sha))
        record = self._record(sha, gens[-1]) if gens else None
        if record and record.get("run_id") and self.leases.is_live(str(record["run_id"])):
            return record.get("doc_id")
        return None

    def claim(self, sha: str, doc_id: str) -> Optional[str]:
        """None when book `doc_id` is the first copy of these bytes (named by the committed record,
        or now holding the claim on them); else the first copy's doc_id, committed or in flight."""
        return self.take(sha, doc_id).first

    def take(self, sha: str, doc_id: str) -> Claim:
        """As `claim`, with the generation of the claim this run now holds for book `doc_id` (None when
        the committed record names the book itself, or the bytes have another first copy)."""
        first = self.first_copy(sha)
        if first is not None:
            return Claim(None if first["doc_id"] == doc_id else first["doc_id"])
        key = self._key(sha)
        for _ in range(5):  # a generation can vanish under us while its taker tidies up: look again
            gens = self.leases._generations(key)
            nxt = 0
            if gens:
                record = self._record(sha, gens[-1])
                if record is None:
                    continue
                run, holder = str(record.get("run_id", "")), record.get("doc_id")
                if run == self.run_id and holder == doc_id:
                    return Claim(None, gens[-1])  # ours already: the book's earlier attempt in this run
                if run and self.leases.is_live(run):
                    return Claim(None if holder == doc_id else holder)
                nxt = int(gens[-1]) + 1  # its run is gone: taken over
            record = json.dumps({"run_id": self.run_id, "doc_id": doc_id, "claimed_at": time.time()}).encode()
            if self.store.create_exclusive(join(self.leases.lease_dir, key, f"{nxt:08d}"), record):
                for old in gens:
                    self.store.delete(join(self.leases.lease_dir, key, old))
                first = self.first_copy(sha)  # committed and released between our two looks
                if first is not None and first["doc_id"] != doc_id:
                    self.release(sha, doc_id)
                    return Claim(first["doc_id"])
                return Claim(None, f"{nxt:08d}")
        raise StorageError(f"{join(self.leases.lease_dir, key)}: the claim on these bytes kept changing hands")

    def release(self, sha: str, doc_id: str) -> None:
        """Remove this run's claim on the bytes for book `doc_id` (another book's claim stays), looking
        first at whose each generation is."""
        key = self._key(sha)
        for gen in self.leases._generations(key):
            record = self._record(sha, gen)
            if record and record.get("run_id") == self.run_id and record.get("doc_id") == doc_id:
                self.store.delete(join(self.leases.lease_dir, key, gen))
        self._remove_empty_folder(sha)

    def release_firsts(self, firsts: Iterable["First"], run: Leases) -> None:
        """After the commit point (and `register`): the claims of a shard's first copies. A claim whose
        generation is known and whose book this run has held without a lapse (`run.unbroken`) cannot
        have been taken over, so that generation is deleted directly, all of them in one request where
        the store allows; any other is looked at first (`release`). Before `run` releases the books."""
        direct, looked = [], []
        for f in firsts:
            sha, doc_id = f.row["content_sha256"], f.row["doc_id"]
            if f.generation is not None and run.unbroken(doc_id):
                direct.append((sha, join(self.leases.lease_dir, self._key(sha), f.generation)))
            else:
                looked.append((sha, doc_id))
        self.store.delete_many([uri for _, uri in direct])
        for sha, _ in direct:
            self._remove_empty_folder(sha)
        for sha, doc_id in looked:
            self.release(sha, doc_id)

    def _remove_empty_folder(self, sha: str) -> None:
        if isinstance(self.store, LocalStore):  # no empty folder per content left behind
            try:
                os.rmdir(join(self.leases.lease_dir, self._key(sha)))
            except OSError:
                pass


class First(NamedTuple):
    """A first copy settled for commit: its documents row and the generation of this run's claim on its bytes."""
    row: dict
    generation: Optional[str]


def claims_taken(books) -> dict[str, str]:
    """doc_id -> the generation of the claim its loader took on the book's bytes, from the facts kept of
    the book's page results (`PageWork.content_claim`); `books`: doc_id -> pagerows.BookPages."""
    return {doc_id: f.content_claim for doc_id, book in books.items() for f in book.facts if f.content_claim}


def _standing(claims: ContentClaims, index, sha: str, first: str) -> bool:
    """The first copy `first` is committed (in the index, refreshed if need be) or in flight in a live run."""
    if first in index.by_id:
        return True
    index.refresh()
    return first in index.by_id or claims.holder(sha) == first


def settle(claims: ContentClaims, index, page_rows, doc_rows: list[dict], run: Optional[Leases] = None,
           taken: Optional[dict[str, str]] = None) -> tuple[list, list[dict], list[First]]:
    """Just before a shard's commit: each book's standing as a copy, checked again (module docstring).
    Returns the page rows (a book turned duplicate loses its pages), the documents rows, and the
    first copies, to `register` once the commit point is passed and then `release_firsts`. `taken`
    (`claims_taken`): the claims the loaders took; one held by `run` without a lapse since it claimed
    the book is not looked at again."""
    from folioscan.pipeline.assemble import as_duplicate, first_copy_gone
    from folioscan.pipeline.pagerows import drop_books

    firsts, taken = [], taken or {}
    for d in doc_rows:
        sha = d["content_sha256"]
        if not sha:
            continue
        if d["status"] == "duplicate":
            if not _standing(claims, index, sha, d["duplicate_of"]):
                log.warning("%s: its first copy %s is neither committed nor in flight; read again by the next run",
                            d["source_uri"], d["duplicate_of"])
                claims.forget(sha, d["duplicate_of"])
                first_copy_gone(d)
            continue
        generation = taken.get(d["doc_id"])
        if generation is not None and run is not None and run.unbroken(d["doc_id"]):
            firsts.append(First(d, generation))  # its loader claimed the bytes and nobody can have taken them since
            continue
        first, generation = claims.take(sha, d["doc_id"])
        if first is not None and not _standing(claims, index, sha, first):
            claims.forget(sha, first)  # a record naming a book since removed from the output
            first, generation = claims.take(sha, d["doc_id"])
        if first is None:
            firsts.append(First(d, generation))
        else:
            log.info("%s: the same bytes as %s, committed first; its pages are dropped", d["source_uri"], first)
            as_duplicate(d, first)
    dropped = {d["doc_id"] for d in doc_rows if d["status"] == "duplicate"}
    return drop_books(page_rows, dropped), doc_rows, firsts
