"""bench/vlm_throughput.py runs without the job's dependencies and prints its JSON (tiny model, CPU)."""
import json
import math
import os
import subprocess
import sys

from folioscan.workers.engines.vlm.budgets import CHARS_PER_TEXT_TOKEN
from tests.helpers import png_bytes, text_page_image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench", "vlm_throughput.py")
FORBIDDEN = ("pydantic", "fitz", "pymupdf", "ray", "boto3", "botocore", "vllm")

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
runpy.run_path(sys.argv[0], run_name="__main__")
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)), file=sys.stderr)
"""


def test_bench_runs_without_the_job_dependencies_and_reports_scheduling(tmp_path):
    pages, gt = tmp_path / "pages", tmp_path / "gt"
    pages.mkdir()
    gt.mkdir()
    short, long = "A short page.", " ".join(["The quick brown fox jumps over the lazy dog."] * 9)
    for k, text in enumerate([short, long, short, long]):  # input order mixes short and long pages
        (pages / f"p{k}.png").write_bytes(png_bytes(text_page_image(text, dpi=72)))
        (gt / f"p{k}.txt").write_text(text)
    env = {**os.environ, "PYTHONPATH": ROOT}
    hints = tmp_path / "hints.json"
    subprocess.run([sys.executable, BENCH, "--model", "tiny:deepseek-ocr-2", "--images", str(pages),
                    "--write-hints", str(hints)], check=True, env=env, timeout=120)
    assert json.loads(hints.read_text())["p1.png"] > json.loads(hints.read_text())["p0.png"] > 0

    out = subprocess.run([sys.executable, "-c", BARE, BENCH, "--model", "tiny:deepseek-ocr-2", "--images", str(pages),
                          "--device", "cpu", "--batch-sizes", "2", "--hints", str(hints), "--no-repeat-ngram", "0"],
                         capture_output=True, text=True, env=env, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stderr.strip().splitlines()[-1]) == []
    report = json.loads(out.stdout)
    for key in ("pages_per_s", "output_tokens_per_s", "useful_slot_fraction", "peak_memory_bytes", "phase_s",
                "batch_sizes", "versions", "device_name", "image_preparation_ms_per_page"):
        assert key in report, key
    assert set(report["phase_s"]) == {"image_preparation", "prefill", "decode"}
    assert report["batch_sizes"] == [2] and report["pages"] == 4 and report["versions"]["torch"]
    assert report["peak_memory_bytes"] > 0 and report["pages_per_s"] > 0
    by = {r["batching"]: r for r in report["runs"]}
    # ground truth of ~4 and ~113 tokens: sorted batches waste almost no slot, mixed ones about half
    assert by["length"]["useful_slot_fraction"] > 0.9 > 0.6 > by["input"]["useful_slot_fraction"]
    assert report["useful_slot_fraction"] == {"scheduled": {"2": by["length"]["useful_slot_fraction"]},
                                              "input_order": {"2": by["input"]["useful_slot_fraction"]}}
    assert by["length"]["useful_slots"] == by["input"]["useful_slots"] == sum(math.ceil(len(t) / CHARS_PER_TEXT_TOKEN) + 1 for t in (short, long, short, long))
