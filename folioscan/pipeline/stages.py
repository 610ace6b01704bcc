"""The stages of a job, as plain picklable callables. No executor or Ray code in here."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from folioscan.pipeline.storage import Store
from folioscan.records import PageWork, SourceDocument
from folioscan.retry import RetryPolicy
from folioscan.workers.load import LoadOptions, load_pages
from folioscan.workers.ocr_stage import OcrStage
from folioscan.workers.prep import PrepOptions, prepare_page


@dataclass
class Stages:
    store: Store
    load: LoadOptions
    prep: PrepOptions
    engine: Any  # one of the EngineOptions models
    batch_size: int = 4
    flip_retry_below: float | None = 0.6
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def pages(self, doc: SourceDocument) -> Iterator[PageWork]:
        """Load and clean a document's pages, one at a time (CPU work, runs in parallel per document)."""
        for work in load_pages(doc, self.store.read, self.load):
            yield from prepare_page(work, self.prep)

    def ocr_stage(self) -> OcrStage:
        """Built once per worker: engines are costly to load."""
        return OcrStage(self.engine, self.flip_retry_below, retry=self.retry)
