"""Repetition guard: a windowed no-repeat-n-gram logits processor during generation (as DeepSeek-OCR
runs it: n=20..30 over the last 50..90 tokens) and a loop detector on the output afterwards.

The guard runs every decode step, so it never asks the device anything (no `.nonzero()`, no
`.item()`, no boolean indexing): which tokens to ban is worked out as fixed-shape tensors and
written with one scatter. The loop detector runs once per page on the host, vectorised in numpy.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def ban_repeats_(scores: torch.Tensor, gen: torch.LongTensor, n: int, allowed: Sequence[int] = ()) -> torch.Tensor:
    """Set to -inf, in place, each row's scores of the tokens that would complete an n-gram already
    present in `gen` (batch x generated tokens, the window only). The one rule both backends apply.

    Every position p of the window proposes its next token t[p + n - 1] and whether the n-1 tokens
    before it equal the row's last n-1 tokens (`hit`). A token proposed at several positions must
    be written one value, so a token is banned where any of its positions hits; the scatter then
    writes either -inf or the score the token already has. Shapes only: no host sync."""
    if gen.shape[1] < n:
        return scores
    grams = gen.unfold(1, n, 1)  # batch x positions x n
    prefix = gen[:, gen.shape[1] - n + 1:]
    hit = (grams[:, :, :-1] == prefix[:, None, :]).all(dim=-1)  # batch x positions
    nxt = grams[:, :, -1]  # batch x positions: the token each position proposes
    same = nxt[:, :, None] == nxt[:, None, :]  # batch x positions x positions
    banned = (same & hit[:, None, :]).any(dim=-1)
    if len(allowed):
        banned &= ~torch.isin(nxt, torch.tensor(sorted(allowed), device=nxt.device))
    current = scores.gather(1, nxt)
    scores.scatter_(1, nxt, torch.where(banned, torch.full_like(current, float("-inf")), current))
    return scores


class WindowedNoRepeatNGram:
    """Bans a token when it would repeat an n-gram that occurred in the last `window` generated tokens.

    A transformers logits processor (`__call__` on the batch). It edits the scores in place, so it
    must run after the log-prob recorder (decoding.ChosenTokenLogprobs), which keeps its own copy."""

    def __init__(self, ngram: int, window: int, prompt_len: int, allowed: Sequence[int] = ()):
        self.n, self.window, self.prompt_len, self.allowed = ngram, window, prompt_len, tuple(sorted(set(allowed)))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return ban_repeats_(scores, input_ids[:, self.prompt_len:][:, -self.window:], self.n, self.allowed)

    def for_request(self):
        """The same rule as a per-request callable `(output_token_ids, logits) -> logits` (vLLM)."""

        def guard(output_ids: Sequence[int], logits: torch.Tensor) -> torch.Tensor:
            gen = torch.tensor([list(output_ids)[-self.window:]], dtype=torch.long, device=logits.device)
            return ban_repeats_(logits[None], gen, self.n, self.allowed)[0]

        return guard


def repeating_tail(tokens: Sequence[int], max_period: int = 200, min_span: int = 40, min_repeats: int = 3) -> int:
    """Period of a loop the output ends in (the same run of tokens over and over), or 0: the
    smallest p such that the last max(min_span, min_repeats x p) tokens repeat with period p."""
    t = np.asarray(tokens, dtype=np.int64)
    n = len(t)
    top = min(max_period, n // min_repeats)
    if top < 1:
        return 0
    rev = t[::-1]
    periods = np.arange(1, top + 1)
    # cheap filter first: a loop of period p makes the last 4 tokens equal the 4 before them by p
    head = min(4, n - top)
    if head > 0:
        k = np.arange(head)
        periods = periods[(rev[k][None, :] == rev[periods[:, None] + k[None, :]]).all(axis=1)]
    if not len(periods):
        return 0
    spans = np.maximum(min_span, min_repeats * periods)
    keep = spans <= n
    periods, spans = periods[keep], spans[keep]
    if not len(periods):
        return 0
    width = int((spans - periods).max())
    j = np.arange(width)
    far = np.minimum(periods[:, None] + j[None, :], n - 1)  # clipped where not needed
    # row p: does the token j from the end equal the one p further back, for every j < span_p - p
    match = rev[np.minimum(j, n - 1)][None, :] == rev[far]
    needed = j[None, :] < (spans - periods)[:, None]
    ok = (match | ~needed).all(axis=1)
    return int(periods[ok][0]) if ok.any() else 0


def repeated_ngram_share(tokens: Sequence[int], n: int = 8) -> float:
    """Share of n-grams that occurred before: ~0 for prose, near 1 for a degenerate loop anywhere."""
    t = np.asarray(tokens, dtype=np.int64)
    if len(t) < n:
        return 0.0
    grams = np.lib.stride_tricks.sliding_window_view(t, n)
    # one 64-bit polynomial hash per n-gram (wrapping arithmetic): a collision, vanishingly rare, would count a new n-gram as seen
    weights = np.power(np.int64(1_000_003), np.arange(n, dtype=np.int64))
    with np.errstate(over="ignore"):
        keys = (grams * weights).sum(axis=1)
    return 1.0 - len(np.unique(keys)) / len(grams)


def is_degenerate(tokens: Sequence[int], share_limit: float = 0.35) -> bool:
    return bool(repeating_tail(tokens)) or repeated_ngram_share(tokens) > share_limit
