"""The VLM engines' real code path on tiny randomly initialised models (CPU, no downloads).

These models read noise: the tests check budgets, token counts, batching, log-prob confidence,
end tokens, escalation and the repetition guard, never accuracy.
"""
import math

import numpy as np
import pytest
import torch

from folioscan.workers.engines.base import ImageHints
from folioscan.workers.engines.registry import VlmOptions, build_engine
from folioscan.workers.engines.vlm.budgets import BUDGETS, choose_budget, choose_rung, max_new_tokens, page_ladder
from folioscan.workers.engines.vlm.models import MODELS, spec
from folioscan.workers.engines.vlm.random_init import save_random_model
from folioscan.workers.engines.vlm.repetition import WindowedNoRepeatNGram, is_degenerate, repeating_tail
from tests.helpers import text_page_image

KINDS = ["deepseek-ocr-2", "got-ocr2"]


@pytest.fixture(scope="module")
def pages():
    return [text_page_image("Chapter one. " * 30, dpi=100), text_page_image("A short page with one line of text.", dpi=100)]


def engine(kind, path, **kw):
    opts = dict(kind=kind, model=path, device="cpu", max_new_tokens=12, batch_size=2)
    return build_engine(VlmOptions(**{**opts, **kw}))


def teacher_forced_logprobs(backend, image, budget, token_ids):
    """Log-probs of `token_ids` after the prompt, from one plain forward pass (no generate, no guard)."""
    inputs = backend.prepare([image], budget).inputs
    ids = torch.cat([inputs["input_ids"], torch.tensor([token_ids])], dim=1)
    extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    with torch.no_grad():
        logits = backend.model(input_ids=ids, attention_mask=torch.ones_like(ids), **extra).logits[0]
    n = inputs["input_ids"].shape[1]
    steps = torch.log_softmax(logits[n - 1: n - 1 + len(token_ids)].float(), -1)
    return steps.gather(-1, torch.tensor(token_ids)[:, None]).squeeze(-1).numpy()


# ---- budgets true to the models ------------------------------------------------------------

SHAPES = [(1100, 850), (1000, 700), (700, 500), (900, 2400)]  # h x w: book pages, square, small, spread


@pytest.mark.parametrize("kind", KINDS)
def test_the_processor_emits_the_vision_tokens_the_ladder_predicts(tmp_path, kind):
    eng = engine(kind, save_random_model(kind, str(tmp_path)))
    s = spec(kind)
    for h, w in SHAPES:
        image = np.full((h, w), 200, np.uint8)
        for budget in s.budgets + s.experimental:
            [n] = eng.backend.prepare([image], budget).vision_tokens
            assert n == s.vision_tokens(budget, h, w), (kind, budget.name, h, w)


def test_published_modes_only_in_the_ladder():
    ds = {b.name: b.vision_tokens for b in BUDGETS["deepseek-ocr-2"]}
    assert ds == {"base": 257, "tiled-2": 545, "tiled-4": 833, "tiled-6": 1121}  # 256 + 144 x tiles + separator
    assert [b.name for b in MODELS["deepseek-ocr-2"].experimental] == ["experimental-768"]
    assert {b.name: b.vision_tokens for b in BUDGETS["got-ocr2"]} == {"base": 256, "tiled-2": 768, "tiled-4": 1280,
                                                                       "tiled-6": 1792}  # 256 per crop + thumbnail


def test_a_page_ladder_never_repeats_an_input():
    # a 0.7 portrait page: DeepSeek-OCR-2 cuts the same 1x2 grid for tiled-2 and tiled-4
    assert [(r.budget.name, r.vision_tokens) for r in page_ladder("deepseek-ocr-2", 1000, 700)] == [
        ("base", 257), ("tiled-2", 545), ("tiled-6", 1121)]
    # a letter page at 100 dpi: GOT-OCR2's tiled-2 and tiled-4 pick the single 1x1 crop, i.e. the base input
    assert [(r.budget.name, r.vision_tokens) for r in page_ladder("got-ocr2", 1100, 850)] == [("base", 256), ("tiled-6", 1792)]
    # a page that fits in one 768-px tile gets no tiles at all: one rung
    assert [r.budget.name for r in page_ladder("deepseek-ocr-2", 700, 500)] == ["base"]
    for kind in KINDS:
        for h, w in SHAPES:
            tokens = [r.vision_tokens for r in page_ladder(kind, h, w)]
            assert tokens == sorted(set(tokens))


def test_adaptive_budget_follows_text_density_on_the_pages_own_ladder():
    rungs = page_ladder("deepseek-ocr-2", 1000, 700)  # base 257, tiled-2 545, tiled-6 1121
    names = [r.budget.name for r in rungs]
    assert names[choose_rung(rungs, 800)] == "base"  # ~220 text tokens / 257 vision
    assert names[choose_rung(rungs, 15000)] == "tiled-2"  # ~4170 / 545
    assert names[choose_rung(rungs, 25000)] == "tiled-6"  # tiled-4 would be the same input as tiled-2
    assert names[choose_rung(rungs, 0)] == "tiled-2"  # no estimate: a middling read
    assert BUDGETS["deepseek-ocr-2"][choose_budget("deepseek-ocr-2", 800)].name == "base"  # 'small' is gone
    assert max_new_tokens(257, 10.0) == int(257 * 15)


def test_escalation_never_rereads_an_identical_input(tmp_path):
    eng = engine("deepseek-ocr-2", save_random_model("deepseek-ocr-2", str(tmp_path)), budget="base",
                 escalate_below=1.01, max_attempts=3, max_new_tokens=3, no_repeat_ngram=0)  # never confident
    [r] = eng.predict_batch([np.full((1000, 700), 200, np.uint8)])
    assert [a.vision_tokens for a in r.attempts] == [257, 545, 1121]
    assert [a.budget for a in r.attempts] == ["base", "tiled-2", "tiled-6"]


def test_flip_retry_reads_once_at_the_accepted_budget(tmp_path, pages):
    from folioscan.records import PageWork
    from folioscan.workers.ocr_stage import OcrStage

    path = save_random_model("deepseek-ocr-2", str(tmp_path))
    stage = OcrStage(VlmOptions(kind="deepseek-ocr-2", model=path, device="cpu", budget="base", max_new_tokens=3,
                                escalate_below=1.01, max_attempts=2, no_repeat_ngram=0), flip_retry_below=1.01)
    [r] = stage([PageWork("d", "u", 0, 1, image=pages[1])])
    first, turned = r.ocr.attempts[:2], r.ocr.attempts[2:]
    assert [a.reason.split("@")[1] for a in first] == ["0"] * 2 and first[0].budget != first[1].budget
    [again] = turned
    accepted_first = max(first, key=lambda a: a.confidence).budget  # none clean: the most confident read
    assert again.budget == accepted_first and again.reason.endswith("@180")


def test_the_output_cap_is_clamped_to_the_models_context(tmp_path, pages):
    eng = engine("deepseek-ocr-2", save_random_model("deepseek-ocr-2", str(tmp_path), max_positions=300),
                 budget="base", max_attempts=1, max_new_tokens=200, no_repeat_ngram=0)
    prompt = eng.backend.prepare([pages[1]], spec("deepseek-ocr-2").budget("base")).prompt_lens[0]
    assert prompt > 257
    [r] = eng.predict_batch([pages[1]])
    [a] = r.attempts
    assert a.cap_clamped and a.max_new_tokens == 300 - prompt and a.output_tokens <= 300 - prompt
    [r] = engine("deepseek-ocr-2", eng.options.model, budget="base", max_attempts=1, max_new_tokens=8).predict_batch([pages[1]])
    assert not r.attempts[0].cap_clamped and r.attempts[0].max_new_tokens == 8


def test_a_failed_batch_is_read_page_by_page_and_recorded(tmp_path):
    from folioscan.records import PageWork
    from folioscan.workers.ocr_stage import OcrStage

    path = save_random_model("deepseek-ocr-2", str(tmp_path), max_positions=600)
    stage = OcrStage(VlmOptions(kind="deepseek-ocr-2", model=path, device="cpu", budget="tiled-6", max_new_tokens=4,
                                max_attempts=1, batch_size=2), flip_retry_below=None)
    small = np.full((700, 500), 200, np.uint8)  # no tiles: 257 vision tokens, fits
    big = np.full((1100, 850), 200, np.uint8)  # 6 tiles: 1121 vision tokens, more than the context
    ok, bad = stage([PageWork("d", "u", 0, 2, image=small), PageWork("d", "u", 1, 2, image=big)])
    assert ok.status == "ok" and ok.ocr.attempts[0].reason.startswith("batch-failed:ValueError")
    assert ok.ocr.attempts[1].accepted and ok.ocr.attempts[1].vision_tokens == 257
    assert bad.status == "error" and "context is 600" in bad.error


# ---- confidence, end tokens, caps -----------------------------------------------------------

def test_confidence_is_the_raw_logprob_of_the_chosen_tokens_even_when_the_guard_fires(tiny, pages):
    kind, path = tiny
    # n = 1: any token already in the window is banned, so the guard fires on the first repeat
    eng = engine(kind, path, budget="base", max_attempts=1, max_new_tokens=24, no_repeat_ngram=1, no_repeat_window=64)
    budget, page = spec(kind).budget("base"), pages[1]
    prepared = eng.backend.prepare([page], budget)
    eng.backend.ngram = 0
    [free] = eng.backend.generate(prepared, 24)
    eng.backend.ngram = 1
    [guarded] = eng.backend.generate(prepared, 24)
    assert free.token_ids != guarded.token_ids  # the guard fired: it is the only difference between the runs
    forced = teacher_forced_logprobs(eng.backend, page, budget, guarded.token_ids)
    assert len(guarded.token_ids) > 2 and np.allclose(forced, guarded.logprobs, atol=1e-4)
    [r] = eng.predict_batch([page])
    assert r.attempts[0].output_tokens == len(guarded.token_ids)
    assert r.confidence == pytest.approx(math.exp(forced.mean()), rel=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_generation_stops_at_the_models_end_token_and_a_full_cap_is_recorded(tmp_path, kind, pages):
    eng = engine(kind, save_random_model(kind, str(tmp_path)), budget="base", max_attempts=1, max_new_tokens=30,
                 no_repeat_ngram=1, no_repeat_window=64)  # no token twice: the output cannot collapse into one token
    prepared = eng.backend.prepare([pages[1]], spec(kind).budget("base"))
    [free] = eng.backend.generate(prepared, 30)
    assert free.hit_token_cap and len(free.token_ids) == 30 and free.steps == 30  # random weights do not stop
    k = next(i for i, t in enumerate(free.token_ids) if i >= 3 and t not in free.token_ids[:i])
    # bias the model to its end token: the end token's output row becomes a copy of the row of the
    # token it emits at step k, so from there on the two tie and greedy argmax takes the lower id
    end = eng.backend.tokenizer.convert_tokens_to_ids(spec(kind).end_tokens[0])  # GOT: <|im_end|>, not its eos
    out = eng.backend.model.get_output_embeddings()
    out.weight = torch.nn.Parameter(out.weight.detach().clone())  # untied: GOT's prompt holds <|im_end|> as input
    assert end < free.token_ids[k]
    with torch.no_grad():
        out.weight[end] = out.weight[free.token_ids[k]]
    [stopped] = eng.backend.generate(prepared, 30)
    assert stopped.token_ids == free.token_ids[:k] and not stopped.hit_token_cap and stopped.steps == k + 1
    forced = teacher_forced_logprobs(eng.backend, pages[1], spec(kind).budget("base"), stopped.token_ids)
    assert np.allclose(forced, stopped.logprobs, atol=1e-4)  # log-probs stay aligned when a sequence ends early
    [r] = eng.predict_batch([pages[1]])
    [a] = r.attempts
    assert not a.hit_token_cap and a.output_tokens == k and a.max_new_tokens == 30


def test_each_sequence_stops_at_its_own_cap(tmp_path, pages):  # backend logic, the same for every model
    eng = engine("deepseek-ocr-2", save_random_model("deepseek-ocr-2", str(tmp_path)), no_repeat_ngram=0)
    prepared = eng.backend.prepare(pages, spec("deepseek-ocr-2").budget("base"))
    short, long = eng.backend.generate(prepared, [3, 7])
    assert short.hit_token_cap and len(short.token_ids) == 3 and short.max_new_tokens == 3
    assert long.hit_token_cap and len(long.token_ids) == 7 and long.steps == 7
    assert np.allclose(eng.backend.generate(prepared, 7)[0].logprobs[:3], short.logprobs, atol=1e-5)


# ---- engine --------------------------------------------------------------------------------

def test_fixed_budget_read_records_tokens_confidence_and_lines(tiny, pages):
    kind, path = tiny
    eng = engine(kind, path, budget="base", max_attempts=1, no_repeat_ngram=0)
    results = eng.predict_batch(pages)
    assert len(results) == 2
    for r in results:
        [a] = r.attempts
        assert a.accepted and a.budget == "base" and a.reason == "initial"
        assert a.vision_tokens == spec(kind).budget("base").vision_tokens
        assert 0 < a.output_tokens <= 12 and a.max_new_tokens == 12
        assert 0.0 < r.confidence <= 1.0 and r.confidence_min <= r.confidence + 1e-9
        assert all(0.0 < l.confidence <= 1.0 for l in r.lines)


def test_low_confidence_escalates_up_the_pages_ladder_and_records_every_attempt(tmp_path, pages):
    kind = "deepseek-ocr-2"  # engine logic; GOT-OCR2's ladders are checked against its processor above
    eng = engine(kind, save_random_model(kind, str(tmp_path)), budget="adaptive", escalate_below=1.01, max_attempts=2,
                 max_new_tokens=4)  # never confident
    [r] = eng.predict_batch([pages[1]], [ImageHints(est_chars=100)])
    h, w = pages[1].shape
    ladder = page_ladder(kind, h, w)
    assert [a.budget for a in r.attempts] == [x.budget.name for x in ladder][:2]
    assert [a.vision_tokens for a in r.attempts] == [x.vision_tokens for x in ladder][:2]
    assert r.attempts[0].reason == "initial"
    assert all(a.reason in ("low-confidence", "repetition", "token-cap") for a in r.attempts[1:])
    assert sum(a.accepted for a in r.attempts) == 1


def test_the_guard_is_one_rule_for_both_backends():
    guard = WindowedNoRepeatNGram(ngram=3, window=6, prompt_len=2)
    ids = torch.tensor([[9, 9, 1, 2, 5, 1, 2]])  # generated: 1 2 5 1 2 -> "1 2 5" would repeat
    scores = guard(ids, torch.zeros(1, 10))
    assert scores[0, 5] == -math.inf and (scores[0, :5] == 0).all() and (scores[0, 6:] == 0).all()
    per_request = guard.for_request()(ids[0, 2:].tolist(), torch.zeros(10))  # vLLM: generated ids only
    assert torch.equal(per_request, scores[0])
    far = torch.tensor([[9, 9, 1, 2, 5, 7, 7, 7, 7, 7, 1, 2]])  # "1 2 5" is out of the 6-token window
    assert (WindowedNoRepeatNGram(3, 6, 2)(far, torch.zeros(1, 10))[0, 5] == 0)


def test_loop_detection():
    prose = list(range(200))
    assert not is_degenerate(prose)
    loop = prose[:50] + [7, 8, 9, 10] * 20
    assert repeating_tail(loop) == 4 and is_degenerate(loop)
    assert is_degenerate([1] * 60)


def test_vlm_engine_in_the_whole_job(tmp_path, pages):
    import pyarrow.parquet as pq

    from folioscan.pipeline.cli import main
    from tests.helpers import scanned_pdf

    model = save_random_model("deepseek-ocr-2", str(tmp_path / "model"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "book.pdf").write_bytes(scanned_pdf(pages, dpi=100))
    out = tmp_path / "out"
    code = main(["run", str(src), str(out), "--engine", "deepseek-ocr-2", "--model", model, "--budget", "adaptive",
                 "--device", "cpu", "--executor", "local", "--max-new-tokens", "16", "--max-attempts", "1",
                 "--vlm-batch-size", "2", "--batch-size", "2", "--quiet"])
    assert code == 0
    rows = pq.read_table(out / "pages").to_pylist()
    assert len(rows) == 2
    for row in rows:
        assert row["engine"] == "deepseek-ocr-2" and row["budget"] in [b.name for b in BUDGETS["deepseek-ocr-2"]]
        assert row["vision_tokens"] > 0 and 0 <= row["output_tokens"] <= 16 and row["attempts"]
        assert row["compression_ratio"] == pytest.approx(row["output_tokens"] / row["vision_tokens"])
        assert sum(a["accepted"] for a in row["attempts"]) == 1
        assert all(a["max_new_tokens"] == 16 and not a["cap_clamped"] for a in row["attempts"])
    assert rows[0]["est_chars"] > rows[1]["est_chars"]  # density measured by the prep stage reached the engine


def test_a_failed_batch_is_counted_in_the_run_record(tmp_path):
    import json

    from folioscan.pipeline.cli import main
    from tests.helpers import PARAGRAPHS, scanned_pdf

    model = save_random_model("deepseek-ocr-2", str(tmp_path / "model"), max_positions=600)
    src = tmp_path / "src"
    src.mkdir()
    small = text_page_image(PARAGRAPHS[0], dpi=100, size=(360, 504))  # 500 x 700 px: no tiles, fits the context
    big = text_page_image(PARAGRAPHS[1], dpi=100)  # 850 x 1100 px: six tiles, 1121 vision tokens do not fit
    (src / "book.pdf").write_bytes(scanned_pdf([small, big], dpi=100))
    summary = tmp_path / "summary.json"
    code = main(["run", str(src), str(tmp_path / "out"), "--engine", "deepseek-ocr-2", "--model", model, "--budget",
                 "tiled-6", "--device", "cpu", "--executor", "local", "--max-new-tokens", "4", "--max-attempts", "1",
                 "--vlm-batch-size", "2", "--batch-size", "2", "--no-prep", "--quiet", "--summary-json", str(summary)])
    s = json.loads(summary.read_text())
    assert code == 1 and s["pages_read_alone"] == 1 and s["pages_failed"] == 1
