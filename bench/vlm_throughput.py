"""VLM throughput on a GPU: pages/s and output tokens/s per budget and batch size, GPU memory,
and whether CPU prep keeps up. Prints one JSON object.

Uses the full-size DeepSeek-OCR-2 / GOT-OCR2 architectures with RANDOM weights (no download is
possible here) and a fixed number of output tokens per page (EOS is suppressed by min_new_tokens),
so the figures are throughput of the real compute graph, not of real text. Never read accuracy
from this.

    python bench/vlm_throughput.py --model-kind deepseek-ocr-2 --budgets small base tiled-2 \
        --batch-sizes 8 16 32 64 --output-tokens 600 --pages 64
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def page_images(n: int) -> list[np.ndarray]:
    from tests.helpers import PARAGRAPHS, text_page_image

    base = text_page_image(" ".join(PARAGRAPHS * 6), dpi=200, fontsize=11)
    return [base.copy() for _ in range(n)]


def main() -> None:
    import torch

    from folioscan.workers.engines.registry import VlmOptions
    from folioscan.workers.engines.vlm.budgets import BUDGETS
    from folioscan.workers.engines.vlm.random_init import save_random_model
    from folioscan.workers.engines.vlm.transformers_backend import TransformersBackend

    ap = argparse.ArgumentParser()
    ap.add_argument("--model-kind", default="deepseek-ocr-2", choices=list(BUDGETS))
    ap.add_argument("--budgets", nargs="+", default=None)
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[8, 16, 32])
    ap.add_argument("--output-tokens", type=int, default=600)
    ap.add_argument("--pages", type=int, default=64)
    ap.add_argument("--model", help="a real model directory instead of random full-size weights")
    ap.add_argument("--no-repeat-ngram", type=int, default=20, help="0 measures without the repetition guard")
    ap.add_argument("--smoke", action="store_true", help="tiny model on the CPU: checks this script, measures nothing")
    args = ap.parse_args()
    if not torch.cuda.is_available() and not args.smoke:
        print(json.dumps({"benchmark": "vlm_throughput", "skipped": "no CUDA GPU on this machine"}))
        return
    device = "cpu" if args.smoke else "cuda"
    path = args.model or save_random_model(args.model_kind, tempfile.mkdtemp(), full=not args.smoke, vocab_size=4096 if not args.smoke else 320)
    backend = TransformersBackend(VlmOptions(kind=args.model_kind, model=path, device=device, no_repeat_ngram=args.no_repeat_ngram))
    backend.model.generation_config.min_new_tokens = args.output_tokens  # fixed output length per page
    images = page_images(args.pages)
    report = {"benchmark": "vlm_throughput", "model_kind": args.model_kind, "weights": "random" if not args.model else path,
              "gpu": torch.cuda.get_device_name(0) if device == "cuda" else "none (smoke run)", "output_tokens_per_page": args.output_tokens,
              "no_repeat_ngram": args.no_repeat_ngram, "runs": []}
    # CPU prep rate on the same pages, to see whether a few cores feed the GPU
    from folioscan.records import PageWork
    from folioscan.workers.prep import PrepOptions, prepare_page

    t0 = time.perf_counter()
    for im in images[:16]:
        prepare_page(PageWork("d", "u", 0, 1, image=im), PrepOptions())
    report["prep_pages_per_s_per_core"] = round(16 / (time.perf_counter() - t0), 1)
    for budget in [b for b in BUDGETS[args.model_kind] if not args.budgets or b.name in args.budgets]:
        for bs in args.batch_sizes:
            sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            backend.generate(images[:bs], budget, args.output_tokens)  # warm-up
            sync()
            t0 = time.perf_counter()
            done = tokens = 0
            vision = 0
            while done < args.pages:
                gens = backend.generate(images[done:done + bs], budget, args.output_tokens)
                done += len(gens)
                tokens += sum(len(g.token_ids) for g in gens)
                vision = gens[0].vision_tokens
            sync()
            s = time.perf_counter() - t0
            report["runs"].append({"budget": budget.name, "vision_tokens": vision, "batch_size": bs, "pages": done,
                                   "pages_per_s": round(done / s, 2), "output_tokens_per_s": round(tokens / s, 1),
                                   "peak_gpu_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None})
            print(json.dumps(report["runs"][-1]), file=sys.stderr, flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
