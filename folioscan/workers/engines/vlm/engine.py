"""The VLM OCR engine: adaptive budget, batched reads, escalation to a larger budget on doubt.

A page is re-read one rung up the model's budget ladder when its confidence is under the
threshold, its output loops, it fills the token cap, or it is empty (blank pages never get
here). Every read is recorded as an attempt; the accepted one is the last clean read, or,
when none is clean, the most confident.
"""
from __future__ import annotations

import time
from collections import defaultdict
from typing import Optional, Sequence

import numpy as np

from folioscan.records import OcrAttempt, OcrResult
from folioscan.workers.engines.base import ImageHints
from folioscan.workers.engines.vlm.budgets import budget_index, choose_budget, ladder, max_new_tokens
from folioscan.workers.engines.vlm.confidence import geometric_mean_prob, lines_with_confidence
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
        self.backend = backend or _backend(options)
        self.version = self.backend.version
        self.ladder = ladder(options.kind)
        if options.budget != "adaptive":
            budget_index(options.kind, options.budget)  # fail on a bad name before any page is read

    def first_rung(self, hint: Optional[ImageHints]) -> int:
        if self.options.budget != "adaptive":
            return budget_index(self.options.kind, self.options.budget)
        return choose_budget(self.options.kind, hint.est_chars if hint else 0, self.options.target_compression)

    def predict_batch(self, images: Sequence[np.ndarray], hints: Optional[Sequence[ImageHints]] = None) -> list[OcrResult]:
        reads: list[list[tuple[OcrAttempt, str, list]]] = [[] for _ in images]
        pending = {i: (self.first_rung(hints[i] if hints else None), "initial") for i in range(len(images))}
        for _ in range(max(1, self.options.max_attempts)):
            by_rung: dict[int, list[int]] = defaultdict(list)
            for i, (rung, _) in pending.items():
                by_rung[rung].append(i)
            next_pending = {}
            for rung, idx in sorted(by_rung.items()):
                for start in range(0, len(idx), self.options.batch_size):
                    chunk = idx[start:start + self.options.batch_size]
                    for i, read in zip(chunk, self._read([images[i] for i in chunk], rung, [pending[i][1] for i in chunk])):
                        reads[i].append(read)
                        why = self._doubt(read[0])
                        if why and rung + 1 < len(self.ladder):
                            next_pending[i] = (rung + 1, why)
            pending = next_pending
            if not pending:
                break
        return [self._result(r) for r in reads]

    def _read(self, images, rung: int, reasons: list[str]):
        budget = self.ladder[rung]
        cap = self.options.max_new_tokens or max_new_tokens(budget, self.options.target_compression)
        t0 = time.perf_counter()
        gens = self.backend.generate(images, budget, cap)
        ms = (time.perf_counter() - t0) * 1000 / max(len(images), 1)
        texts = self.backend.batch_decode([g.token_ids for g in gens])
        out = []
        for g, text, reason in zip(gens, texts, reasons):
            lines = lines_with_confidence(g.token_ids, g.logprobs, self.backend.batch_decode, text)
            attempt = OcrAttempt(budget=budget.name, vision_tokens=g.vision_tokens, output_tokens=len(g.token_ids),
                                 confidence=geometric_mean_prob(g.logprobs), repetition=is_degenerate(g.token_ids),
                                 hit_token_cap=g.hit_token_cap, reason=reason, ms=ms)
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
