"""The VLM OCR engine: adaptive budget, batched reads, escalation to a larger budget on doubt.

A page is re-read one rung up its own budget ladder (budgets.page_ladder: only budgets that give
the model more of the page) when its confidence is under the threshold, its output loops, it
fills the token cap, or it is empty (blank pages never get here). Every read is recorded as an
attempt; the accepted one is the last clean read, or, when none is clean, the most confident.
A hint naming a budget (a retry of an accepted read, e.g. turned by 180 degrees) is read once
at that budget.

Generate batches are cut from the whole pool of pages handed in, by budget and expected output
length, each with its own token cap (schedule.py); a page whose text outran a cap set from its
estimate is read again at its full cap (reason "length-estimate"). The next batches' images are
prepared in threads while the current one generates, and two calls may run at once (the OCR
actor takes its next pool while one generates), so a pool's first batch is prepared while the
previous pool still holds the accelerator.

Out of memory in a generate call halves the batch (the backend selects the halves from what it
prepared, the allocator's cache is emptied) down to one page, and the size that fitted bounds
every later batch of this engine; each halving is counted (counters.py: `oom_backoffs`, and the
batch size as `vlm_batch_size`) and logged. A backend with continuous batching (vLLM) gets all the
batches of a round in one call (`generate_many`), so its scheduler refills finished slots.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Optional, Sequence

import numpy as np

from folioscan.failures import is_out_of_memory
from folioscan.records import OcrAttempt, OcrResult
from folioscan.workers.engines import counters
from folioscan.workers.engines.base import ImageHints
from folioscan.workers.engines.vlm import schedule
from folioscan.workers.engines.vlm.budgets import Rung, choose_rung, expected_text_tokens, max_new_tokens, page_ladder
from folioscan.workers.engines.vlm.confidence import NewlineCounts, geometric_mean_prob, lines_with_confidence
from folioscan.workers.engines.vlm.models import Budget, spec
from folioscan.workers.engines.vlm.repetition import is_degenerate

log = logging.getLogger(__name__)


def _backend(options):
    if options.backend == "vllm":
        from folioscan.workers.engines.vlm.vllm_backend import VllmBackend

        return VllmBackend(options)
    from folioscan.workers.engines.vlm.transformers_backend import TransformersBackend

    return TransformersBackend(options)


class VlmEngine:
    def __init__(self, options, backend=None):
        self.options = options
        self.name = options.kind
        self.spec = spec(options.kind)
        if options.budget != "adaptive":
            self.spec.budget(options.budget)  # fail on a bad name before any page is read
        self.backend = backend or _backend(options)
        self.version = self.backend.version
        self.newlines = NewlineCounts(self.backend.batch_decode)  # per token id, learnt as tokens appear
        self.batch_limit = max(1, options.batch_size)  # lowered for good by an out-of-memory back-off
        # predict_batch may run in two threads at once (a Ray actor with two calls in flight): one
        # prepares its pool while the other generates; only the accelerator's part is serialised
        self.device_lock = threading.Lock()
        self.oom_backoffs = 0

    def plan(self, image: np.ndarray, hint: Optional[ImageHints]) -> tuple[list[Rung], int, int]:
        """A page's ladder, the rung to start on, and how many reads it may get."""
        h, w = image.shape[:2]
        attempts = max(1, self.options.max_attempts)
        if hint is not None and hint.budget:
            return page_ladder(self.name, h, w, start=hint.budget)[:1], 0, 1
        if self.options.budget != "adaptive":
            return page_ladder(self.name, h, w, start=self.options.budget), 0, attempts
        rungs = page_ladder(self.name, h, w)
        return rungs, choose_rung(rungs, hint.est_chars if hint else 0, self.options.target_compression), attempts

    def predict_batch(self, images: Sequence[np.ndarray], hints: Optional[Sequence[ImageHints]] = None) -> list[OcrResult]:
        plans = [self.plan(im, hints[i] if hints else None) for i, im in enumerate(images)]
        est = [expected_text_tokens(h.est_chars) if h else 0 for h in (hints or [None] * len(images))]
        reads: list[list[tuple[OcrAttempt, str, list]]] = [[] for _ in images]
        cut: list[set[int]] = [set() for _ in images]  # reads cut short by a cap from the length estimate
        pending = {i: (first, "initial") for i, (_, first, _) in enumerate(plans)}
        while pending:
            order, rungs, upper, batches = self.round_batches(pending, plans, est)
            jobs = [([order[k] for k in b.indices], rungs[b.indices[0]].budget, b, [upper[k] for k in b.indices])
                    for b in batches]
            next_pending = {}
            for (idx, budget, batch, bound), gens, ms in self._round(jobs, images):
                read_list = self._reads(gens, budget, [pending[i][1] for i in idx], ms)
                for i, read, cap, top in zip(idx, read_list, batch.caps, bound):
                    reads[i].append(read)
                    rung_list, _, limit = plans[i]
                    rung, why = pending[i][0], self._doubt(read[0])
                    if read[0].hit_token_cap and cap < top:  # the estimate's cap, not the page's: read it whole
                        cut[i].add(len(reads[i]) - 1)
                        next_pending[i] = (rung, "length-estimate")
                    elif why and rung + 1 < len(rung_list) and len(reads[i]) - len(cut[i]) < limit:
                        next_pending[i] = (rung + 1, why)
            pending = next_pending
        return [self._result(r, c) for r, c in zip(reads, cut)]

    def round_batches(self, pending: dict, plans: list, est: list[int]):
        """The generate batches of one round over the pending pages ({page: (rung, reason)}), cut
        by budget and expected length (a page re-read after its estimate fell short gets its full
        cap): (pages in order, their rungs, their upper caps, batches indexing that order)."""
        order = list(pending)
        rungs = [plans[i][0][pending[i][0]] for i in order]
        upper = [self._cap(r.vision_tokens) for r in rungs]
        groups = [r.budget.name for r in rungs]
        size = min(self.options.batch_size, self.batch_limit)
        if self.options.batching == "input":
            return order, rungs, upper, schedule.input_order(groups, upper, size)
        guess = [0 if pending[i][1] == "length-estimate" else est[i] for i in order]
        return order, rungs, upper, schedule.plan(groups, guess, upper, size)

    def _cap(self, vision_tokens: int) -> int:
        """A page's output cap: the user's, else the budget's; the length estimate may only lower it."""
        return self.options.max_new_tokens or max_new_tokens(vision_tokens, self.options.target_compression)

    def _round(self, jobs, images):
        """(job, generations, generate ms per page) for each generate batch of one round."""
        prepare = lambda job: self.backend.prepare([images[i] for i in job[0]], job[1])  # noqa: E731
        if getattr(self.backend, "continuous_batching", False):
            prepared = [p for _, p in schedule.prefetched(jobs, prepare)]
            with self.device_lock:
                t0 = time.perf_counter()
                outs = self.backend.generate_many([(p, list(job[2].caps)) for job, p in zip(jobs, prepared)])
                ms = (time.perf_counter() - t0) * 1000 / max(sum(len(p) for p in prepared), 1)
            yield from ((job, gens, ms) for job, gens in zip(jobs, outs))
            return
        for job, prepared in schedule.prefetched(jobs, prepare):
            with self.device_lock:
                t0 = time.perf_counter()
                gens = self._generate(prepared, list(job[2].caps))
                ms = (time.perf_counter() - t0) * 1000 / max(len(gens), 1)  # preparation ran alongside
            yield job, gens, ms

    def _generate(self, prepared, caps: list[int]):
        """One generate batch, in pieces of at most `batch_limit` pages, halving on out of memory."""
        n = len(prepared)
        if n > self.batch_limit:
            out, start = [], 0
            while start < n:  # the limit may fall while the pieces run
                end = min(n, start + self.batch_limit)
                out += self._generate(self.backend.select(prepared, range(start, end)), caps[start:end])
                start = end
            return out
        try:
            return self.backend.generate(prepared, caps)
        except Exception as e:
            if n == 1 or not is_out_of_memory(e) or not hasattr(self.backend, "select"):
                raise
            error = f"{type(e).__name__}"
        # out of memory: retried only here, after the except block, so the failed call's frames (its
        # KV cache, embeddings, activations, held by the traceback) are gone before memory is released
        self.backend.release_memory()
        self.batch_limit = min(self.batch_limit, (n + 1) // 2)
        self.oom_backoffs += 1
        counters.add("oom_backoffs")
        counters.low("vlm_batch_size", self.batch_limit)
        log.warning("%s: out of memory generating %d pages (%s); batches of at most %d from now on",
                    self.name, n, error, self.batch_limit)
        return self._generate(prepared, caps)

    def _reads(self, gens, budget: Budget, reasons: list[str], ms: float):
        texts = self.backend.batch_decode([g.token_ids for g in gens])
        self.newlines.learn(t for g in gens for t in g.token_ids)  # one decode call for the batch's new ids
        out = []
        for g, text, reason in zip(gens, texts, reasons):
            lines = lines_with_confidence(g.token_ids, g.logprobs, self.newlines, text)
            attempt = OcrAttempt(budget=budget.name, vision_tokens=g.vision_tokens, output_tokens=len(g.token_ids),
                                 confidence=geometric_mean_prob(g.logprobs), repetition=is_degenerate(g.token_ids),
                                 hit_token_cap=g.hit_token_cap, reason=reason, ms=ms,
                                 max_new_tokens=g.max_new_tokens, cap_clamped=g.cap_clamped)
            out.append((attempt, text.strip(), lines))
        return out

    def _doubt(self, a: OcrAttempt) -> str:
        if a.repetition:
            return "repetition"
        if a.hit_token_cap:
            return "token-cap"
        if a.output_tokens == 0:
            return "empty"
        if a.confidence is not None and a.confidence < self.options.escalate_below:
            return "low-confidence"
        return ""

    def _result(self, reads, cut: set[int]) -> OcrResult:
        """Every read is an attempt; one cut short by the length estimate is never the accepted one."""
        candidates = [r for k, r in enumerate(reads) if k not in cut] or reads
        clean = [r for r in candidates if not self._doubt(r[0])]
        best = clean[-1] if clean else max(candidates, key=lambda r: (not r[0].repetition, r[0].confidence or 0.0))
        best[0].accepted = True
        attempt, text, lines = best
        lows = [l.confidence for l in lines]
        return OcrResult(text=text, lines=lines, confidence=attempt.confidence,
                         confidence_min=min(lows) if lows else attempt.confidence, attempts=[r[0] for r in reads])
