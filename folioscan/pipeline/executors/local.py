"""In-process executor: no Ray import; for tests, debugging and single-machine runs."""
from __future__ import annotations

from typing import Iterator

from folioscan.records import PageResult, SourceDocument


class LocalExecutor:
    def __init__(self, stages):
        self.stages = stages
        self.ocr = stages.ocr_stage()

    def process(self, docs: list[SourceDocument]) -> Iterator[PageResult]:
        batch = []
        for doc in docs:
            for work in self.stages.pages(doc):
                batch.append(work)
                if len(batch) >= self.stages.batch_size:
                    yield from self.ocr(batch)
                    batch = []
        if batch:
            yield from self.ocr(batch)

    def close(self) -> None:
        pass
