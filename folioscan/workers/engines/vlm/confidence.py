"""Confidence from the model's own token log-probabilities, per line and per page.

Page confidence is the geometric mean token probability (exp of the mean log-prob); the page
minimum is the least confident line. Log-probs come from the raw logits, before the
repetition processor, so a token the guard forced is scored as the model saw it.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

from folioscan.records import OcrLine


def geometric_mean_prob(logprobs: Sequence[float]) -> float | None:
    return math.exp(sum(logprobs) / len(logprobs)) if logprobs else None


def lines_with_confidence(token_ids: Sequence[int], logprobs: Sequence[float],
                          batch_decode: Callable[[list[list[int]]], list[str]], text: str) -> list[OcrLine]:
    """Score each line of `text` by its own tokens. A newline is one byte, so it never straddles
    two tokens: counting newlines in the per-token decodes splits the log-probs line by line."""
    pieces = batch_decode([[t] for t in token_ids])
    per_line: list[list[float]] = [[]]
    for piece, lp in zip(pieces, logprobs):
        per_line[-1].append(lp)
        per_line.extend([] for _ in range(piece.count("\n")))
    lines: list[OcrLine] = []
    for line, lps in zip(text.split("\n"), per_line):
        _close(lines, line, lps)
    return lines


def _close(lines: list[OcrLine], line: str, lps: list[float]) -> None:
    if line.strip():
        lines.append(OcrLine(line.strip(), round(geometric_mean_prob(lps) or 0.0, 4), ()))
