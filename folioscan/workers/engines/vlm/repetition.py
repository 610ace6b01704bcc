"""Repetition guard: a windowed no-repeat-n-gram logits processor during generation (as DeepSeek-OCR
runs it: n=20..30 over the last 50..90 tokens) and a loop detector on the output afterwards."""
from __future__ import annotations

from typing import Sequence

import torch


class WindowedNoRepeatNGram:
    """Bans a token when it would repeat an n-gram that occurred in the last `window` generated tokens."""

    def __init__(self, ngram: int, window: int, prompt_len: int, allowed: Sequence[int] = ()):
        self.n, self.window, self.prompt_len, self.allowed = ngram, window, prompt_len, set(allowed)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        gen = input_ids[:, self.prompt_len:][:, -self.window:]
        if gen.shape[1] < self.n:
            return scores
        grams = gen.unfold(1, self.n, 1)  # batch x positions x n, all on the device
        prefix = gen[:, gen.shape[1] - self.n + 1:]
        rows, pos = (grams[:, :, :-1] == prefix[:, None, :]).all(dim=-1).nonzero(as_tuple=True)
        banned = grams[rows, pos, -1]
        if self.allowed:
            keep = ~torch.isin(banned, torch.tensor(sorted(self.allowed), device=banned.device))
            rows, banned = rows[keep], banned[keep]
        scores[rows, banned] = float("-inf")
        return scores


def repeating_tail(tokens: Sequence[int], max_period: int = 200, min_span: int = 40, min_repeats: int = 3) -> int:
    """Period of a loop the output ends in (the same run of tokens over and over), or 0."""
    n = len(tokens)
    for p in range(1, min(max_period, n // min_repeats) + 1):
        span = max(min_span, min_repeats * p)
        if span > n:
            continue
        tail = tokens[n - span:]
        if all(tail[i] == tail[i - p] for i in range(p, span)):
            return p
    return 0


def repeated_ngram_share(tokens: Sequence[int], n: int = 8) -> float:
    """Share of n-grams that occurred before: ~0 for prose, near 1 for a degenerate loop anywhere."""
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def is_degenerate(tokens: Sequence[int], share_limit: float = 0.35) -> bool:
    return bool(repeating_tail(tokens)) or repeated_ngram_share(tokens) > share_limit
