"""Length-aware batching for the VLM engine, and image preparation overlapped with generation.

A batched generate call runs until its longest sequence ends, so pages that finish early hold
dead decode slots. The engine therefore sorts the pool of pages it is given (the OCR stage's
batch) by expected output length within each budget and cuts generate batches from that order;
each batch gets its own token cap from its longest estimate with a margin, never above the
user's cap. A page that reaches a cap set by this estimate (not by the user) is read again at
the full cap: an estimate may cost time, never text.

Measured on old_books (178 pages, `true_over_estimated_tokens` in bench/vlm_throughput.py's
JSON): true over estimated output length ranges 0.39-1.53 (median 0.975), hence MARGIN and SLACK.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Hashable, Iterator, Sequence, TypeVar

MARGIN = 1.6  # cap = longest estimate x MARGIN + SLACK: above the worst underestimate measured (1.53x)
SLACK = 32  # tokens; short pages' estimates are the least reliable in relative terms
POOL_BATCHES = 4  # pages per engine call, in generate batches: a pool to sort (the job's default --batch-size)


@dataclass(frozen=True)
class Batch:
    group: Hashable  # the pages' budget: a batch never mixes budgets
    indices: tuple[int, ...]  # into the caller's list of pages
    caps: tuple[int, ...]  # per page: the batch's cap from its longest estimate, bounded by the page's own


def token_cap(est_tokens: int, upper: int, margin: float = MARGIN, slack: int = SLACK) -> int:
    """A cap from an expected length; `upper` (the user's cap, or the budget's) bounds it."""
    if est_tokens <= 0:
        return upper
    return max(1, min(upper, int(est_tokens * margin) + slack))


def plan(groups: Sequence[Hashable], est_tokens: Sequence[int], upper: Sequence[int], batch_size: int,
         margin: float = MARGIN, slack: int = SLACK) -> list[Batch]:
    """Generate batches of at most `batch_size` pages of one group (budget) and similar expected length.

    Pages without an estimate (0: segmentation off) are batched apart, in input order, at their
    `upper` cap. Within a group the longest pages go first, so a too-small cap shows up early.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, not {batch_size}")
    batches: list[Batch] = []
    for group in dict.fromkeys(groups):
        mine = [i for i, g in enumerate(groups) if g == group]
        known = sorted((i for i in mine if est_tokens[i] > 0), key=lambda i: -est_tokens[i])
        unknown = [i for i in mine if est_tokens[i] <= 0]
        for pages in (known, unknown):
            for start in range(0, len(pages), batch_size):
                chunk = tuple(pages[start:start + batch_size])
                longest = max(est_tokens[i] for i in chunk)
                batches.append(Batch(group, chunk, tuple(token_cap(longest, upper[i], margin, slack) for i in chunk)))
    return batches


def input_order(groups: Sequence[Hashable], upper: Sequence[int], batch_size: int) -> list[Batch]:
    """The baseline: consecutive pages of one group, each at its upper cap (the engine before scheduling)."""
    batches = []
    for group in dict.fromkeys(groups):
        mine = [i for i, g in enumerate(groups) if g == group]
        for start in range(0, len(mine), batch_size):
            chunk = tuple(mine[start:start + batch_size])
            batches.append(Batch(group, chunk, tuple(upper[i] for i in chunk)))
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
