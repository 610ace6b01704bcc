"""Length-aware batching (pure scheduling logic) and image preparation overlapped with generation."""
import threading
import time

import pytest
import torch

from folioscan.workers.engines.base import ImageHints
from folioscan.workers.engines.registry import VlmOptions
from folioscan.workers.engines.vlm.engine import VlmEngine
from folioscan.workers.engines.vlm.random_init import save_random_model
from folioscan.workers.engines.vlm.schedule import MARGIN, POOL_BATCHES, SLACK, input_order, plan, prefetched, token_cap
from folioscan.workers.engines.vlm.transformers_backend import TransformersBackend
from tests.helpers import text_page_image

def test_every_page_once_batches_never_mix_budgets_and_respect_the_batch_size():
    budgets = ["base", "tiled-2", "base", "tiled-2", "base", "base", "tiled-2", "base", "base"]
    est = [50, 400, 300, 20, 0, 120, 0, 310, 60]
    batches = plan(budgets, est, [2000] * 9, 3)
    assert sorted(i for b in batches for i in b.indices) == list(range(len(budgets)))
    for b in batches:
        assert 1 <= len(b.indices) <= 3 and len(b.caps) == len(b.indices)
        assert {budgets[i] for i in b.indices} == {b.group}


def test_pages_of_similar_expected_length_are_batched_together():
    est = [10, 900, 30, 880, 20, 910, 40, 870]  # input order alternates short and long pages
    batches = plan(["base"] * 8, est, [2000] * 8, 4)
    assert [sorted(est[i] for i in b.indices) for b in batches] == [[870, 880, 900, 910], [10, 20, 30, 40]]
    # the input-order baseline keeps the mix: every batch runs as long as a long page
    assert all(max(est[i] for i in b.indices) >= 870 for b in input_order(["base"] * 8, [2000] * 8, 4))


def test_each_batch_gets_its_own_cap_from_its_longest_estimate_with_margin():
    est = [10, 900, 30, 880, 20, 910, 40, 870]
    long_batch, short_batch = plan(["base"] * 8, est, [2000] * 8, 4)
    assert long_batch.caps == (int(910 * MARGIN) + SLACK,) * 4
    assert short_batch.caps == (int(40 * MARGIN) + SLACK,) * 4
    assert {c for b in input_order(["base"] * 8, [2000] * 8, 4) for c in b.caps} == {2000}


def test_the_upper_cap_bounds_every_page_and_unknown_lengths_get_it():
    batches = plan(["base"] * 5, [5000, 1900, 10, 0, 12], [2000, 2000, 3000, 2000, 20], 1)
    caps = {b.indices[0]: b.caps[0] for b in batches}
    assert caps[0] == 2000  # the estimate asks for more than the upper bound: bounded
    assert caps[1] == 2000  # 1900 x margin is over the bound as well
    assert caps[2] == int(10 * MARGIN) + SLACK
    assert caps[3] == 2000  # no estimate (segmentation off): the page's upper bound
    assert caps[4] == 20  # a page's own smaller bound (the user's cap) wins over the estimate
    assert token_cap(0, 77) == 77 and token_cap(10**6, 77) == 77
    [b] = plan(["base"] * 2, [10, 100], [3000, 50], 2)  # one batch cap, each page bounded by its own
    assert dict(zip(b.indices, b.caps)) == {1: 50, 0: int(100 * MARGIN) + SLACK}


def test_pages_without_an_estimate_are_not_mixed_with_estimated_ones():
    batches = plan(["base"] * 4, [0, 100, 0, 90], [2000] * 4, 2)
    assert [sorted(b.indices) for b in batches] == [[1, 3], [0, 2]]
    with pytest.raises(ValueError):
        plan(["base"], [1], [10], 0)


def test_the_ocr_stage_hands_a_vlm_a_pool_of_several_generate_batches():
    from folioscan.pipeline.config import JobConfig

    vlm = {"kind": "deepseek-ocr-2", "model": "m", "batch_size": 8}
    assert JobConfig(source="s", output="o", engine=vlm).pages_per_call == 8 * POOL_BATCHES
    assert JobConfig(source="s", output="o", engine=vlm, batch_size=12).pages_per_call == 12  # --batch-size wins
    assert JobConfig(source="s", output="o").pages_per_call == 4  # CPU engines as before


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


class RecordingBackend(TransformersBackend):
    """The real transformers backend on a tiny model, remembering what each generate call was given."""

    def __init__(self, options):
        super().__init__(options)
        self.calls = []

    def generate(self, prepared, max_new_tokens):
        gens = super().generate(prepared, max_new_tokens)
        self.calls.append((list(max_new_tokens), gens))
        return gens


@pytest.fixture(scope="module")
def tiny_ds2(tmp_path_factory):
    return save_random_model("deepseek-ocr-2", str(tmp_path_factory.mktemp("ds2")))


def _engine(path, **kw):
    opts = VlmOptions(**{**dict(kind="deepseek-ocr-2", model=path, device="cpu", budget="base", max_attempts=1,
                                no_repeat_ngram=0, batch_size=2), **kw})
    return VlmEngine(opts, backend=RecordingBackend(opts))


def test_the_engine_gives_each_generate_batch_its_own_cap_and_rereads_a_page_its_estimate_cut_short(tiny_ds2):
    image = text_page_image("Some text.", dpi=40)
    chars = [4, 15, 8, 14]  # expected tokens 1, 4, 2, 3: input order mixes short and long
    eng = _engine(tiny_ds2, max_new_tokens=40)
    head = eng.backend.model.get_output_embeddings()  # the end token never wins: every read runs to its cap
    head.bias = torch.nn.Parameter(torch.zeros(head.out_features))
    with torch.no_grad():
        head.bias[sorted(eng.backend.end_ids)] = -1e9
    results = eng.predict_batch([image] * 4, [ImageHints(est_chars=c) for c in chars])
    long_cap, short_cap = int(4 * MARGIN) + SLACK, int(2 * MARGIN) + SLACK
    assert [c for c, _ in eng.backend.calls] == [[long_cap] * 2, [short_cap] * 2, [40, 40], [40, 40]]
    for cap, gens in eng.backend.calls:
        assert [g.max_new_tokens for g in gens] == cap and gens[0].steps == max(cap)
    for r, cap in zip(results, [short_cap, long_cap, short_cap, long_cap]):
        first, second = r.attempts
        assert (first.reason, first.max_new_tokens, first.hit_token_cap, first.accepted) == ("initial", cap, True, False)
        assert (second.reason, second.max_new_tokens, second.output_tokens, second.accepted) == ("length-estimate", 40, 40, True)
        assert r.confidence == second.confidence  # the whole read is kept, not the cut one
    eng.backend.calls.clear()
    eng.options = eng.options.model_copy(update={"batching": "input"})
    results = eng.predict_batch([image] * 4, [ImageHints(est_chars=c) for c in chars])
    assert [c for c, _ in eng.backend.calls] == [[40, 40], [40, 40]]  # one cap, the user's: no re-read
    assert all(len(r.attempts) == 1 and r.attempts[0].hit_token_cap for r in results)
