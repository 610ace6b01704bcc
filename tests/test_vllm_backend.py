"""The vLLM backend's request building and result mapping, against a FAKE vLLM (CPU, no vLLM).

vLLM cannot be installed on the CPU machines, so vLLM itself never runs here. The fake module
below stands in for it through VllmBackend's `vllm_module` seam (nothing is put in sys.modules):
its LLM records every generate call and answers each request deterministically from that
request alone (its image, its caps, its processor kwargs), as vLLM would return them: in request
order, the end token included in token_ids, one {token id: Logprob} dict per generated token,
the prompt's image placeholder expanded in prompt_token_ids. The tokenizer, processor, config and
end tokens are the real ones of the project's tiny random checkpoints.
"""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from folioscan.workers.engines.registry import VlmOptions
from folioscan.workers.engines.vlm.models import Budget, spec
from folioscan.workers.engines.vlm.random_init import save_random_model
from folioscan.workers.engines.vlm.vllm_backend import VllmBackend

KINDS = ["deepseek-ocr-2", "got-ocr2"]


# ---- the fake vLLM -------------------------------------------------------------------------

class Logprob:
    def __init__(self, logprob: float):
        self.logprob = logprob


class SamplingParams:
    """Only the arguments the backend may pass; anything else is a TypeError, as a typo would be."""

    def __init__(self, *, temperature, max_tokens, logprobs, stop_token_ids, extra_args):
        self.temperature, self.max_tokens, self.logprobs = temperature, max_tokens, logprobs
        self.stop_token_ids, self.extra_args = stop_token_ids, extra_args


class AdapterLogitsProcessor:
    pass


def text_length(image) -> int:
    """The fake model's text for a page: height // 50 tokens before its end token."""
    return image.height // 50


def text_token(image, k: int) -> int:
    return 100 + (image.width + 7 * k) % 150  # ordinary BPE ids of the tiny vocabularies, never special


def token_logprob(image, k: int) -> float:
    return -(image.width % 97 + k) / 100


def fake_vllm(kind: str, max_model_len: int = 8192, logprobs=True, drop_one=False):
    """A stand-in for the vllm package; `.llms` lists every LLM built from it."""
    from transformers import AutoConfig

    s = spec(kind)
    module = SimpleNamespace(__version__="0.0-fake", SamplingParams=SamplingParams, llms=[],
                             v1=SimpleNamespace(sample=SimpleNamespace(
                                 logits_processor=SimpleNamespace(AdapterLogitsProcessor=AdapterLogitsProcessor))))

    class LLM:
        def __init__(self, model, **kwargs):
            self.kwargs, self.calls = kwargs, []
            cfg = AutoConfig.from_pretrained(model)
            self.image_token_id = getattr(cfg, "image_token_id", None) or cfg.image_token_index
            self.llm_engine = SimpleNamespace(model_config=SimpleNamespace(hf_config=cfg, max_model_len=max_model_len))
            module.llms.append(self)

        def generate(self, requests, params, use_tqdm=True):
            assert not use_tqdm and isinstance(params, list) and len(params) == len(requests)
            self.calls.append((requests, params))
            outs = []
            for request, p in zip(requests, params):
                image = request["multi_modal_data"]["image"]
                end = p.stop_token_ids[0]
                full = [text_token(image, k) for k in range(text_length(image))] + [end]
                ids = full[:p.max_tokens]  # stops at its cap, or after its end token (kept, as vLLM does)
                lps = [{t: Logprob(token_logprob(image, k)), 3: Logprob(-9.0)} for k, t in enumerate(ids)]
                # the processor's image placeholder, expanded as the real processor would at this budget
                vision = s.vision_tokens(Budget("asked", 0, request["mm_processor_kwargs"]), image.height, image.width)
                prompt_ids = [11, 12] + [self.image_token_id] * vision + [13]
                outs.append(SimpleNamespace(prompt_token_ids=prompt_ids, outputs=[
                    SimpleNamespace(token_ids=tuple(ids), logprobs=lps if logprobs else None)]))
            return outs[:-1] if drop_one else outs

    module.LLM = LLM
    return module


# ---- fixtures ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ds2(tmp_path_factory):
    return save_random_model("deepseek-ocr-2", str(tmp_path_factory.mktemp("ds2")))


def backend(kind, path, fake=None, **kw):
    fake = fake or fake_vllm(kind)
    opts = VlmOptions(**{**dict(kind=kind, model=path, backend="vllm", batch_size=2), **kw})
    return VllmBackend(opts, vllm_module=fake), fake


def page(h: int, w: int) -> np.ndarray:
    return np.full((h, w), 200, np.uint8)


def expected(image, cap: int, end: int):
    """What the backend must make of the fake's answer: text cut before the end token, within the cap."""
    n = text_length(image)
    ids = [text_token(image, k) for k in range(min(n, cap))]
    return ids, [token_logprob(image, k) for k in range(len(ids))], n >= cap, min(n + 1, cap)


# ---- tests ---------------------------------------------------------------------------------

def test_a_round_of_several_budgets_goes_out_in_one_generate_call(ds2):
    kind = "deepseek-ocr-2"
    b, fake = backend(kind, ds2, fake_vllm(kind, max_model_len=1200))
    s = spec(kind)
    llm = fake.llms[0]
    assert llm.kwargs["logprobs_mode"] == "raw_logprobs" and llm.kwargs["max_num_seqs"] >= 256
    jobs = [(b.prepare([page(1100, 850), page(700, 500)], s.budget("base")), [40, 6]),
            (b.prepare([page(1400, 900), page(900, 2400), page(1000, 700)], s.budget("tiled-4")), 700),
            (b.prepare([page(1200, 800)], s.budget("tiled-2")), [900])]
    results = b.generate_many(jobs)

    assert len(llm.calls) == 1
    requests, params = llm.calls[0]
    assert len(requests) == len(params) == 6  # one request, one SamplingParams per page
    asked = [40, 6, 700, 700, 700, 900]
    prompt_lens = [n for prepared, _ in jobs for n in prepared.prompt_lens]
    caps = [min(c, 1200 - n) for c, n in zip(asked, prompt_lens)]
    assert [p.max_tokens for p in params] == caps
    assert caps[:2] == [40, 6] and all(c < a for c, a in zip(caps[2:], asked[2:]))  # the tiled ones are clamped
    assert [g.max_new_tokens for gens in results for g in gens] == caps
    assert [g.cap_clamped for gens in results for g in gens] == [c < a for c, a in zip(caps, asked)]
    for p in params:
        assert p.temperature == 0.0 and p.logprobs == 0 and p.stop_token_ids == sorted(b.end_ids)
        assert p.extra_args == {"no_repeat_ngram": 20, "no_repeat_window": 90}
    assert params[0].extra_args is not params[1].extra_args  # each request its own dict
    # each page carries its own batch's budget, however the round mixes them
    budgets = ["base"] * 2 + ["tiled-4"] * 3 + ["tiled-2"]
    assert [r["mm_processor_kwargs"] for r in requests] == [s.budget(n).processor_kwargs for n in budgets]
    assert all(r["prompt"] == s.prompt for r in requests)
    assert [r["multi_modal_data"]["image"] for r in requests] == [im for prepared, _ in jobs for im in prepared.inputs]


def test_no_guard_no_extra_args(ds2):
    b, fake = backend("deepseek-ocr-2", ds2, no_repeat_ngram=0)
    prepared = b.prepare([page(800, 600), page(600, 800)], spec("deepseek-ocr-2").budget("base"))
    b.generate_many([(prepared, 5), (prepared, [3, 4])])
    (_, params), = fake.llms[0].calls
    assert len(params) == 4 and all(p.extra_args is None for p in params)


def test_the_guard_processor_follows_extra_args(ds2):
    b, fake = backend("deepseek-ocr-2", ds2)
    guard_class, = fake.llms[0].kwargs["logits_processors"]
    assert issubclass(guard_class, AdapterLogitsProcessor)
    guard = object.__new__(guard_class)  # vLLM builds it with its own config; the rule needs none
    assert not guard.is_argmax_invariant()
    assert guard.new_req_logits_processor(SamplingParams(temperature=0.0, max_tokens=5, logprobs=0,
                                                         stop_token_ids=[1], extra_args=None)) is None
    on = guard.new_req_logits_processor(SamplingParams(temperature=0.0, max_tokens=5, logprobs=0, stop_token_ids=[1],
                                                       extra_args={"no_repeat_ngram": 2, "no_repeat_window": 90}))
    logits = on([4, 5, 6, 4], torch.zeros(10))  # 4 then 5 already occurred: 5 is banned
    assert logits[5] == float("-inf") and torch.isfinite(logits[torch.arange(10) != 5]).all()


def test_results_map_back_to_their_job_and_page(tiny):
    kind, path = tiny
    b, fake = backend(kind, path)
    s = spec(kind)
    images = [[page(1100, 850), page(300, 640), page(500, 700)], [page(900, 2400)], [page(700, 510), page(1000, 730)]]
    jobs = [(b.prepare(images[0], s.budget("base")), [40, 40, 4]),
            (b.prepare(images[1], s.budget("tiled-4")), 10),
            (b.prepare(images[2], s.budget("tiled-2")), [14, 21])]
    results = b.generate_many(jobs)
    assert len(fake.llms[0].calls) == 1
    assert [len(gens) for gens in results] == [3, 1, 2]
    end = min(b.end_ids)
    hits = []
    for (prepared, caps), gens in zip(jobs, results):
        caps = caps if isinstance(caps, list) else [caps] * len(prepared)
        for image, cap, vision, g in zip(prepared.inputs, caps, prepared.vision_tokens, gens):
            ids, lps, hit, steps = expected(image, cap, end)
            assert g.token_ids == ids and not set(g.token_ids) & b.end_ids  # cut before the end token
            assert g.logprobs == pytest.approx(lps)  # the chosen token's, not the decoy's
            assert g.hit_token_cap == hit and g.max_new_tokens == cap and not g.cap_clamped
            assert g.steps == steps  # this request's own output tokens, its end token included
            assert g.vision_tokens == vision  # counted from prompt_token_ids: as prepare() predicted
            hits.append(hit)
    assert True in hits and False in hits  # both kinds of ending occur in the round
    # a page whose text ends exactly at its cap ended by itself: not a cap hit
    exact = b.prepare([page(500, 600)], s.budget("base"))
    g, = b.generate(exact, text_length(exact.inputs[0]) + 1)
    assert not g.hit_token_cap and len(g.token_ids) == text_length(exact.inputs[0])


def test_generate_is_a_round_of_one(ds2):
    b, fake = backend("deepseek-ocr-2", ds2)
    prepared = b.prepare([page(1100, 850), page(300, 600)], spec("deepseek-ocr-2").budget("base"))
    one = b.generate(prepared, [12, 3])
    assert one == b.generate_many([(prepared, [12, 3])])[0]
    assert len(fake.llms[0].calls) == 2 and all(len(r) == 2 for r, _ in fake.llms[0].calls)
    assert b.generate_many([]) == [] and len(fake.llms[0].calls) == 2  # nothing to read: no call


def test_missing_logprobs_raise(ds2):
    b, _ = backend("deepseek-ocr-2", ds2, fake_vllm("deepseek-ocr-2", logprobs=False))
    prepared = b.prepare([page(800, 600)], spec("deepseek-ocr-2").budget("base"))
    with pytest.raises(RuntimeError, match="no log-probs"):
        b.generate(prepared, 8)


def test_an_output_count_that_does_not_match_raises(ds2):
    b, _ = backend("deepseek-ocr-2", ds2, fake_vllm("deepseek-ocr-2", drop_one=True))
    prepared = b.prepare([page(800, 600), page(700, 600)], spec("deepseek-ocr-2").budget("base"))
    with pytest.raises(RuntimeError, match="1 outputs for 2 requests"):
        b.generate(prepared, 8)


def test_the_engine_sends_each_round_of_its_pool_in_one_call(ds2):
    """Through VlmEngine: a pool cut into several generate batches (adaptive budgets, batch size 2)
    reaches the fake vLLM as one generate call per round, every page once per round."""
    from folioscan.workers.engines.base import ImageHints
    from folioscan.workers.engines.vlm.engine import VlmEngine

    kind = "deepseek-ocr-2"
    b, fake = backend(kind, ds2, batch_size=2)
    opts = VlmOptions(kind=kind, model=ds2, backend="vllm", batch_size=2, max_attempts=2, escalate_below=0.5)
    engine = VlmEngine(opts, backend=b)
    pages = [page(1100, 850), page(700, 500), page(1400, 900), page(1000, 700), page(1200, 800)]
    hints = [ImageHints(est_chars=c) for c in (3000, 200, 9000, 1500, 500)]
    results = engine.predict_batch(pages, hints)
    llm = fake.llms[0]
    # round 1: all five pages in one call (three batches of at most 2); round 2: the re-reads
    # (the fake's log-probs give every page a confidence under 0.5, so each climbs one rung once)
    assert [len(requests) for requests, _ in llm.calls][0] == 5
    assert len(llm.calls) == 2 and len(llm.calls[1][0]) == sum(len(r.attempts) == 2 for r in results)
    assert all(1 <= len(r.attempts) <= 2 and sum(a.accepted for a in r.attempts) == 1 for r in results)
