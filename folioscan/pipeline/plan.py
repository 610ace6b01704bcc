"""What a run processes, as generators over the listing: the source listed (an empty one is an
error), this driver's share (`--partition`), the books not committed already, claimed a batch at a
time, the other shares' free books after its own (`--steal`), and the progress line's count of
what is to do (a second listing, in a thread). `job.py` drives them."""
from __future__ import annotations

import logging
import threading
from dataclasses import replace
from itertools import islice
from typing import Iterator, Optional

from folioscan.pipeline.committed import CommittedIndex, decide
from folioscan.pipeline.config import JobConfig
from folioscan.pipeline.leases import Leases
from folioscan.pipeline.partition import Partition
from folioscan.pipeline.progress import Progress, count_listing
from folioscan.pipeline.sources import group_documents, is_manifest, iter_documents, read_manifest
from folioscan.pipeline.storage import StorageError, store_for
from folioscan.pipeline.summary import JobSummary
from folioscan.records import SourceDocument, SourceObject

log = logging.getLogger(__name__)


class EmptySource(StorageError):
    """The source lists no book at all: most often a mistyped prefix or path."""


def chunks(docs: Iterator[SourceDocument], size: int, first: int = 1) -> Iterator[list[SourceDocument]]:
    """Batches of `size`, the first ones smaller (`first`, then doubling): a rerun over a library whose
    new books are few and far apart in the listing starts its first new book as soon as it is listed,
    not once `size` of them are found (bench/skip_committed.py)."""
    n = max(1, min(first, size))
    while chunk := list(islice(docs, n)):
        yield chunk
        n = min(size, n * 2)


def planned(docs: Iterator[SourceDocument], index: CommittedIndex, cfg: JobConfig, summary: JobSummary,
             seen: set[str], count_skips: bool = True) -> Iterator[SourceDocument]:
    """The listed books this run should process; counts the others (`count_skips=False`: the second
    listing of `--steal`, whose skipped books are other drivers' business)."""
    for doc in docs:
        if doc.doc_id in seen:  # listed twice in this run
            summary.documents_skipped += count_skips
            continue
        seen.add(doc.doc_id)
        decision = decide(index, doc, cfg.retry_failed)
        if not decision.process:
            summary.documents_skipped += count_skips
            summary.documents_carried_failed += decision.carried_failure and count_skips
            continue
        summary.documents_retried += decision.reason.startswith("retry")
        summary.documents_replaced += decision.reason.startswith("replaced")
        yield doc


def own_share(docs: Iterator[SourceDocument], part: Optional[Partition], summary: JobSummary) -> Iterator[SourceDocument]:
    """The books of this driver's share (`--partition K/N`); counts the others."""
    for doc in docs:
        if part is None or part.holds(doc.uri):
            yield doc
        else:
            summary.documents_other_shares += 1


def stolen(relist, part: Partition) -> Iterator[SourceDocument]:
    """`--steal`: after this driver's own share, the books of the other shares, from a fresh listing
    (only when the first one is used up: nothing is held meanwhile). Claims and the committed index
    decide which of them are still free."""
    log.info("share %s listed through: taking other shares' unclaimed books (--steal)", part)
    for doc in relist():
        if not part.holds(doc.uri):
            yield doc


def claimed(docs: Iterator[SourceDocument], leases: Leases, index: CommittedIndex, summary: JobSummary,
             batch: int, stolen: bool = False) -> Iterator[SourceDocument]:
    """Claim books a batch at a time; then re-read what was committed meanwhile, so a book another
    driver finished between our listing and our claim is not done again. `stolen`: books of other
    shares (`--steal`), counted as such; one claimed elsewhere is theirs, not counted."""
    for chunk in chunks(docs, batch):
        got = [d for d, mine in zip(chunk, leases.claim_many([d.doc_id for d in chunk])) if mine]
        if not stolen:
            summary.documents_claimed_elsewhere += len(chunk) - len(got)
        just_committed = index.refresh()
        for doc in got:
            if doc.doc_id in just_committed:
                leases.release(doc.doc_id)
                summary.documents_claimed_elsewhere += not stolen
            else:
                summary.documents_stolen += stolen
                yield doc


def listing(in_store, cfg: JobConfig, summary: JobSummary) -> Iterator[SourceDocument]:
    def ignored(_uri: str) -> None:
        summary.objects_ignored += 1

    listed = 0
    for doc in iter_documents(in_store, cfg.source, on_skip=ignored):
        listed += 1
        yield doc
    if listed == 0:
        extra = f" ({summary.objects_ignored} objects that are neither PDF nor page image)" if summary.objects_ignored else ""
        raise EmptySource(f"{cfg.source}: the source lists no PDF or page image{extra}; is the path or prefix right?")


def count_ahead(cfg: JobConfig, index: CommittedIndex, progress: Progress, stop: threading.Event,
                 part: Optional[Partition] = None) -> None:
    """The progress line's total: the books of a second listing this run would process (not committed
    already, as the output stood at the start; of its own share with `part`), counted in a thread
    (progress.count_listing)."""
    if not progress.enabled:
        return
    snapshot = index.snapshot()
    seen: set[str] = set()
    store = store_for(cfg.source, cfg.endpoint_url, cfg.region)
    manifest = is_manifest(cfg.source)

    def relisting() -> Iterator[SourceDocument]:
        if not manifest:
            return iter_documents(store, cfg.source, log_skips=False)
        # a manifest's listing asks the store about every entry: counting reads the entries alone, so the
        # run's requests are not doubled; a book is then known by its URI (its content is not looked at)
        return group_documents((SourceObject(uri, 0, "") for uri in sorted(read_manifest(store, cfg.source))),
                               log_skips=False)

    def wanted(doc: SourceDocument) -> bool:
        if part is not None and not part.holds(doc.uri):
            return False
        if doc.doc_id in seen:
            return False
        seen.add(doc.doc_id)
        if manifest:  # as committed under its URI, if it is
            doc = replace(doc, doc_id=snapshot.by_uri.get(doc.uri, doc.doc_id))
        return decide(snapshot, doc, cfg.retry_failed).process

    count_listing(relisting, wanted, progress, stop)
