"""Length-aware batching for the VLM engine, and image preparation overlapped with generation.

A batched generate call runs until its longest sequence ends, so pages that finish early hold
dead decode slots. The engine therefore sorts the pool of pages it is given (the OCR stage's
batch) by expected output length within each budget and cuts generate batches from that order;
each batch gets its own token cap from its longest estimate with a margin, never above the
user's cap. A page that reaches a cap set by this estimate (not by the user) is read again at
the full cap: an estimate may cost time, never text.

Measured on old_books (178 pages; `bench/vlm_throughput.py`): ground-truth characters over the
prep stage's `est_chars` range 0.39-1.52 (median 0.97), hence MARGIN and SLACK below.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence, TypeVar

MARGIN = 1.6  # cap = longest estimate x MARGIN + SLACK: above the worst underestimate measured (1.52x)
SLACK = 32  # tokens; short pages' estimates are the least reliable in relative terms


@dataclass(frozen=True)
class Batch:
    rung: int  # index of the budget on the model's ladder
    indices: tuple[int, ...]  # into the caller's list of pages
    max_new_tokens: int
    estimated: bool  # the cap comes from length estimates (False: the upper bound, no estimate known)


def token_cap(est_tokens: int, upper: int, margin: float = MARGIN, slack: int = SLACK) -> int:
    """A batch's cap from its longest estimate; `upper` (the user's or the budget's cap) bounds it."""
    if est_tokens <= 0:
        return upper
    return max(1, min(upper, int(est_tokens * margin) + slack))


def plan(rungs: Sequence[int], est_tokens: Sequence[int], batch_size: int, upper: Callable[[int], int],
         margin: float = MARGIN, slack: int = SLACK) -> list[Batch]:
    """Generate batches of at most `batch_size` pages of one budget and similar expected length.

    Pages without an estimate (0: segmentation off) are batched apart, in input order, at `upper`.
    Within a budget the longest pages go first, so a too-small cap shows up early.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, not {batch_size}")
    batches: list[Batch] = []
    for rung in sorted(set(rungs)):
        mine = [i for i, r in enumerate(rungs) if r == rung]
        known = sorted((i for i in mine if est_tokens[i] > 0), key=lambda i: -est_tokens[i])
        unknown = [i for i in mine if est_tokens[i] <= 0]
        for group, estimated in ((known, True), (unknown, False)):
            for start in range(0, len(group), batch_size):
                chunk = tuple(group[start:start + batch_size])
                longest = max(est_tokens[i] for i in chunk) if estimated else 0
                cap = token_cap(longest, upper(rung), margin, slack)
                batches.append(Batch(rung, chunk, cap, estimated and cap < upper(rung)))
    return batches


def input_order(rungs: Sequence[int], batch_size: int, upper: Callable[[int], int]) -> list[Batch]:
    """The baseline: consecutive pages of one budget, one cap for all (what the engine did before)."""
    batches = []
    for rung in sorted(set(rungs)):
        mine = [i for i, r in enumerate(rungs) if r == rung]
        batches += [Batch(rung, tuple(mine[s:s + batch_size]), upper(rung), False) for s in range(0, len(mine), batch_size)]
    return batches


T = TypeVar("T")
P = TypeVar("P")


def prefetched(items: Sequence[T], prepare: Callable[[T], P]) -> Iterator[tuple[T, P]]:
    """Yield (item, prepare(item)) in order while a worker thread already prepares the next item.

    Image preparation (PIL resizing, normalisation) then runs while the previous batch generates;
    PIL and torch both release the GIL in their heavy loops. An error in preparing an item is
    raised when that item is reached, as if it had been prepared in line.
    """
    if not items:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vlm-prepare") as pool:
        ahead = pool.submit(prepare, items[0])
        for k, item in enumerate(items):
            ready = ahead.result()
            if k + 1 < len(items):
                ahead = pool.submit(prepare, items[k + 1])
            yield item, ready
