"""The VLM OCR engine: adaptive budget, batched reads, escalation to a larger budget on doubt.

A page is re-read one rung up its own budget ladder (budgets.page_ladder: only budgets that give
the model more of the page) when its confidence is under the threshold, its output loops, it
fills the token cap, or it is empty (blank pages never get here). Every read is recorded as an
attempt; the accepted one is the last clean read, or, when none is clean, the most confident.
A hint naming a budget (a retry of an accepted read, e.g. turned by 180 degrees) is read once
at that budget.
"""
from __future__ import annotations

import time
from collections import defaultdict
from typing import Optional, Sequence

import numpy as np

from folioscan.records import OcrAttempt, OcrResult
from folioscan.workers.engines.base import ImageHints
from folioscan.workers.engines.vlm.budgets import Rung, choose_rung, max_new_tokens, page_ladder
from folioscan.workers.engines.vlm.confidence import geometric_mean_prob, lines_with_confidence
from folioscan.workers.engines.vlm.models import Budget, spec
from folioscan.workers.engines.vlm.repetition import is_degenerate


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
        reads: list[list[tuple[OcrAttempt, str, list]]] = [[] for _ in images]
        pending = {i: (first, "initial") for i, (_, first, _) in enumerate(plans)}
        while pending:
            by_budget: dict[str, list[int]] = defaultdict(list)
            for i, (rung, _) in pending.items():
                by_budget[plans[i][0][rung].budget.name].append(i)
            next_pending = {}
            for idx in by_budget.values():
                budget = plans[idx[0]][0][pending[idx[0]][0]].budget
                for start in range(0, len(idx), self.options.batch_size):
                    chunk = idx[start:start + self.options.batch_size]
                    for i, read in zip(chunk, self._read([images[i] for i in chunk], budget, [pending[i][1] for i in chunk])):
                        reads[i].append(read)
                        rungs, _, limit = plans[i]
                        rung, why = pending[i][0], self._doubt(read[0])
                        if why and rung + 1 < len(rungs) and len(reads[i]) < limit:
                            next_pending[i] = (rung + 1, why)
            pending = next_pending
        return [self._result(r) for r in reads]

    def _caps(self, vision_tokens: Sequence[int]) -> list[int]:
        if self.options.max_new_tokens:
            return [self.options.max_new_tokens] * len(vision_tokens)
        return [max_new_tokens(v, self.options.target_compression) for v in vision_tokens]

    def _read(self, images, budget: Budget, reasons: list[str]):
        t0 = time.perf_counter()
        prepared = self.backend.prepare(images, budget)
        gens = self.backend.generate(prepared, self._caps(prepared.vision_tokens))
        ms = (time.perf_counter() - t0) * 1000 / max(len(images), 1)
        texts = self.backend.batch_decode([g.token_ids for g in gens])
        out = []
        for g, text, reason in zip(gens, texts, reasons):
            lines = lines_with_confidence(g.token_ids, g.logprobs, self.backend.batch_decode, text)
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

    def _result(self, reads) -> OcrResult:
        clean = [r for r in reads if not self._doubt(r[0])]
        best = clean[-1] if clean else max(reads, key=lambda r: (not r[0].repetition, r[0].confidence or 0.0))
        best[0].accepted = True
        attempt, text, lines = best
        lows = [l.confidence for l in lines]
        return OcrResult(text=text, lines=lines, confidence=attempt.confidence,
                         confidence_min=min(lows) if lows else attempt.confidence, attempts=[r[0] for r in reads])
