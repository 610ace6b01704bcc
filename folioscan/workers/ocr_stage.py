"""The OCR stage: a batch of prepared pages in, finished PageResults out.

Blank pages and pages that failed earlier pass through without touching the engine. If the
engine raises on a batch, the pages are retried one by one so a single bad page cannot
take its neighbours down with it.
"""
from __future__ import annotations

import time
from typing import Sequence

from folioscan.records import PageResult, PageWork
from folioscan.workers.engines.base import ImageHints
from folioscan.workers.engines.registry import build_engine


class OcrStage:
    def __init__(self, engine_options):
        self.options = engine_options
        self.engine = build_engine(engine_options)

    def __call__(self, works: Sequence[PageWork]) -> list[PageResult]:
        out: dict[int, PageResult] = {}
        todo: list[int] = []
        for i, w in enumerate(works):
            if w.error:
                out[i] = self._result(w, "error", None, error=w.error)
            elif w.prep.is_blank:
                out[i] = self._result(w, "blank", None)
            else:
                todo.append(i)
        if todo:
            t0 = time.perf_counter()
            try:
                results = self._predict([works[i] for i in todo])
                per_page_ms = (time.perf_counter() - t0) * 1000 / len(todo)
                for i, r in zip(todo, results):
                    out[i] = self._finish(works[i], r, per_page_ms)
            except Exception:
                for i in todo:
                    t1 = time.perf_counter()
                    try:
                        r = self._predict([works[i]])[0]
                        out[i] = self._finish(works[i], r, (time.perf_counter() - t1) * 1000)
                    except Exception as e:
                        out[i] = self._result(works[i], "error", None, error=f"{self.engine.name}: {type(e).__name__}: {e}")
        return [out[i] for i in range(len(works))]

    def _predict(self, works: Sequence[PageWork]):
        hints = [ImageHints(w.prep.est_chars, w.prep.text_density) for w in works]
        results = self.engine.predict_batch([w.image for w in works], hints)
        if len(results) != len(works):
            raise RuntimeError(f"engine returned {len(results)} results for {len(works)} images")
        return results

    def _finish(self, work: PageWork, ocr, ms: float) -> PageResult:
        if ocr.error:
            return self._result(work, "error", ocr, error=ocr.error, ms=ms)
        return self._result(work, "ok", ocr, ms=ms)

    def _result(self, work: PageWork, status: str, ocr, error=None, ms: float = 0.0) -> PageResult:
        if work.image is not None:
            work.height, work.width = work.image.shape[:2]
        work.image = None  # the pixels are not needed past this point; do not ship them back
        return PageResult(work, status, ocr, self.engine.name, self.engine.version, ocr_ms=ms, error=error)
