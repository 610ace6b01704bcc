"""VLM memory at production batch sizes, on tiny random models of the real classes (CPU):
vision encoding in micro-batches bounded by `vision_batch`, out-of-memory back-off that halves
the generate batch, and preparation in threads that gives the same inputs as one call.

The models read noise: these tests check how the batch is cut and what is recorded, never text.
"""
import json

import numpy as np
import pytest
import torch

from folioscan.workers.engines import counters
from folioscan.workers.engines.registry import VlmOptions, build_engine
from folioscan.workers.engines.vlm.models import spec
from folioscan.workers.engines.vlm.random_init import save_random_model
from tests.helpers import PARAGRAPHS, text_page_image

@pytest.fixture(scope="module")
def pages():
    # different lengths and one smaller page: prompts of different lengths, so padding differs between batches
    return [text_page_image(PARAGRAPHS[i % len(PARAGRAPHS)], dpi=100) for i in range(4)] + [
        text_page_image(PARAGRAPHS[0], dpi=100, size=(360, 504))]


def engine(kind, path, **kw):
    opts = dict(kind=kind, model=path, device="cpu", max_new_tokens=6, max_attempts=1, no_repeat_ngram=0)
    return build_engine(VlmOptions(**{**opts, **kw}))


def encoder_calls(backend) -> list[int]:
    """Views (images and tiles) per call of the vision tower, recorded by a hook."""
    calls: list[int] = []
    tower = backend.model.model.vision_tower
    tower.register_forward_pre_hook(lambda module, args: calls.append(int(args[0].shape[0])))
    return calls


@pytest.mark.parametrize("budget", ["base", "tiled-2"])
def test_a_batch_larger_than_the_vision_micro_batch_reads_as_pages_read_alone(tiny, pages, budget):
    kind, path = tiny
    eng = engine(kind, path, budget=budget, vision_batch=2, batch_size=len(pages))
    calls = encoder_calls(eng.backend)
    b = spec(kind).budget(budget)
    prepared = eng.backend.prepare(pages, b)
    batched = eng.backend.generate(prepared, 6)
    assert len(calls) > 1 and len(calls) >= len(pages) // 2  # encoded in several calls, not one of the whole batch
    if budget == "base":  # one 1024-px view per page (GOT: one crop): at most two per call
        assert max(calls) <= 2 and sum(calls) == len(pages), calls
    for page, together in zip(pages, batched):
        [alone] = eng.backend.generate(eng.backend.prepare([page], b), 6)
        assert together.token_ids == alone.token_ids
        assert np.allclose(together.logprobs, alone.logprobs, atol=1e-4)


def test_preparing_in_threads_gives_the_inputs_of_one_call(tiny, pages):
    kind, path = tiny
    eng = engine(kind, path)
    for budget in ("base", "tiled-6"):
        b = spec(kind).budget(budget)
        eng.backend.prep_threads = 3
        threaded = eng.backend.prepare(pages, b)
        eng.backend.prep_threads = 1
        single = eng.backend.prepare(pages, b)
        assert threaded.vision_tokens == single.vision_tokens and threaded.prompt_lens == single.prompt_lens
        assert set(threaded.inputs) == set(single.inputs)
        for key in single.inputs:
            assert torch.equal(torch.as_tensor(threaded.inputs[key]), torch.as_tensor(single.inputs[key])), (budget, key)


def test_a_large_scan_is_shrunk_before_the_processor_without_changing_its_tiles(tiny):
    kind, path = tiny
    eng = engine(kind, path)
    scan = np.full((2621, 1850), 230, np.uint8)  # a 300-dpi book page
    for budget in spec(kind).budgets:
        small = eng.backend.prefit(scan, budget)
        views = spec(kind).view_sizes(budget, *scan.shape)
        needed = max(max(th / scan.shape[0], tw / scan.shape[1]) for th, tw in views)
        # shrunk where every view is smaller than the scan (GOT-OCR2's tiled-6 canvas, 3072 x 2048, is not)
        assert (small.shape[0] < scan.shape[0]) == (needed < 0.95), (budget.name, needed)
        assert spec(kind).vision_tokens(budget, *small.shape) == spec(kind).vision_tokens(budget, *scan.shape)
        for th, tw in views if small.shape != scan.shape else []:  # never below what a view is resized to
            assert small.shape[0] >= th * 0.99 or small.shape[1] >= tw * 0.99
        [n] = eng.backend.prepare([scan], budget).vision_tokens
        assert n == spec(kind).vision_tokens(budget, *scan.shape)


class OomAbove:
    """The real backend, running out of memory on any generate call of more than `fits` pages."""

    def __init__(self, backend, fits: int):
        self.inner, self.fits, self.calls = backend, fits, []
        self.kind, self.version, self.released = backend.kind, backend.version, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def release_memory(self):
        self.released += 1
        self.inner.release_memory()

    def generate(self, prepared, caps):
        self.calls.append(len(prepared))
        if len(prepared) > self.fits:
            raise torch.OutOfMemoryError(f"injected: {len(prepared)} pages do not fit")
        return self.inner.generate(prepared, caps)


def test_out_of_memory_halves_the_batch_reads_each_page_once_and_remembers_the_size(tmp_path, pages):
    from folioscan.records import PageWork
    from folioscan.workers.ocr_stage import OcrStage

    path = save_random_model("deepseek-ocr-2", str(tmp_path))
    stage = OcrStage(VlmOptions(kind="deepseek-ocr-2", model=path, device="cpu", budget="base", max_new_tokens=4,
                                max_attempts=1, batch_size=8, no_repeat_ngram=0), flip_retry_below=None)
    probe = stage.engine.backend = OomAbove(stage.engine.backend, fits=2)
    counters.reset_lows()  # as an executor does when a run starts: lows describe one run
    before = counters.snapshot()
    eight = (pages * 2)[:8]
    works = [PageWork("d", "u", i, 8, image=im) for i, im in enumerate(eight)]
    results = stage(works)
    assert probe.calls == [8, 4, 2, 2, 2, 2]  # 8 fails, its first half fails, then pieces of 2
    assert probe.released == 2
    assert all(r.status == "ok" for r in results)
    for r in results:  # one read each, accepted; none re-read alone after a failed batch
        assert len(r.ocr.attempts) == 1 and r.ocr.attempts[0].accepted
        assert not r.ocr.attempts[0].reason.startswith("batch-failed")
    assert stage.engine.batch_limit == 2 and stage.engine.oom_backoffs == 2
    after = counters.since(before, counters.snapshot())
    assert after["oom_backoffs"] == 2 and after["vlm_batch_size"] == 2
    # the size that fitted holds for the rest of the run: the next pool never tries more than 2
    probe.calls.clear()
    stage([PageWork("d", "u", i, 8, image=im) for i, im in enumerate(eight)])
    assert probe.calls == [2, 2, 2, 2]


def test_out_of_memory_on_one_page_is_that_pages_error_not_a_loop(tmp_path, pages):
    from folioscan.records import PageWork
    from folioscan.retry import RetryPolicy
    from folioscan.workers.ocr_stage import OcrStage

    path = save_random_model("deepseek-ocr-2", str(tmp_path))
    stage = OcrStage(VlmOptions(kind="deepseek-ocr-2", model=path, device="cpu", budget="base", max_new_tokens=4,
                                max_attempts=1, batch_size=2, no_repeat_ngram=0), flip_retry_below=None,
                     retry=RetryPolicy(attempts=1))
    probe = stage.engine.backend = OomAbove(stage.engine.backend, fits=0)
    results = stage([PageWork("d", "u", i, 2, image=im) for i, im in enumerate(pages[:2])])
    assert [r.status for r in results] == ["error", "error"]
    assert all("OutOfMemoryError" in r.error and r.error_kind == "transient" for r in results)
    assert probe.calls[:3] == [2, 1, 1]  # halved once to single pages, which cannot be halved


def run_tiny_vlm_job(tmp_path, pages, *flags) -> tuple[int, dict, list[dict]]:
    """The CLI over one 8-page book with a tiny DeepSeek-OCR-2: (exit code, summary, page rows)."""
    import pyarrow.parquet as pq

    from folioscan.pipeline.cli import main
    from tests.helpers import scanned_pdf

    model = save_random_model("deepseek-ocr-2", str(tmp_path / "model"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "book.pdf").write_bytes(scanned_pdf(pages[:4] * 2, dpi=100))
    summary = tmp_path / "summary.json"
    code = main(["run", str(src), str(tmp_path / "out"), "--engine", "deepseek-ocr-2", "--model", model, "--budget", "base",
                 "--device", "cpu", "--max-new-tokens", "4", "--max-attempts", "1", "--quiet",
                 "--summary-json", str(summary), *flags])
    rows = pq.read_table(tmp_path / "out" / "pages").to_pylist() if code == 0 else []
    return code, json.loads(summary.read_text()), rows


def test_out_of_memory_back_off_reaches_the_run_record(tmp_path, pages, monkeypatch):
    """The whole job (local executor, in this process): the injected OOM shrinks the batch, the run
    record says how often and to what size, and every page is read once."""
    from folioscan.workers.engines.vlm import transformers_backend

    real = transformers_backend.TransformersBackend.generate

    def generate(self, prepared, caps):
        if len(prepared) > 2:
            raise torch.OutOfMemoryError("injected")
        return real(self, prepared, caps)

    monkeypatch.setattr(transformers_backend.TransformersBackend, "generate", generate)
    code, s, rows = run_tiny_vlm_job(tmp_path, pages, "--executor", "local", "--vlm-batch-size", "8", "--batch-size", "8")
    assert code == 0
    assert s["oom_backoffs"] == 2 and s["vlm_batch_size"] == 2 and s["pages_read_alone"] == 0
    assert len(rows) == 8 and all(r["status"] == "ok" for r in rows)


def test_the_repetition_guard_never_syncs_with_the_device():
    """The guard runs every decode step: no .nonzero()/.item()/boolean indexing. Under CUDA's
    sync debug mode a sync raises; on the CPU the same code runs with the mode unavailable, so the
    check here is that the rule is built from shape-stable ops only (the result is exact)."""
    from folioscan.workers.engines.vlm.repetition import ban_repeats_

    gen = torch.tensor([[1, 2, 5, 1, 2], [3, 3, 3, 3, 3]])
    scores = ban_repeats_(torch.zeros(2, 8), gen, 3)
    assert scores[0, 5] == float("-inf") and (scores[0, :5] == 0).all() and (scores[0, 6:] == 0).all()
    assert scores[1, 3] == float("-inf") and torch.isfinite(scores[1, [0, 1, 2, 4, 5, 6, 7]]).all()
    if torch.cuda.is_available():  # on a GPU: prove there is no sync
        torch.cuda.set_sync_debug_mode("error")
        try:
            ban_repeats_(torch.zeros(2, 8, device="cuda"), gen.cuda(), 3)
        finally:
            torch.cuda.set_sync_debug_mode("default")


def test_loop_checks_and_line_confidence_are_exact_after_vectorising():
    from folioscan.workers.engines.vlm.confidence import NewlineCounts, lines_with_confidence
    from folioscan.workers.engines.vlm.repetition import repeated_ngram_share, repeating_tail

    prose = list(range(300))
    assert repeating_tail(prose) == 0 and repeated_ngram_share(prose) == 0.0
    assert repeating_tail(prose[:50] + [7, 8, 9, 10] * 20) == 4
    assert repeating_tail([5] * 39) == 0 and repeating_tail([5] * 40) == 1  # min span 40
    assert repeating_tail(prose[:10] + list(range(100, 130)) * 3) == 30  # span 3 x 30 = 90 tokens
    assert repeated_ngram_share([1, 2] * 50) > 0.9
    pieces = {1: "A", 2: "b\n", 3: "c", 4: "\n\n", 5: "d"}  # token 4 ends a line and leaves an empty one
    decode_calls = []

    def decode(ids):
        decode_calls.append(len(ids))
        return ["".join(pieces[t] for t in row) for row in ids]

    counts = NewlineCounts(decode)
    ids, lps = [1, 2, 3, 4, 5], [-0.1, -0.2, -0.3, -0.4, -0.5]
    lines = lines_with_confidence(ids, lps, counts, decode([ids])[0])
    assert [(l.text, l.confidence) for l in lines] == [
        ("Ab", round(np.exp(-0.15), 4)), ("c", round(np.exp(-0.35), 4)), ("d", round(np.exp(-0.5), 4))]
    lines_with_confidence(ids, lps, counts, "")
    assert decode_calls == [1, 5]  # the text, then each token id once: the second page decodes nothing


def test_two_pools_at_once_overlap_preparation_with_generation(tmp_path, pages):
    """A VLM actor takes its next pool while one generates: the second pool's first batch is
    prepared while the first pool holds the accelerator, and generation never runs twice at once."""
    import threading
    import time

    path = save_random_model("deepseek-ocr-2", str(tmp_path))
    eng = engine("deepseek-ocr-2", path, budget="base", batch_size=2)
    inner, spans, started = eng.backend, [], threading.Event()
    pool_a, pool_b = pages[:4], [np.ascontiguousarray(p[::-1]) for p in pages[:4]]
    owner = {id(im): "a" for im in pool_a} | {id(im): "b" for im in pool_b}

    class Timed:
        def __getattr__(self, name):
            return getattr(inner, name)

        def prepare(self, images, budget):
            t0 = time.perf_counter()
            out = inner.prepare(images, budget)
            out.pool = owner[id(images[0])]
            spans.append(("prepare", out.pool, t0, time.perf_counter()))
            return out

        def generate(self, prepared, caps):
            t0 = time.perf_counter()
            started.set()
            if prepared.pool == "a":
                time.sleep(1.0)  # a long generate: the accelerator is busy
            out = inner.generate(prepared, caps)
            spans.append(("generate", prepared.pool, t0, time.perf_counter()))
            return out

    eng.backend = Timed()
    first = threading.Thread(target=eng.predict_batch, args=(pool_a,))
    first.start()
    assert started.wait(60)
    eng.predict_batch(pool_b)
    first.join()
    gens = sorted((a, b) for kind, _, a, b in spans if kind == "generate")
    assert len(gens) == 4 and all(end <= nxt for (_, end), (nxt, _) in zip(gens, gens[1:]))  # one at a time
    a_gens = [(a, b) for kind, pool, a, b in spans if kind == "generate" and pool == "a"]
    b_first_prep_end = min(b for kind, pool, _, b in spans if kind == "prepare" and pool == "b")
    assert any(a < b_first_prep_end < b for a, b in a_gens)  # pool b's first batch was ready while a generated


@pytest.mark.ray
def test_a_vlm_run_on_ray_with_two_calls_per_actor(tmp_path, pages, ray_local):
    """The threaded VLM actor on a real local Ray: every page once, one engine load, no back-off."""
    code, s, rows = run_tiny_vlm_job(tmp_path, pages, "--executor", "ray", "--ocr-workers", "1", "--vlm-batch-size", "2",
                                     "--batch-size", "2")
    assert code == 0
    assert s["ocr_actors"] == 1 and s["engine_loads"] == 1 and s["oom_backoffs"] == 0 and s["pages"] == 8
    assert sorted(r["page_index"] for r in rows) == list(range(8)) and all(r["status"] == "ok" for r in rows)


def test_the_retry_after_out_of_memory_runs_without_the_failed_calls_memory(tmp_path, pages):
    """The failed call's tensors (its KV cache, embeddings, activations) are held by the exception's
    traceback while the except block runs: memory is released and the halves read only after it."""
    import weakref

    eng = engine("deepseek-ocr-2", save_random_model("deepseek-ocr-2", str(tmp_path)), budget="base", batch_size=4)
    inner, refs, alive_at_release = eng.backend, [], []

    class HoldsMemoryWhenFailing:
        def __getattr__(self, name):
            return getattr(inner, name)

        def generate(self, prepared, caps):
            if len(prepared) > 1:
                kv_cache = torch.zeros(1000)  # what the failed call had allocated
                refs.append(weakref.ref(kv_cache))
                raise torch.OutOfMemoryError("injected")
            return inner.generate(prepared, caps)

        def release_memory(self):
            alive_at_release.append(sum(r() is not None for r in refs))
            inner.release_memory()

    eng.backend = HoldsMemoryWhenFailing()
    results = eng.predict_batch(pages[:4])
    assert len(results) == 4 and len(alive_at_release) == 2  # 4 -> 2 -> 1
    assert alive_at_release == [0, 0]


def test_out_of_memory_in_the_vision_encoder_halves_its_micro_batch_too(tmp_path, pages):
    eng = engine("deepseek-ocr-2", save_random_model("deepseek-ocr-2", str(tmp_path)), budget="base", batch_size=4,
                 vision_batch=4)
    model = eng.backend.model
    real = model.get_image_features

    def encoder_fits_one_view(pixel_values, *args, **kwargs):
        if pixel_values.shape[0] > 1:
            raise torch.OutOfMemoryError("injected: the encoder holds one view")
        return real(pixel_values, *args, **kwargs)

    model.get_image_features = encoder_fits_one_view
    results = eng.predict_batch(pages[:4])
    assert len(results) == 4 and all(r.attempts and not r.error for r in results)
    assert eng.backend.vision_batch == 1 and eng.backend.vision_batch_from == "options+oom"
    assert eng.batch_limit == 1 and eng.oom_backoffs == 2  # 4 pages (4 views), 2 pages (2 views), then 1
