"""Repetition guard: a windowed no-repeat-n-gram logits processor during generation (as DeepSeek-OCR
runs it: n=20..30 over the last 50..90 tokens) and a loop detector on the output afterwards."""
from __future__ import annotations

from typing import Sequence

import torch


def banned_tokens(gen: torch.LongTensor, n: int, allowed: Sequence[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, tokens) that would complete an n-gram already present in `gen` (batch x generated
    tokens, the window only). The one rule both backends apply; runs on the device, no sync."""
    if gen.shape[1] < n:
        empty = gen.new_empty(0)
        return empty, empty
    grams = gen.unfold(1, n, 1)  # batch x positions x n
    prefix = gen[:, gen.shape[1] - n + 1:]
    rows, pos = (grams[:, :, :-1] == prefix[:, None, :]).all(dim=-1).nonzero(as_tuple=True)
    banned = grams[rows, pos, -1]
    if len(allowed):
        keep = ~torch.isin(banned, torch.tensor(sorted(allowed), device=banned.device))
        rows, banned = rows[keep], banned[keep]
    return rows, banned


class WindowedNoRepeatNGram:
    """Bans a token when it would repeat an n-gram that occurred in the last `window` generated tokens.

    A transformers logits processor (`__call__` on the batch). It edits the scores in place, so it
    must run after the log-prob recorder (decoding.ChosenTokenLogprobs), which keeps its own copy."""

    def __init__(self, ngram: int, window: int, prompt_len: int, allowed: Sequence[int] = ()):
        self.n, self.window, self.prompt_len, self.allowed = ngram, window, prompt_len, tuple(sorted(set(allowed)))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        rows, banned = banned_tokens(input_ids[:, self.prompt_len:][:, -self.window:], self.n, self.allowed)
        scores[rows, banned] = float("-inf")
        return scores

    def for_request(self):
        """The same rule as a per-request callable `(output_token_ids, logits) -> logits` (vLLM)."""

        def guard(output_ids: Sequence[int], logits: torch.Tensor) -> torch.Tensor:
            gen = torch.tensor([list(output_ids)[-self.window:]], dtype=torch.long, device=logits.device)
            _, banned = banned_tokens(gen, self.n, self.allowed)
            logits[banned] = float("-inf")
            return logits

        return guard


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
