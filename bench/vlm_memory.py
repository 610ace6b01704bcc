"""Peak memory of a VLM run against its output cap (does memory grow with the tokens generated?)
and against the generate batch (does it grow with pages beyond the decoder's own cost?).

Builds a tiny random DeepSeek-OCR-2 whose language model has the published vocabulary (129,280:
the per-step logits are full size), writes a PDF of N text pages, and runs the real CLI once per
cap, each in a fresh process, reading that process's peak RSS from the kernel (wait4). Random
weights rarely emit an end token, so a run with cap C really decodes ~C tokens per page. Prints
one JSON object. CPU only; run it under the shared machine's lock:

    python bench/vlm_memory.py --pages 16 --caps 16 512
    python bench/vlm_memory.py --pages 16 --caps 8 --batch-sizes 2 16 [--vision-batch 16]

With --batch-sizes, each run reads all pages at that `--vlm-batch-size` (the engine's pool, and
so `--batch-size`, stays at --pages), so the runs differ only in how many pages share a generate
call; `--vision-batch` sets the vision encoder's micro-batch (default: the engine's own).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def run_cli(args: list[str]) -> tuple[int, float, int]:
    """(exit code, wall seconds, peak RSS bytes) of `python -m folioscan ARGS` in its own process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "folioscan", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    if proc.returncode:
        sys.stderr.write(err[-3000:])
    return proc.returncode, time.perf_counter() - t0, usage.ru_maxrss * 1024  # Linux reports KiB


def main() -> None:
    import pyarrow.parquet as pq

    from folioscan.workers.engines.vlm.models import spec
    from folioscan.workers.engines.vlm.random_init import save_random_model
    from tests.helpers import PARAGRAPHS, scanned_pdf, text_page_image

    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=16)
    ap.add_argument("--caps", type=int, nargs="+", default=[16, 512])
    ap.add_argument("--lm-vocab", type=int, default=spec("deepseek-ocr-2").vocab_size)
    ap.add_argument("--budget", default="base")
    ap.add_argument("--batch-sizes", type=int, nargs="+", help="generate batch sizes to compare (default: --pages)")
    ap.add_argument("--vision-batch", type=float, help="views per vision-encoder call (default: the engine's)")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="vlm_memory_")
    model = save_random_model("deepseek-ocr-2", os.path.join(tmp, "model"), lm_vocab=args.lm_vocab)
    src = os.path.join(tmp, "src")
    os.makedirs(src)
    images = [text_page_image(PARAGRAPHS[i % len(PARAGRAPHS)], dpi=100) for i in range(args.pages)]
    with open(os.path.join(src, "book.pdf"), "wb") as f:
        f.write(scanned_pdf(images, dpi=100))
    report = {"benchmark": "vlm_memory", "model": "tiny random deepseek-ocr-2", "lm_vocab": args.lm_vocab,
              "pages": args.pages, "budget": args.budget, "vision_batch": args.vision_batch, "runs": []}
    for cap, batch in [(c, b) for c in args.caps for b in (args.batch_sizes or [args.pages])]:
        out = os.path.join(tmp, f"out_{cap}_{batch}")
        extra = ["--vision-batch", str(args.vision_batch)] if args.vision_batch else []
        code, wall, peak = run_cli(["run", src, out, "--executor", "local", "--engine", "deepseek-ocr-2", "--model", model,
                                    "--budget", args.budget, "--vlm-batch-size", str(batch), "--batch-size",
                                    str(args.pages), "--max-attempts", "1", "--max-new-tokens", str(cap), "--device", "cpu",
                                    "--quiet", *extra])
        run = {"max_new_tokens": cap, "batch": batch, "exit_code": code, "wall_s": round(wall, 1), "peak_rss_bytes": peak}
        if code == 0:
            rows = pq.read_table(os.path.join(out, "pages"), columns=["status", "attempts"]).to_pylist()
            reads = [a for r in rows for a in r["attempts"]]
            run.update(pages_ok=sum(r["status"] == "ok" for r in rows), reads=len(reads),
                       output_tokens_per_read=round(sum(a["output_tokens"] for a in reads) / max(len(reads), 1), 1),
                       reads_at_cap=sum(a["hit_token_cap"] for a in reads),
                       batch_failed=sum(a["reason"].startswith("batch-failed") for a in reads))
        report["runs"].append(run)
        print(json.dumps(run), file=sys.stderr, flush=True)
    peaks = [r["peak_rss_bytes"] for r in report["runs"]]
    report["peak_rss_difference_bytes"] = max(peaks) - min(peaks)
    report["peak_rss_difference_gib"] = round((max(peaks) - min(peaks)) / 2**30, 3)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
