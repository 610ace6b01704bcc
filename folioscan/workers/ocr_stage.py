"""The OCR stage: a batch of prepared pages in, finished PageResults out.

Blank pages, pages that failed earlier and a duplicate book's marker pass through without touching the engine. If the
engine raises on a batch, the pages are retried one by one so a single bad page cannot
take its neighbours down with it; each retried page records the failed batch as its first
attempt (reason "batch-failed:<error>"), so a smaller batch is never silent, and a page's call
that fails transiently is retried with backoff. A page read with low confidence is read again
turned by 180 degrees, once, at the budget its first reading settled on, and the more confident
read is kept: the engine's own signal catches the few
pages the geometric orientation test gets upside down (measured: 5 of 178 on old_books).
"""
from __future__ import annotations

import logging
import time
from typing import Sequence

import numpy as np

from folioscan.failures import classify
from folioscan.records import BoxRead, OcrAttempt, PageResult, PageWork
from folioscan.retry import RetryPolicy, attempts_of, call_with_retry
from folioscan.workers import page_confidence
from folioscan.workers.boxes import place_words
from folioscan.workers.engines.base import ImageHints
from folioscan.workers.engines.registry import build_engine
from folioscan.workers.prep.transform import box_to_source, quarter_turn
from folioscan.workers.route import route_reason

log = logging.getLogger(__name__)

FLIP_MARGIN = 0.1  # the turned read must be this much more confident to replace the first


class OcrStage:
    def __init__(self, engine_options, flip_retry_below: float | None = 0.6, calibrate: bool = True,
                 retry: RetryPolicy = RetryPolicy(), route=None):
        self.options = engine_options
        # routing (workers/route.py): a page this stage's reading routes keeps its image for the second engine
        self.route = route if route is not None and route.then is not None else None
        self.lexicon_lang = page_confidence.LEXICON_LANG.get(getattr(engine_options, "lang", "eng").split("+")[0])
        self.boxes_from_first = self.route is not None and _same_tesseract(engine_options, self.route.then)
        self.engine = build_engine(engine_options)
        self.flip_retry_below = flip_retry_below
        # page confidence as P(page is good) where a model is fitted for the engine (page_confidence.py)
        self.calibrate = calibrate and page_confidence.fitted_for(self.engine.name)
        self.retry = retry

    def __call__(self, works: Sequence[PageWork]) -> list[PageResult]:
        out: dict[int, PageResult] = {}
        todo: list[int] = []
        for i, w in enumerate(works):
            if w.error:
                out[i] = self._result(w, "error", None, error=w.error)
            elif w.duplicate_of:  # a copy of a book read elsewhere: nothing to read
                out[i] = self._result(w, "duplicate", None)
            elif w.prep.is_blank:
                out[i] = self._result(w, "blank", None)
            else:
                todo.append(i)
        if todo:
            t0 = time.perf_counter()
            try:
                results = self._retry_flipped([works[i] for i in todo], self._predict([works[i] for i in todo]))
                per_page_ms = (time.perf_counter() - t0) * 1000 / len(todo)
                for i, r in zip(todo, results):
                    out[i] = self._finish(works[i], r, per_page_ms)
            except Exception as batch_error:
                # one page at a time, recorded: each page's attempts start with the failed batched read
                failed = f"batch-failed:{type(batch_error).__name__}: {batch_error}"[:500]
                log.warning("%s: a batch of %d pages failed (%s); reading them one at a time", self.engine.name, len(todo), failed)
                for i in todo:
                    t1 = time.perf_counter()
                    try:
                        [r], tries = call_with_retry(lambda: self._predict([works[i]]), self.retry, works[i].source_uri)
                        works[i].attempts_made = max(works[i].attempts_made, tries)
                        r.attempts = [OcrAttempt(budget="", reason=failed), *r.attempts]
                        out[i] = self._finish(works[i], r, (time.perf_counter() - t1) * 1000)
                    except Exception as e:
                        works[i].attempts_made = max(works[i].attempts_made, attempts_of(e))
                        out[i] = self._result(works[i], "error", None, error=f"{self.engine.name}: {type(e).__name__}: {e}")
                        out[i].error_kind = classify(e)
        return [out[i] for i in range(len(works))]

    def _retry_flipped(self, works: Sequence[PageWork], results: list) -> list:
        if self.flip_retry_below is None:
            return results
        doubtful = [k for k, r in enumerate(results)
                    if not r.error and r.confidence is not None and r.confidence < self.flip_retry_below]
        if not doubtful:
            return results
        turned = [np.ascontiguousarray(works[k].image[::-1, ::-1]) for k in doubtful]
        # one read at the budget the first reading settled on, not a second climb up the ladder
        agains = self.engine.predict_batch(turned, [self._hint(works[k], self._accepted_budget(results[k])) for k in doubtful])
        for k, image, again in zip(doubtful, turned, agains):
            first, work = results[k], works[k]
            flip = (work.prep.orientation + 180) % 360
            for read, orientation, reason in ((first, work.prep.orientation, "initial"), (again, flip, "low-confidence-flip")):
                if not read.attempts:  # a classic engine reads once: record the read as the attempt
                    read.attempts = [OcrAttempt(budget="", confidence=read.confidence, accepted=True)]
                for a in read.attempts:
                    a.reason = f"{a.reason or reason}@{orientation}"
            keep_turn = not again.error and (again.confidence or 0.0) > first.confidence + FLIP_MARGIN
            chosen, dropped = (again, first) if keep_turn else (first, again)
            for a in dropped.attempts:
                a.accepted = False
            chosen.attempts = first.attempts + again.attempts
            if keep_turn:
                h, w = work.image.shape[:2]
                work.prep.transforms.append(quarter_turn("flip-retry", 180, w, h))
                work.prep.orientation, work.image = flip, image
            results[k] = chosen
        return results

    @staticmethod
    def _hint(w: PageWork, budget: str | None = None) -> ImageHints:
        return ImageHints(w.prep.est_chars, w.prep.text_density, budget, w.source_uri, w.page_index, w.side)

    @staticmethod
    def _accepted_budget(r) -> str | None:
        return next((a.budget for a in r.attempts if a.accepted and a.budget), None)

    def _predict(self, works: Sequence[PageWork]):
        hints = [self._hint(w) for w in works]
        results = self.engine.predict_batch([w.image for w in works], hints)
        if len(results) != len(works):
            raise RuntimeError(f"engine returned {len(results)} results for {len(works)} images")
        return results

    def _finish(self, work: PageWork, ocr, ms: float) -> PageResult:
        if ocr.error:
            return self._result(work, "error", ocr, error=ocr.error, ms=ms)
        place_words(work, ocr, self.options)  # `boxes: tesseract`: the engine's words on Tesseract's boxes
        ocr.confidence_raw = ocr.confidence
        if self.calibrate:
            ocr.confidence = page_confidence.page_confidence(ocr, work.prep, getattr(self.options, "lang", "eng"))
        return self._result(work, "ok", ocr, ms=ms)

    def _result(self, work: PageWork, status: str, ocr, error=None, ms: float = 0.0) -> PageResult:
        if work.image is not None:
            work.height, work.width = work.image.shape[:2]
        if ocr is not None:
            map_to_source(work, ocr)
        result = PageResult(work, status, ocr, self.engine.name, self.engine.version, ocr_ms=ms, error=error)
        result.route_reason = route_reason(result, self.route, self.lexicon_lang)
        work.box_read = None
        if result.route_reason is None:
            work.image = None  # the pixels (and a box read) are not needed past this point
        elif self.boxes_from_first and ocr is not None and not ocr.error:
            # the second engine places its words on Tesseract's boxes: this reading is that read already
            work.box_read = BoxRead(ocr, f"tesseract {self.engine.version}", ms, work.prep.orientation)
        return result


def _same_tesseract(first, then) -> bool:
    """The second engine wants Tesseract's word boxes (`boxes: tesseract`) read as the first engine reads."""
    return (getattr(then, "boxes", "none") == "tesseract" and first.kind == "tesseract"
            and then.boxes_tesseract.model_dump() == first.model_dump())


def map_to_source(work: PageWork, ocr) -> None:
    """Fill `box_source` of every located line and word: the box on the page image as loaded."""
    bounds = (work.source_width, work.source_height) if work.source_width else None
    for line in ocr.lines:
        if line.box:
            line.box_source = box_to_source(work.prep.transforms, line.box, bounds)
        for word in line.words:
            if word.box:
                word.box_source = box_to_source(work.prep.transforms, word.box, bounds)
