"""VLM throughput and decode-slot use through the engine's own batching loop. Prints one JSON object.

    python bench/vlm_throughput.py --model full:deepseek-ocr-2 --images ../shared/eval/old_books/pages \
        --device cuda --batch-sizes 8,32,128,256 [--limit N] [--static-cache] [--compile]

`--model` is a model directory, or `tiny:KIND` / `full:KIND`: a randomly initialised model of the
real classes (full: the published architecture and vocabulary) built on the fly. Random weights
read noise, so in this benchmark each page's generation is ended at its ground-truth length in
tokens (`gt/<page>.txt` beside the images folder; `--truth DIR`): the batches then run as long as
a real model's would. Never read accuracy from this. Length estimates (`est_chars`) are the prep
stage's, measured on each page by `prepare_page` (`--hints FILE` reads them from a file written
by `--write-hints FILE`, for machines without folioscan's job dependencies).

Runs in a virtualenv of only torch, transformers, tokenizers, pillow, numpy, opencv-python-headless
and pyarrow: nothing here or in the folioscan modules it imports pulls pydantic, PyMuPDF, Ray or
boto3 (tests/test_vlm_bench.py checks it).

Per batch size and batching order (`length`: the engine's length-aware plan; `input`: pages in
order, one cap), the JSON reports pages/s, output tokens/s, useful_slot_fraction (decode slots,
batch x steps, that produced a page's token or its end token), seconds of image preparation
(processor, in the prefetch thread), prefill (up to the first token) and decode, the wall time
(less than the sum of the phases when preparation overlaps generation) and peak memory (CUDA max
allocated; on CPU the process's peak RSS so far).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from folioscan.workers.engines.base import ImageHints  # noqa: E402
from folioscan.workers.engines.vlm.budgets import CHARS_PER_TEXT_TOKEN, expected_text_tokens  # noqa: E402
from folioscan.workers.engines.vlm.models import MODELS  # noqa: E402


@dataclass
class BenchOptions:
    """The VlmOptions attributes the backend and engine read (VlmOptions itself is pydantic)."""

    kind: str
    model: str
    device: str
    batch_size: int = 8
    batching: str = "length"
    budget: str = "base"
    max_attempts: int = 1  # random weights are never confident: no escalation here
    escalate_below: float = 0.0
    target_compression: float = 10.0
    max_new_tokens: Optional[int] = None
    no_repeat_ngram: int = 20
    no_repeat_window: int = 90
    backend: str = "transformers"
    dtype: str = "auto"


class Probe:
    """The backend as the engine sees it, plus: each page ends at its true length, and every
    generate call is timed (prefill = up to the LM head's first call) and its slots counted."""

    def __init__(self, backend, lengths: dict[int, int], sync):
        self.inner, self.lengths, self.sync = backend, lengths, sync
        self.serial = False  # True: preparation waits for generate, in its thread (the engine before prefetching)
        self.kind, self.version = backend.kind, backend.version
        self.batch_decode = backend.batch_decode
        self._first_head: Optional[float] = None
        backend.model.get_output_embeddings().register_forward_hook(self._on_head)
        self.reset()

    def reset(self) -> None:
        self.stats = dict(prepare_s=0.0, prepared_pages=0, prefill_s=0.0, decode_s=0.0, slots=0, useful=0,
                          output_tokens=0, calls=0, cut_by_estimate=0)

    def _on_head(self, module, args, out) -> None:
        if self._first_head is None:
            self.sync()
            self._first_head = time.perf_counter()

    def prepare(self, images, budget):
        lengths = [self.lengths[id(im)] for im in images]
        if self.serial:
            return (lambda: self._prepare(images, budget)), lengths
        return self._prepare(images, budget), lengths

    def _prepare(self, images, budget):
        prepared = self.inner.prepare(images, budget)
        self.stats["prepare_s"] += prepared.prepare_s
        self.stats["prepared_pages"] += len(images)
        return prepared

    def generate(self, prepared, max_new_tokens):
        prepared, lengths = prepared
        if callable(prepared):
            prepared = prepared()
        caps = [max_new_tokens] * len(lengths) if isinstance(max_new_tokens, int) else list(max_new_tokens)
        self.sync()
        self._first_head, t0 = None, time.perf_counter()
        gens = self.inner.generate(prepared, [min(c, n + 1) for c, n in zip(caps, lengths)])  # n tokens + the end
        self.sync()
        t1 = time.perf_counter()
        first = self._first_head or t1
        s = self.stats
        s["prefill_s"] += first - t0
        s["decode_s"] += t1 - first
        s["calls"] += 1
        s["slots"] += len(gens) * gens[0].steps
        for g, cap, n in zip(gens, caps, lengths):
            # ended: by the model's own end token (random weights may emit it early) or at the page's true length
            ended = not g.hit_token_cap or cap >= n + 1
            if ended:
                s["useful"] += len(g.token_ids) + (0 if g.hit_token_cap else 1)
                s["output_tokens"] += min(len(g.token_ids), n)
            else:
                s["cut_by_estimate"] += 1  # read again at the full cap: these tokens are wasted
            g.hit_token_cap = not ended
        return gens


def load_pages(folder: str, limit: Optional[int]) -> tuple[list[str], list[np.ndarray]]:
    from PIL import Image

    names = sorted(f for f in os.listdir(folder) if f.lower().endswith(".png"))[:limit]
    if not names:
        raise SystemExit(f"no PNG pages in {folder}")
    return names, [np.asarray(Image.open(os.path.join(folder, n)).convert("L")) for n in names]


def measure_est_chars(names: list[str], images: list[np.ndarray]) -> dict[str, int]:
    try:
        from folioscan.records import PageWork
        from folioscan.workers.prep import PrepOptions, prepare_page
    except ImportError as e:
        raise SystemExit(f"measuring est_chars needs folioscan's prep stage ({e}); on a machine with only the "
                         "benchmark's packages pass --hints FILE, written elsewhere with --write-hints FILE") from e
    out = {}
    for name, im in zip(names, images):
        parts = prepare_page(PageWork("bench", name, 0, 1, image=im), PrepOptions())
        out[name] = sum(p.prep.est_chars for p in parts)  # a split spread: the engine reads both halves
    return out


def true_lengths(names: list[str], truth: str, tokenizer) -> list[int]:
    out = []
    for n in names:
        path = os.path.join(truth, os.path.splitext(n)[0] + ".txt")
        if not os.path.isfile(path):
            raise SystemExit(f"no ground truth {path} for page {n} (--truth DIR)")
        text = open(path, encoding="utf-8").read()
        out.append(len(tokenizer(text, add_special_tokens=False)["input_ids"]) if tokenizer
                   else math.ceil(len(text) / CHARS_PER_TEXT_TOKEN))
    return out


def build_model(spec: str, workdir: str) -> tuple[str, str, str]:
    """(kind, directory, weights) for a directory or tiny:KIND / full:KIND."""
    if ":" in spec and not os.path.isdir(spec):
        size, kind = spec.split(":", 1)
        if size not in ("tiny", "full") or kind not in MODELS:
            raise SystemExit(f"--model {spec!r}: a directory, or tiny:KIND / full:KIND with KIND in {sorted(MODELS)}")
        from folioscan.workers.engines.vlm.random_init import save_random_model

        return kind, save_random_model(kind, os.path.join(workdir, kind), full=size == "full"), f"random-{size}"
    arch = json.load(open(os.path.join(spec, "config.json"))).get("architectures", [""])[0]
    kinds = [k for k, s in MODELS.items() if s.model_class == arch]
    if not kinds:
        raise SystemExit(f"{spec}: {arch!r} is none of {[s.model_class for s in MODELS.values()]}")
    return kinds[0], spec, "checkpoint"


def versions() -> dict:
    out = {"python": platform.python_version()}
    for mod, name in (("torch", "torch"), ("transformers", "transformers"), ("tokenizers", "tokenizers"),
                      ("PIL", "pillow"), ("numpy", "numpy"), ("cv2", "opencv"), ("pyarrow", "pyarrow")):
        try:
            out[name] = __import__(mod).__version__
        except ImportError:
            out[name] = None
    return out


def peak_memory(torch, device: str) -> int:
    if device == "cuda":
        return int(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def run_once(engine, probe, images, hints, pool: int, torch, device: str) -> dict:
    probe.reset()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for start in range(0, len(images), pool):  # the OCR stage hands the engine one pool at a time
        engine.predict_batch(images[start:start + pool], hints[start:start + pool])
    probe.sync()
    wall = time.perf_counter() - t0
    s = probe.stats
    phases = {"image_preparation": s["prepare_s"], "prefill": s["prefill_s"], "decode": s["decode_s"]}
    return {"pages": len(images), "wall_s": round(wall, 3), "pages_per_s": round(len(images) / wall, 3),
            "output_tokens_per_s": round(s["output_tokens"] / wall, 1),
            "useful_slot_fraction": round(s["useful"] / max(s["slots"], 1), 4), "decode_slots": s["slots"],
            "useful_slots": s["useful"], "generate_calls": s["calls"], "pages_cut_by_estimate": s["cut_by_estimate"],
            "phase_s": {k: round(v, 3) for k, v in phases.items()}, "phases_sum_s": round(sum(phases.values()), 3),
            "image_preparation_ms_per_page": round(1000 * s["prepare_s"] / max(s["prepared_pages"], 1), 1),
            "peak_memory_bytes": peak_memory(torch, device)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="model directory, or tiny:KIND / full:KIND (random weights)")
    ap.add_argument("--images", required=True, help="folder of PNG pages (e.g. ../shared/eval/old_books/pages)")
    ap.add_argument("--truth", help="folder of <page>.txt ground truth (default: gt/ beside the images folder)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--batch-sizes", default="8,32,128,256", help="pages per generate call, comma-separated")
    ap.add_argument("--pool-batches", type=int, default=4, help="pages per engine call, in generate batches")
    ap.add_argument("--orders", default="length,input", help="batching orders to run: length, input")
    ap.add_argument("--prepare", default="overlapped", help="comma-separated: overlapped (a thread prepares the next batch), serial (prepared in line, as before)")
    ap.add_argument("--limit", type=int, help="first N pages only")
    ap.add_argument("--budget", default="base")
    ap.add_argument("--max-new-tokens", type=int, help="the user's cap (default: the budget's)")
    ap.add_argument("--no-repeat-ngram", type=int, default=20, help="0: without the repetition guard")
    ap.add_argument("--static-cache", action="store_true", help="generate with a static KV cache")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model's forward")
    ap.add_argument("--hints", help="JSON {page file: est_chars} instead of running the prep stage")
    ap.add_argument("--write-hints", help="measure est_chars with the prep stage, write them here and exit")
    args = ap.parse_args(argv)

    names, images = load_pages(args.images, args.limit)
    if args.write_hints:
        json.dump(measure_est_chars(names, images), open(args.write_hints, "w"), indent=0)
        return
    if args.hints:
        table = json.load(open(args.hints))
        est_chars, est_from = [int(table[n]) for n in names], f"file {os.path.basename(args.hints)}"
    else:
        measured = measure_est_chars(names, images)
        est_chars, est_from = [measured[n] for n in names], "prep.prepare_page on each page"

    import torch

    from folioscan.workers.engines.vlm.engine import VlmEngine
    from folioscan.workers.engines.vlm.transformers_backend import TransformersBackend

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible")
    kind, path, weights = build_model(args.model, tempfile.mkdtemp(prefix="vlm-bench-"))
    opts = BenchOptions(kind=kind, model=path, device=args.device, budget=args.budget,
                        max_new_tokens=args.max_new_tokens, no_repeat_ngram=args.no_repeat_ngram)
    backend = TransformersBackend(opts)
    if args.static_cache:
        backend.model.generation_config.cache_implementation = "static"
    if args.compile:
        backend.model.forward = torch.compile(backend.model.forward)
    tokenizer = backend.tokenizer if weights == "checkpoint" else None  # a random model's toy BPE is no measure
    truth = args.truth or os.path.join(os.path.dirname(os.path.normpath(args.images)), "gt")
    lengths = true_lengths(names, truth, tokenizer)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    probe = Probe(backend, {id(im): n for im, n in zip(images, lengths)}, sync)
    hints = [ImageHints(est_chars=c) for c in est_chars]

    est_tokens = [expected_text_tokens(c) for c in est_chars]
    ratios = sorted(n / e for n, e in zip(lengths, est_tokens) if e > 0)
    estimate = {"pages_with_estimate": len(ratios)}
    if ratios:
        estimate.update({q: round(ratios[min(len(ratios) - 1, int(f * len(ratios)))], 3)
                         for q, f in (("min", 0.0), ("median", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))})
    runs = []
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    for bs in batch_sizes:
        for order in args.orders.split(","):
            for prep in args.prepare.split(","):
                engine = VlmEngine(replace(opts, batch_size=bs, batching=order), backend=probe)
                probe.serial = prep == "serial"
                if not runs:  # warm-up: first-call allocations, kernels, compilation
                    run_once(engine, probe, images[:bs], hints[:bs], bs * args.pool_batches, torch, args.device)
                run = run_once(engine, probe, images, hints, bs * args.pool_batches, torch, args.device)
                runs.append({"batch_size": bs, "batching": order, "prepare": prep, **run})
                print(json.dumps(runs[-1]), file=sys.stderr, flush=True)

    best = max((r for r in runs if r["batching"] == "length" and r["prepare"] == "overlapped") or runs,
               key=lambda r: r["pages_per_s"])
    report = {
        "benchmark": "vlm_throughput", "model": args.model, "kind": kind, "weights": weights,
        "device": args.device,
        "device_name": torch.cuda.get_device_name(0) if args.device == "cuda" else f"cpu ({os.cpu_count()} cores, {platform.machine()})",
        "budget": args.budget, "pages": len(images), "images": os.path.abspath(args.images),
        "lengths_from": "ground truth, " + ("tokenizer of the model" if tokenizer else f"chars / {CHARS_PER_TEXT_TOKEN} per token"),
        "est_chars_from": est_from, "true_over_estimated_tokens": estimate, "batch_sizes": batch_sizes, "pool_batches": args.pool_batches,
        "static_cache": args.static_cache, "compile": args.compile, "no_repeat_ngram": args.no_repeat_ngram,
        "max_new_tokens": args.max_new_tokens, "versions": versions(),
        "pages_per_s": best["pages_per_s"], "output_tokens_per_s": best["output_tokens_per_s"],
        "peak_memory_bytes": max(r["peak_memory_bytes"] for r in runs), "phase_s": best["phase_s"],
        "image_preparation_ms_per_page": best["image_preparation_ms_per_page"], "best_batch_size": best["batch_size"],
        "useful_slot_fraction": {("scheduled" if o == "length" else "input_order"): {str(r["batch_size"]): r["useful_slot_fraction"]
                                 for r in runs if r["batching"] == o} for o in dict.fromkeys(args.orders.split(","))},
        "runs": runs,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
