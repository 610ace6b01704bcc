"""Executors run the stages over a stream of books: in-process, or on Ray actors.

The driver pushes books in while `has_room()`, and `poll()` hands back finished books: every
page result of a book at once, after the book's loader is done and its last page is read. Each
result goes, as it reaches the driver, into the BookPages `book_results(doc)` made for its book
(pipeline/pagerows.py: its row spilled at once, its facts kept; rows kept in memory by default),
and a book read again from its first page gets a new one. A book is handed back with its text
made (`BookPages.columns`) or its TextFacts kept, from which assembly makes it.
Progress moves sooner: each batch's page results go to `on_pages(doc_id, facts)` (their
PageFacts) as they reach the driver, and a book read again from its first page is told to
`on_restart(doc_id)` (both set by the driver, both optional).
"""
from typing import Callable, Optional, Protocol, Sequence

from folioscan.pipeline.pagerows import BookPages, PageFacts
from folioscan.records import SourceDocument


class Executor(Protocol):
    book_results: Callable[[SourceDocument], BookPages]
    on_pages: Optional[Callable[[str, Sequence[PageFacts]], None]]
    on_restart: Optional[Callable[[str], None]]

    def submit(self, doc: SourceDocument) -> None: ...
    def has_room(self) -> bool: ...
    def busy(self) -> bool: ...  # books submitted and not yet handed back
    def poll(self) -> list[tuple[SourceDocument, BookPages]]: ...
    def stats(self, ask: bool = True) -> dict: ...  # {"ocr_actors": int, engine counters (workers/engines/counters.py), ...}; ask=False: no waiting on workers
    def close(self) -> None: ...


def make_executor(cfg, stages) -> Executor:
    if cfg.executor == "local":
        from folioscan.pipeline.executors.local import LocalExecutor

        return LocalExecutor(stages)
    from folioscan.pipeline.executors.ray_actors import RayExecutor

    return RayExecutor(stages, cfg)
