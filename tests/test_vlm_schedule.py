"""Length-aware batching (pure scheduling logic) and image preparation overlapped with generation."""
import threading
import time

import pytest

from folioscan.workers.engines.vlm.schedule import MARGIN, SLACK, input_order, plan, prefetched, token_cap

UPPER = {0: 2000, 1: 3000}


def upper(rung):
    return UPPER[rung]


def test_every_page_once_batches_never_mix_budgets_and_respect_the_batch_size():
    rungs = [0, 1, 0, 1, 0, 0, 1, 0, 0]
    est = [50, 400, 300, 20, 0, 120, 0, 310, 60]
    batches = plan(rungs, est, 3, upper)
    assert sorted(i for b in batches for i in b.indices) == list(range(len(rungs)))
    for b in batches:
        assert 1 <= len(b.indices) <= 3
        assert {rungs[i] for i in b.indices} == {b.rung}


def test_pages_of_similar_expected_length_are_batched_together():
    est = [10, 900, 30, 880, 20, 910, 40, 870]  # input order alternates short and long pages
    batches = plan([0] * 8, est, 4, upper)
    assert [sorted(est[i] for i in b.indices) for b in batches] == [[870, 880, 900, 910], [10, 20, 30, 40]]
    # the input-order baseline keeps the mix: every batch runs as long as a long page
    assert all(max(est[i] for i in b.indices) >= 870 for b in input_order([0] * 8, 4, upper))


def test_each_batch_gets_its_own_cap_from_its_longest_estimate_with_margin():
    est = [10, 900, 30, 880, 20, 910, 40, 870]
    long_batch, short_batch = plan([0] * 8, est, 4, upper)
    assert long_batch.max_new_tokens == int(910 * MARGIN) + SLACK and long_batch.estimated
    assert short_batch.max_new_tokens == int(40 * MARGIN) + SLACK and short_batch.estimated
    assert {b.max_new_tokens for b in input_order([0] * 8, 4, upper)} == {2000}


def test_the_users_cap_is_an_upper_bound_and_unknown_lengths_get_it():
    batches = plan([0, 0, 1, 0], [5000, 1900, 10, 0], 1, upper)
    caps = {b.indices[0]: (b.max_new_tokens, b.estimated) for b in batches}
    assert caps[0] == (2000, False)  # the estimate asks for more than the upper bound: bounded
    assert caps[1] == (2000, False)  # 1900 x margin is over the bound as well
    assert caps[2] == (int(10 * MARGIN) + SLACK, True)
    assert caps[3] == (2000, False)  # no estimate (segmentation off): the upper bound, batched apart
    assert token_cap(0, 77) == 77 and token_cap(10**6, 77) == 77


def test_pages_without_an_estimate_are_not_mixed_with_estimated_ones():
    batches = plan([0] * 4, [0, 100, 0, 90], 2, upper)
    assert [sorted(b.indices) for b in batches] == [[1, 3], [0, 2]]
    with pytest.raises(ValueError):
        plan([0], [1], 0, upper)


def test_prefetch_prepares_the_next_batch_while_the_current_one_is_consumed():
    started = {k: threading.Event() for k in range(3)}

    def prepare(k):
        started[k].set()
        return k * 10

    seen = []
    for k, prepared in prefetched([0, 1, 2], prepare):
        if k + 1 < 3:  # the consumer ("generate") of batch k sees batch k+1 already being prepared
            assert started[k + 1].wait(timeout=5), f"batch {k + 1} was not prepared during batch {k}"
        seen.append((k, prepared))
    assert seen == [(0, 0), (1, 10), (2, 20)]


def test_prefetch_overlaps_wall_time_and_raises_a_preparation_error_in_place():
    def prepare(k):
        time.sleep(0.2)
        if k == 3:
            raise RuntimeError("bad image")
        return k

    t0 = time.perf_counter()
    for _ in prefetched([0, 1, 2], prepare):
        time.sleep(0.2)  # "generation"
    assert time.perf_counter() - t0 < 0.2 * 6 * 0.8  # serial would be 1.2 s; overlapped ~0.8 s
    got = []
    with pytest.raises(RuntimeError, match="bad image"):
        for k, _ in prefetched([2, 3], prepare):
            got.append(k)
    assert got == [2]
