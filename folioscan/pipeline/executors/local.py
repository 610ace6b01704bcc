"""In-process executor: no Ray import; for tests, debugging and single-machine runs.

Pages stream from the loader to the engine one batch at a time, so memory does not grow
with a book's length; a batch may span the end of one book and the start of the next.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Iterator, MutableSequence

from folioscan.pipeline.stages import engine_build_error, read_pages
from folioscan.records import PageResult, PageWork, SourceDocument
from folioscan.workers.engines import counters


@dataclass
class _Book:
    doc: SourceDocument
    pages: Iterator[PageWork]
    results: MutableSequence[PageResult]  # executors/__init__.py: book_results
    loaded: bool = False


class LocalExecutor:
    def __init__(self, stages):
        self.stages = stages
        counters.reset_lows()  # this process may have run an earlier job
        self.start = counters.snapshot()  # before the stage is built: its engine load counts
        try:
            self.ocr = stages.ocr_stage()
        except Exception as e:  # a run-level configuration error, not every book's error row
            raise engine_build_error(stages.engine, e) from e
        self.books: deque[_Book] = deque()
        self.on_pages = self.on_restart = None  # progress (executors/__init__.py)
        self.book_results = lambda doc: []

    def submit(self, doc: SourceDocument) -> None:
        self.books.append(_Book(doc, self.stages.pages(doc), self.book_results(doc)))

    def has_room(self) -> bool:
        return len(self.books) < 2

    def busy(self) -> bool:
        return bool(self.books)

    def poll(self) -> list[tuple[SourceDocument, MutableSequence[PageResult]]]:
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
        got: dict[str, list[PageResult]] = {}
        for book, result in zip(owners, read_pages(self.ocr, batch)):
            book.results.append(result)
            got.setdefault(book.doc.doc_id, []).append(result)
        if self.on_pages is not None:
            for doc_id, results in got.items():
                self.on_pages(doc_id, results)
        done = []
        while self.books and self.books[0].loaded:
            book = self.books.popleft()
            done.append((book.doc, book.results))
        return done

    def stats(self, ask: bool = True) -> dict:
        """The driver is the one OCR worker: its engine counters since this executor started."""
        return {"ocr_actors": 1, **counters.since(self.start, counters.snapshot())}

    def close(self) -> None:
        pass
