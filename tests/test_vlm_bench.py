"""bench/vlm_throughput.py and bench/gpu_run.sh: the GPU command's CPU twin (tiny models, synthetic
pages), the bench without the job's dependencies, its accounting of caps, its time estimate."""
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from folioscan.workers.engines.vlm.backend import Generation, Prepared
from folioscan.workers.engines.vlm.budgets import CHARS_PER_TEXT_TOKEN
from tests.helpers import png_bytes, text_page_image, thread_share

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench", "vlm_throughput.py")
GPU_RUN = os.path.join(ROOT, "bench", "gpu_run.sh")
FORBIDDEN = ("pydantic", "fitz", "pymupdf", "ray", "boto3", "botocore", "vllm")
SHORT, LONG = "A short page.", " ".join(["The quick brown fox jumps over the lazy dog."] * 9)
TEXTS = [SHORT, LONG, SHORT, LONG]  # input order mixes short and long pages
# --max-seconds of the GPU command's CPU twin: the bench must build the tiny model and start its first
# configuration within it (7 s at load 5.6 on the 2-core machine), then is stopped there; every
# second past that start only runs generate steps nobody looks at (was 30)
DS_S = 20
TRUE = [math.ceil(len(t) / CHARS_PER_TEXT_TOKEN) for t in TEXTS]  # 4 and 113 tokens

# Runs the bench with the job's dependencies made unimportable, as in a virtualenv without them,
# then lists which of them ended up in sys.modules anyway.
BARE = f"""
import importlib.abc, json, runpy, sys
FORBIDDEN = {FORBIDDEN!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FORBIDDEN:
            raise ImportError("not in the bare benchmark virtualenv: " + name)
sys.meta_path.insert(0, Block())
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)), file=sys.stderr)
"""


def _env(**extra) -> dict:
    """The bench's environment: this checkout first, and under pytest-xdist torch's share of the cores
    (tests/conftest.py gives each worker's own torch the same), not a pool of every core per process:
    two such pools on two cores slow each other down."""
    return {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": str(thread_share()), **extra}


def _bench_module():
    spec = importlib.util.spec_from_file_location("vlm_throughput_under_test", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """bench/data's layout (pages/, gt/, hints.json) with four synthetic pages; hints measured by the
    prep stage (--write-hints)."""
    root = tmp_path_factory.mktemp("bench-data")
    (root / "pages").mkdir()
    (root / "gt").mkdir()
    for k, text in enumerate(TEXTS):
        (root / "pages" / f"p{k}.png").write_bytes(png_bytes(text_page_image(text, dpi=72)))
        (root / "gt" / f"p{k}.txt").write_text(text)
    subprocess.run([sys.executable, BENCH, "--model", "tiny:deepseek-ocr-2", "--images", str(root / "pages"),
                    "--write-hints", str(root / "hints.json")], check=True, env=_env(),
                   timeout=120)
    hints = json.loads((root / "hints.json").read_text())
    assert hints["p1.png"] > hints["p0.png"] > 0
    return root


def test_gpu_command_cpu_twin(data, tmp_path):
    """bench/gpu_run.sh as it runs on the device, on the CPU: tiny model, the same batch sizes and
    flags, a --max-seconds far too small for batch 256: the largest batch starts first, is stopped at
    the limit and still reported, the rest is listed as skipped, the summary is the last line."""
    batch_sizes = [int(b) for b in re.search(r"^BATCH_SIZES=([\d,]+)$", open(GPU_RUN).read(), re.M).group(1).split(",")]
    out = tmp_path / "out"
    env = _env(DEVICE="cpu", SIZE="tiny", PY=sys.executable, DATA=str(data), WHL=str(tmp_path / "no-wheels"),
               ONLY="deepseek-ocr-2", DS_S=str(DS_S), TOTAL_S="75", MIN_S="1", OUT=str(out))
    proc = subprocess.run(["bash", GPU_RUN], capture_output=True, text=True, env=env, timeout=150)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "== deepseek-ocr-2: exit 0" in proc.stdout, proc.stdout[-3000:]
    lines = _lines((out / "deepseek-ocr-2.jsonl").read_text())
    *configs, summary = lines
    assert summary["summary"] is True and summary["benchmark"] == "vlm_throughput"
    assert summary["batch_sizes"] == sorted(batch_sizes, reverse=True) and summary["device"] == "cpu"
    assert summary["stopped"] == "max-seconds reached" and summary["max_seconds"] <= DS_S
    assert configs, "no configuration started within --max-seconds"
    assert [c["batch_size"] for c in configs] == summary["configurations_run"] == [max(batch_sizes)]
    first = configs[0]
    assert first["complete"] is False and first["stopped"].startswith("max-seconds reached during the")
    assert first["pool_pages"] == 4 * max(batch_sizes) and first["distinct_pages"] == 4
    assert [s["batch_size"] for s in summary["skipped"]] == sorted(batch_sizes, reverse=True)[1:]
    assert all(s["reason"] for s in summary["skipped"])
    assert "simulated_useful_slot_fraction" in summary and "useful_slot_fraction" not in summary
    assert "does not capture a real model's lengths" in summary["simulation"]
    assert summary["prep_only_pages_per_s"] > 0 and summary["prep_threads"] >= 1 and summary["build_s"] > 0
    assert (out / "env.txt").read_text().count("model classes: ok") == 1


def test_bench_runs_without_the_job_dependencies_and_reports_scheduling(data):
    env = _env()
    out = subprocess.run([sys.executable, "-c", BARE, BENCH, "--model", "tiny:deepseek-ocr-2", "--images",
                          str(data / "pages"), "--device", "cpu", "--batch-sizes", "2", "--orders", "length,input",
                          "--hints", str(data / "hints.json"), "--no-repeat-ngram", "0", "--prep-pages", "4"],
                         capture_output=True, text=True, env=env, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stderr.strip().splitlines()[-1]) == []
    *configs, summary = _lines(out.stdout)
    assert summary["summary"] is True and summary["skipped"] == [] and summary["stopped"] is None
    assert summary["versions"]["torch"] and summary["device_name"].startswith("cpu")
    by = {c["batching"]: c for c in configs}
    assert set(by) == {"length", "input"}
    for c in configs:
        assert c["complete"] is True and c["pages"] == c["pool_pages"] == 8  # 4 pages cycled to 4 batches of 2
        assert c["full_batches"] == c["generate_calls"] == c["predicted_generate_calls"] == 4
        assert c["decode_steps"] == c["predicted_decode_steps"]
        assert set(c["phase_s"]) == {"image_preparation", "vision", "prefill", "decode"}
        assert c["pages_per_s"] > 0 and c["output_tokens_per_s"] > 0 and c["peak_memory_bytes"] > 0
        assert c["s_per_decode_step"] > 0 and c["image_preparation_ms_per_page"] > 0
        assert c["batch_limit"] == 2 and c["oom_backoffs"] == 0
        assert c["vision_batch"] > 0 and c["vision_batch_from"] == "cpu-default" and "view_bytes" in c
        assert c["useful_slots"] == 2 * sum(n + 1 for n in TRUE)  # every page ended at its true length
        assert c["output_tokens"] == 2 * sum(TRUE) and c["pages_cut_by_estimate"] == 0
    # ground truth of 4 and 113 tokens: sorted batches waste almost no slot, mixed ones about half
    assert by["length"]["simulated_useful_slot_fraction"] > 0.9 > 0.6 > by["input"]["simulated_useful_slot_fraction"]
    assert summary["simulated_useful_slot_fraction"] == {
        "length": {"2": by["length"]["simulated_useful_slot_fraction"]},
        "input": {"2": by["input"]["simulated_useful_slot_fraction"]}}


def test_user_cap_is_not_counted_as_cut_by_the_estimate(data):
    """--max-new-tokens 20 ends the long pages (113 tokens): their 20 tokens are produced, no page is
    'cut by estimate' (input order: every cap is the user's; length order: the estimates fit)."""
    out = subprocess.run([sys.executable, BENCH, "--model", "tiny:deepseek-ocr-2", "--images", str(data / "pages"),
                          "--device", "cpu", "--batch-sizes", "2", "--orders", "length,input", "--max-new-tokens",
                          "20", "--min-batches", "1", "--hints", str(data / "hints.json"), "--prep-pages", "4"],
                         capture_output=True, text=True, env=_env(), timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    *configs, summary = _lines(out.stdout)
    assert summary["max_new_tokens"] == 20 and len(configs) == 2
    for c in configs:
        assert c["pages_cut_by_estimate"] == 0 and c["pages_at_own_cap"] == 2 and c["pages"] == 4
        assert c["output_tokens"] == sum(min(n, 20) for n in TRUE)


def test_sigterm_still_prints_the_configuration_and_the_summary(data):
    proc = subprocess.Popen([sys.executable, BENCH, "--model", "tiny:deepseek-ocr-2", "--images", str(data / "pages"),
                             "--device", "cpu", "--batch-sizes", "64,2", "--hints", str(data / "hints.json"),
                             "--prep-pages", "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env())
    for line in proc.stderr:  # wait until the first configuration is under way
        if "warm-up, then" in line:
            break
    proc.terminate()
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + 15
    *configs, summary = _lines(stdout)
    assert [c["batch_size"] for c in configs] == [64] and configs[0]["stopped"].startswith("interrupted by SIGTERM")
    assert summary["stopped"] == "interrupted by SIGTERM" and summary["skipped"][0]["batch_size"] == 2


# ---- in process: the Probe's accounting and delegation, the time estimate --------------------------

class OutOfMemoryError(RuntimeError):
    """Named like torch's: folioscan.failures.is_out_of_memory goes by the name."""


class FakeBackend:
    """Generates `cap` tokens for every page (never an end token); the first call of more than one
    page runs out of memory, so the engine halves the batch through the Probe."""

    kind, version = "deepseek-ocr-2", "fake"
    vision_batch, vision_batch_from, view_bytes = 3.0, "options", None

    def __init__(self):
        import torch

        self.model = SimpleNamespace(get_output_embeddings=lambda: torch.nn.Identity())
        self.oom, self.selected, self.released = True, [], 0

    def vision_features(self, prepared, limit=None):
        return None

    def prepare(self, images, budget):
        return Prepared(budget, None, [257] * len(images), [270] * len(images))

    def select(self, prepared, rows):
        self.selected.append(list(rows))
        return Prepared(prepared.budget, None, [prepared.vision_tokens[i] for i in rows],
                        [prepared.prompt_lens[i] for i in rows])

    def release_memory(self):
        self.released += 1

    def generate(self, prepared, caps):
        if self.oom and len(prepared) > 1:
            self.oom = False
            raise OutOfMemoryError("CUDA out of memory (fake)")
        self.vision_features(prepared)
        return [Generation([7] * c, [-0.1] * c, v, True, max(caps), c) for c, v in zip(caps, prepared.vision_tokens)]

    def batch_decode(self, ids):
        return ["x" * len(i) for i in ids]


# generate calls after the back-off, one page each: page 3, 0, 1, page 2 cut at its estimate's 48, page 2 again
@pytest.mark.parametrize("user_cap, cut, own, tokens, steps", [
    (None, 1, 0, 10 + 10 + 300 + 300, 301 + 11 + 11 + 48 + 301),
    (100, 1, 2, 10 + 10 + 100 + 100, 100 + 11 + 11 + 48 + 100),  # the user's cap ends pages 2 and 3: done, not cut
])
def test_probe_counts_caps_and_delegates_to_the_backend(user_cap, cut, own, tokens, steps):
    vt = _bench_module()
    from folioscan.workers.engines.base import ImageHints
    from folioscan.workers.engines.vlm.engine import VlmEngine

    images = [np.full((1000, 700), 255, np.uint8) for _ in range(4)]
    true = [10, 10, 300, 300]
    hints = [ImageHints(est_chars=int(n * CHARS_PER_TEXT_TOKEN) + 1) for n in (10, 10, 10, 300)]  # page 2: 30x too low
    backend = FakeBackend()
    probe = vt.Probe(backend, {id(im): n for im, n in zip(images, true)}, vt.Clock(None, "cpu"))
    engine = VlmEngine(vt.BenchOptions(kind="deepseek-ocr-2", model=None, device="cpu", batch_size=2,
                                       max_new_tokens=user_cap), backend=probe)
    probe.engine, probe.batch_size = engine, 2
    engine.predict_batch(images, hints)
    s = probe.stats
    assert (s["pages"], s["cut_by_estimate"], s["at_own_cap"], s["output_tokens"]) == (4, cut, own, tokens)
    # out of memory on the first batch of 2: halved through probe.select, memory released, limit kept
    assert engine.oom_backoffs == 1 and engine.batch_limit == 1 and backend.released == 1
    assert backend.selected[:2] == [[0], [1]]
    assert probe.vision_batch == 3.0 and probe.vision_batch_from == "options" and probe.view_bytes is None
    # the prediction follows the engine's own schedule (at the batch limit it ended with)
    assert vt.predict(engine, images, hints, true, 8)["steps"] == s["steps"] == steps


def test_time_estimate_and_pool():
    vt = _bench_module()
    assert vt.pool_of(32, 256, 1, 4) == [k % 32 for k in range(1024)] and len(vt.pool_of(178, 8, 1, 4)) == 178
    assert len(vt.pool_of(4, 2, 3, 4)) == 12
    gpu = [{"batch_size": 256, "s_per_decode_step": 0.03}, {"batch_size": 128, "s_per_decode_step": 0.03}]
    cpu = [{"batch_size": 32, "s_per_decode_step": 0.032}, {"batch_size": 16, "s_per_decode_step": 0.016}]
    assert vt.step_seconds(gpu[:1], 8) == 0.03  # one point: a smaller batch is not slower per step
    assert vt.step_seconds(gpu, 8) == pytest.approx(0.03)  # launch-bound: flat
    assert vt.step_seconds(cpu, 4) == pytest.approx(0.004)  # compute-bound: proportional
    assert vt.estimate_seconds([], 8, 32, 1000, 8, 65) is None  # the first configuration always runs
    last = {"batch_size": 16, "s_per_decode_step": 0.01, "pages": 100, "wall_s": 30.0,
            "phase_s": {"vision": 5.0, "prefill": 5.0, "decode": 10.0}}
    # 0.1 s per page, 0.01 s per step, wall 1.5x the phases: (20 + 2) pages and (1000 + 65) steps
    assert vt.estimate_seconds([last], 8, 20, 1000, 2, 65) == pytest.approx(1.5 * (22 * 0.1 + 1065 * 0.01))
    compiled = {**last, "compiled": True, "warmup_s": 60.0}
    assert vt.estimate_seconds([compiled], 8, 20, 1000, 2, 65) == pytest.approx(60.0 + 1.5 * (2.0 + 10.0))
