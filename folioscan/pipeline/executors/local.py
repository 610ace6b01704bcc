"""In-process executor: no Ray import; for tests, debugging and single-machine runs.

Pages stream from the loader to the engine one batch at a time, so memory does not grow
with a book's length; a batch may span the end of one book and the start of the next.
With routing (`route.then`), a second OcrStage reads the pages the first one routes, a batch at a
time (sooner when no more pages are loaded): fewer than one second-engine batch of routed pages
waits at a time. A book is handed back once its routed pages are settled too.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Iterator

from folioscan.pipeline.pagerows import BookPages, PageFacts
from folioscan.pipeline.stages import engine_build_error, read_pages, read_routed
from folioscan.records import PageResult, PageWork, SourceDocument
from folioscan.workers.engines import counters


@dataclass
class _Book:
    doc: SourceDocument
    pages: Iterator[PageWork]
    results: BookPages  # executors/__init__.py: book_results
    loaded: bool = False
    routing: int = 0  # pages with the second engine


class LocalExecutor:
    def __init__(self, stages):
        self.stages = stages
        counters.reset_lows()  # this process may have run an earlier job
        self.start = counters.snapshot()  # before the stage is built: its engine load counts
        try:
            self.ocr = stages.ocr_stage()
        except Exception as e:  # a run-level configuration error, not every book's error row
            raise engine_build_error(stages.engine, e) from e
        self.then, self.then_counts = None, {}  # the second engine's stage and its own engine counters
        if stages.then is not None:
            before = counters.snapshot()
            try:
                self.then = stages.then_stage()
            except Exception as e:
                raise engine_build_error(stages.then, e) from e
            self._count_then(before)
        self.routed: list[tuple[_Book, PageResult]] = []  # first results waiting for the second engine
        self.books: deque[_Book] = deque()
        self.on_pages = self.on_restart = None  # progress (executors/__init__.py)
        self.book_results = lambda doc: BookPages.in_memory()

    def submit(self, doc: SourceDocument) -> None:
        self.books.append(_Book(doc, self.stages.pages(doc), self.book_results(doc)))

    def has_room(self) -> bool:
        return len(self.books) < 2

    def busy(self) -> bool:
        return bool(self.books)

    def poll(self) -> list[tuple[SourceDocument, BookPages]]:
        batch: list[PageWork] = []
        owners: list[_Book] = []
        for book in self.books:
            while len(batch) < self.stages.batch_size and not book.loaded:
                work = next(book.pages, None)
                if work is None:
                    book.loaded = True
                else:
                    batch.append(work)
                    owners.append(book)
            if len(batch) >= self.stages.batch_size:
                break
        got: dict[str, list[PageFacts]] = {}
        for book, result in zip(owners, read_pages(self.ocr, batch)):
            if result.route_reason is not None:  # final once the second engine has read it
                self.routed.append((book, result))
                book.routing += 1
                continue
            got.setdefault(book.doc.doc_id, []).append(book.results.append(result))
        # every full second-engine call the routed pages make, so that no more than one call's worth
        # of them (images and all) waits here, whatever the share routed; all of them once none is loaded
        while self.routed and (len(self.routed) >= self.stages.then_batch_size or not batch):
            self._read_routed(got)
        if self.on_pages is not None:
            for doc_id, results in got.items():
                self.on_pages(doc_id, results)
        done = []
        while self.books and self.books[0].loaded and not self.books[0].routing:
            book = self.books.popleft()
            done.append((book.doc, book.results))
        return done

    def _read_routed(self, got: dict) -> None:
        take, self.routed = self.routed[:self.stages.then_batch_size], self.routed[self.stages.then_batch_size:]
        before = counters.snapshot()
        results = read_routed(self.then, [r for _, r in take], self.stages.route)
        self._count_then(before)
        for (book, _), result in zip(take, results):
            book.routing -= 1
            got.setdefault(book.doc.doc_id, []).append(book.results.append(result))

    def _count_then(self, before: dict) -> None:
        """The second engine's share of this process's counters (totals while it ran; a low it set)."""
        after = counters.snapshot()
        for k, v in counters.since(before, after).items():
            if k in counters.LOWS:
                if before.get(k) != v:
                    self.then_counts[k] = v
            else:
                self.then_counts[k] = self.then_counts.get(k, 0) + v

    def stats(self, ask: bool = True) -> dict:
        """The driver is the one OCR worker: its engine counters since this executor started (with
        routing, the second engine's apart, in `then_pool`)."""
        total = counters.since(self.start, counters.snapshot())
        if self.then is None:
            return {"ocr_actors": 1, **total}
        first = {k: v - (0 if k in counters.LOWS else self.then_counts.get(k, 0)) for k, v in total.items()
                 if not (k in counters.LOWS and k in self.then_counts and self.then_counts[k] == v)}
        return {"ocr_actors": 1, **first, "then_pool": {"ocr_actors": 1, **self.then_counts}}

    def close(self) -> None:
        pass
