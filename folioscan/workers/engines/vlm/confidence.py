"""Confidence from the model's own token log-probabilities, per line and per page.

Page confidence is the geometric mean token probability (exp of the mean log-prob); the page
minimum is the least confident line. Log-probs come from the raw logits, before the
repetition processor, so a token the guard forced is scored as the model saw it.

Lines are told apart by the newlines each token decodes to. A token's newline count is a fact of
the vocabulary, so it is decoded once per token id (`NewlineCounts`, one batch_decode call for a
whole generate batch's unseen ids) and the split is one numpy pass per page.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import numpy as np

from folioscan.records import OcrLine


def geometric_mean_prob(logprobs: Sequence[float]) -> float | None:
    return math.exp(sum(logprobs) / len(logprobs)) if logprobs else None


class NewlineCounts:
    """Newlines in each token's decoded text, remembered per token id."""

    def __init__(self, batch_decode: Callable[[list[list[int]]], list[str]]):
        self.batch_decode = batch_decode
        self.known: dict[int, int] = {}

    def learn(self, ids: Iterable[int]) -> None:
        new = sorted({int(t) for t in ids} - self.known.keys())
        if new:
            self.known.update(zip(new, (p.count("\n") for p in self.batch_decode([[t] for t in new]))))

    def __call__(self, ids: Sequence[int]) -> np.ndarray:
        self.learn(ids)
        return np.fromiter((self.known[int(t)] for t in ids), dtype=np.int64, count=len(ids))


def lines_with_confidence(token_ids: Sequence[int], logprobs: Sequence[float], newlines: NewlineCounts,
                          text: str) -> list[OcrLine]:
    """Score each line of `text` by its own tokens. A newline is one byte, so it never straddles
    two tokens: a token belongs to the line it starts in, and its newlines open the next ones."""
    pieces = text.split("\n")
    if not len(token_ids):
        return [OcrLine(p.strip(), 0.0, ()) for p in pieces if p.strip()]
    line = np.concatenate([[0], np.cumsum(newlines(token_ids))[:-1]])  # line each token starts in
    lps = np.asarray(logprobs, dtype=np.float64)
    sums = np.bincount(line, weights=lps, minlength=len(pieces))
    counts = np.bincount(line, minlength=len(pieces))
    out = []
    for k, piece in enumerate(pieces):
        if piece.strip():
            mean = sums[k] / counts[k] if k < len(counts) and counts[k] else None
            out.append(OcrLine(piece.strip(), round(math.exp(mean), 4) if mean is not None else 0.0, ()))
    return out
