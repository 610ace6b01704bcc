"""The stages of a job, as plain picklable callables. No executor or Ray code in here.

Every exception a stage raises for one page or one book becomes an error row for that page
or book (exception type and message, `error_kind` from `failures.classify`): one bad input
never fails the job. Both executors run pages through these same functions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence

from folioscan.failures import classify, describe
from folioscan.pipeline.storage import Store
from folioscan.records import DOCUMENT_LEVEL, PageResult, PageWork, SourceDocument, page_label, page_number
from folioscan.retry import RetryPolicy
from folioscan.workers.boxes import read_boxes
from folioscan.workers.engines.registry import EngineError
from folioscan.workers.load import LoadOptions, load_pages
from folioscan.workers.ocr_stage import OcrStage
from folioscan.workers.prep import PrepOptions, prepare_page
from folioscan.workers.route import second_work, settle


def doc_error(doc: SourceDocument, error: str, kind: Optional[str] = None, pages_before: int = 0) -> PageWork:
    """A book-level error. Its page_count is the number of source pages emitted before it, so the
    driver knows which page rows still belong to the book."""
    return PageWork(doc.doc_id, doc.uri, DOCUMENT_LEVEL, pages_before, error=error, error_kind=kind)


@dataclass
class Stages:
    store: Store
    load: LoadOptions
    prep: PrepOptions
    engine: Any  # one of the EngineOptions models
    batch_size: int = 4
    flip_retry_below: float | None = 0.6
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_pages_per_book: Optional[int] = None
    content: Any = None  # pipeline/duplicates.ContentClaims: a book whose bytes were read before is not read again
    route: Any = None  # pipeline/config.RouteOptions: doubtful pages go on to a second engine (workers/route.py)
    then_batch_size: int = 4  # pages per second-engine call

    @property
    def then(self) -> Any:
        """The second engine's options; None without routing."""
        return self.route.then if self.route is not None else None

    def first_copy(self, doc: SourceDocument):
        """For the loader: (doc_id of the first copy of a book's bytes, None when this book is it; the
        generation of the claim it took on them), duplicates.ContentClaims.take."""
        if self.content is None:
            return None
        return lambda sha: self.content.take(sha, doc.doc_id)

    def pages(self, doc: SourceDocument) -> Iterator[PageWork]:
        """Load and clean a book's pages one at a time (CPU work). A book over the page cap ends
        with a book-level error naming the pages not read."""
        emitted = 0
        cap = self.max_pages_per_book
        try:
            for work in load_pages(doc, self.store.read, self.load, self.first_copy(doc)):
                if cap is not None and work.page_index >= cap:
                    yield doc_error(doc, f"{doc.uri}: book has {work.page_count} pages; pages {page_number(cap)}..{work.page_count} "
                                         f"not read (--max-pages-per-book {cap})", pages_before=emitted)
                    return
                for part in self.prepare(work):  # not `yield from`: Ray's streaming generators send() values
                    yield part
                if work.page_index != DOCUMENT_LEVEL:
                    emitted = work.page_index + 1
        except Exception as e:  # the loader itself broke part-way: the rest of the book is one error
            yield doc_error(doc, f"{doc.uri}: loading failed after {emitted} pages: {describe(e)}", classify(e), emitted)

    def prepare(self, work: PageWork) -> list[PageWork]:
        try:
            parts = prepare_page(work, self.prep)
        except Exception as e:
            work.image, work.parts = None, 1
            work.error, work.error_kind = f"{work.source_uri} {page_label(work.page_index)}: cleaning: {describe(e)}", classify(e)
            return [work]
        for part in parts:  # `boxes: tesseract`: Tesseract reads the cleaned page here, on the CPU workers
            read_boxes(part, self.engine)
        return parts

    def ocr_stage(self) -> OcrStage:
        """Built once per worker: engines are costly to load."""
        return OcrStage(self.engine, self.flip_retry_below, retry=self.retry, route=self.route)

    def then_stage(self) -> OcrStage:
        """The second engine's stage (routing), built once per second-pool worker. It reads the page
        in the orientation the first engine settled on (its own 180-degree re-read included): no
        second turned read."""
        return OcrStage(self.then, None, retry=self.retry)


def engine_build_error(engine: Any, exc: BaseException) -> EngineError:
    """An engine that failed to build in a worker, as the run-level error it is (exit 2): one line,
    the exception's type and the first line of its message."""
    if isinstance(exc, EngineError):
        return exc
    lines = str(exc).strip().splitlines()
    message = lines[0] if lines else ""
    if len(message) > 300:
        message = message[:300] + "..."
    kind = getattr(engine, "kind", "?")
    return EngineError(f"the {kind} engine could not be built: {type(exc).__name__}" + (f": {message}" if message else ""))


def read_routed(ocr: OcrStage, firsts: Sequence[PageResult], route) -> list[PageResult]:
    """The second engine over routed pages (their first results, images kept): each page's final
    result, the second reading or, by the reverse guard, the first (workers/route.py)."""
    works = [second_work(r, r.work.box_read) for r in firsts]
    return [settle(first, second, route) for first, second in zip(firsts, read_pages(ocr, works))]


def read_pages(ocr: OcrStage, works: Sequence[PageWork]) -> list[PageResult]:
    """The OCR stage over a batch; anything it raises becomes an error row for each page of the batch."""
    try:
        return ocr(works)
    except Exception as e:
        results = []
        for w in works:
            w.image = None
            results.append(PageResult(w, "error", None, ocr.engine.name, ocr.engine.version,
                                      error=f"ocr: {describe(e)}", error_kind=classify(e)))
        return results
