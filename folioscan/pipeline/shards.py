"""Books into shards, in the driver: what an executor hands each book's results to (`BookSink`:
a BookPages spilling to the run's folder), and the stream of shards (`stream_shards`: books handed
to the executor as it has room, each shard yielded once all its books are back). job.py commits
each shard as it comes."""
from __future__ import annotations

from typing import Iterator, Optional

from folioscan.pipeline.pagerows import PAGE_ROW, BookPages
from folioscan.pipeline.progress import Progress
from folioscan.pipeline.spill import Spill
from folioscan.pipeline.stop import Stop
from folioscan.pipeline.summary import JobSummary
from folioscan.records import SourceDocument


class BookSink:
    """What an executor appends a book's page results to (`executor.book_results`): a BookPages whose
    rows go to the run's spill folder. A book started again from its first page (a lost worker) gets a
    new one, and what it had spilled is dropped."""

    def __init__(self, spill: Spill, run_id: str):
        self.spill, self.run_id = spill, run_id
        self.held: dict[str, BookPages] = {}  # books handed out and not yet committed or dropped

    def __call__(self, doc: SourceDocument) -> BookPages:
        old = self.held.pop(doc.doc_id, None)
        if old is not None:
            old.discard()
        self.held[doc.doc_id] = pages = BookPages(self.spill.file(PAGE_ROW.schema), self.run_id)
        return pages

    def done(self, doc_ids) -> None:
        for doc_id in doc_ids:
            self.held.pop(doc_id, None)


class _Shard:
    """Books of one Parquet part, in listing order; committed once closed (full, or the listing
    ended) and every book in it is back."""

    def __init__(self):
        self.docs: list[SourceDocument] = []
        self.results: dict[str, BookPages] = {}
        self.closed = False

    @property
    def complete(self) -> bool:
        return self.closed and len(self.results) == len(self.docs)


def stream_shards(executor, docs: Iterator[SourceDocument], shard_docs: int, open_shards: int,
            stop: Optional[Stop] = None, summary: Optional[JobSummary] = None, progress: Optional[Progress] = None
            ) -> Iterator[tuple[list[SourceDocument], dict[str, BookPages]]]:
    """Feed books to the executor as it has room (the listing is read lazily) and yield each
    shard as soon as its books are complete. At most `open_shards` shards are open at once, so
    a long book holds back only the results of its own shard's neighbours.

    Once `stop` is requested no book is handed out any more and every open shard is closed, so it
    commits as soon as the books already handed out are back; when the grace period is over the
    stream ends without the books still in flight. `summary._in_flight` counts the books handed out
    (the caller takes them off as it commits them). `progress` hears of each book handed out and
    back, and of the listing's end (the exact number of books)."""
    shards: list[_Shard] = []
    shard_of: dict[str, _Shard] = {}
    listing_done = stopping = False
    handed_out = 0
    while True:
        if stop is not None and stop.requested and not stopping:
            stopping = True
            for shard in shards:
                shard.closed = True
        while not listing_done and not (stop is not None and stop.requested) and executor.has_room():
            current = shards[-1] if shards and not shards[-1].closed else None
            if current is None and len(shards) >= open_shards:
                break
            doc = next(docs, None)
            if doc is None:
                listing_done = True
                if progress is not None:
                    progress.listing_done(handed_out)
                if current is not None:
                    current.closed = True
                break
            if current is None:
                current = _Shard()
                shards.append(current)
            current.docs.append(doc)
            current.closed = len(current.docs) >= shard_docs
            shard_of[doc.doc_id] = current
            executor.submit(doc)
            handed_out += 1
            if progress is not None:
                progress.book_started()
            if summary is not None:
                summary._in_flight += 1
        for shard in [s for s in shards if s.complete]:
            shards.remove(shard)
            yield shard.docs, shard.results
        if stopping and stop.expired():  # the books still in flight are given up
            return
        if not executor.busy():
            if (listing_done or stopping) and not shards:
                return
            if listing_done or stopping or not executor.has_room():  # nothing in flight can complete these
                raise RuntimeError(f"{len(shards)} shards open with no book in flight")
            continue
        for doc, results in executor.poll():
            shard_of.pop(doc.doc_id).results[doc.doc_id] = results
            if progress is not None:
                progress.book_back(doc.doc_id, results.pages)
