"""VLM at real size on the CPU: the published architectures (random weights) through folioscan's
TransformersBackend, to rehearse what a GPU run will cost per page. Prints JSON: one line per
measurement as it finishes (flushed), then a summary object.

    python bench/vlm_rehearsal.py --model full:got-ocr2 --model full:deepseek-ocr-2 \
        --images ../shared/eval/old_books/pages --pages 1,2,4,8 > /tmp/rehearsal.jsonl
    python bench/vlm_rehearsal.py --model full:deepseek-ocr-2 --encoder-only --limit-gb 16.3  # see below
    python bench/vlm_rehearsal.py --summarize /tmp/rehearsal.jsonl [more.jsonl ...]            # summary again

In fp32 DeepSeek-OCR-2's weights alone are 13.56 GB: under the default 16 GB guard its memory
table stops where one view's encoder (1.8 GB) no longer fits beside them, and no page count
without micro-batching fits at all; `--encoder-only` measures that column with the language
model dropped. bf16 is far slower than fp32 on a CPU without BF16 instructions (`--dtype-probe`).

Per model, in one worker process (the parent relays its lines and writes the summary):

A. parameters (total; vision, projector, language model; for the MoE the routed experts apart),
   bytes of the weights in the run dtype, seconds to build the model in memory
   (random_init.build_random_model: no save and reload).
C. rehearsal (runs first, so it also warms the process up): `--rehearsal-pages` pages end to end
   through `backend.generate` with a cap of `--rehearsal-cap` tokens; vision-encode seconds per
   page, prefill seconds, seconds per decode step (the model's forward only, after prefill), and
   the KV cache bytes per generated token per sequence measured on the cache object generate
   passes through the model's forward (bytes after the last step minus bytes after prefill, over
   the tokens appended and the pages), beside the figure derived from the config.
B. peak memory of ONE `backend.generate(prepared, cap)` call (`--cap`, default 2 tokens) at each
   page count of `--pages`, with micro-batching (`vision_batch` = `--micro-batch` views per
   encoder call) and without (`vision_batch` = pages: the whole batch through the encoder at
   once, as transformers' generate did). A point whose predicted peak (the measured one-view
   encoder cost times the views, plus the decoder's) would pass `--limit-gb` is skipped and
   recorded as such. The peak is split into the encoder phase (up to the end of
   `vision_features`) and the decoder phase (prefill and decode).
D. (summary) a roofline ESTIMATE of pages/s per H100 SXM and H200 from the measured per-page
   costs (vision FLOPs per view counted by torch's FlopCounterMode on a meta-device copy, LM
   FLOPs from the parameter counts, KV bytes per token as measured, weights as counted).

Memory method: each measured call runs in the worker after `gc.collect()` and glibc's
`malloc_trim(0)` (freed memory handed back, so the baseline RSS is what is live); the baseline is
VmRSS, the kernel's high-water mark VmHWM is reset through /proc/self/clear_refs ("5") and read
after the phase: peak RSS above the baseline, exact (kernel-counted, no sampling gap). Where
clear_refs cannot be written, a sampler thread reading VmRSS every 20 ms gives it instead
(`memory_method` says which). The same sampler always runs as a guard: a worker whose RSS passes
`--limit-gb` exits at once (the point is recorded as over the limit). `--isolate` runs each
memory point in a fresh worker (a new build each time) instead.

Random weights: these are costs of the compute graph, never accuracy. CPU timings on a shared
machine are indicative only. Pages: 1024-px `base` views of `--images` (grayscale scans), or
synthetic text pages of the same size when the folder is absent (the JSON says which).

Runs in a virtualenv of only torch, transformers, tokenizers, pillow, numpy, opencv-python-headless
and pyarrow (psutil is not needed).
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import platform
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

# vendors' datasheet figures (dense bf16, no sparsity)
GPUS = {
    "H100 SXM": {"hbm_bytes_per_s": 3.35e12, "bf16_flops_per_s": 989e12, "memory_bytes": 80e9},
    "H200": {"hbm_bytes_per_s": 4.8e12, "bf16_flops_per_s": 989e12, "memory_bytes": 141e9},
}
GPU_DTYPE_BYTES = 2  # the GPU runs bf16


def emit(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


# ---- memory ---------------------------------------------------------------------------------
def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        m = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
    return int(m.group(1)) * 1024


def rss() -> int:
    return _status("VmRSS")


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        return int(re.search(r"^MemAvailable:\s+(\d+) kB", f.read(), re.M).group(1)) * 1024


def reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class Sampler(threading.Thread):
    """VmRSS every `interval` s: the running maximum since `mark()`, and a guard that ends the
    process when RSS passes `limit` (a shared machine must not be run out of memory)."""

    def __init__(self, limit: int, interval: float = 0.02):
        super().__init__(daemon=True)
        self.limit, self.interval, self.max = limit, interval, 0
        self.context = {}

    def mark(self) -> None:
        self.max = rss()

    def run(self) -> None:
        while True:
            now = rss()
            self.max = max(self.max, now)
            if now > self.limit:
                emit({"event": "over_limit", "rss_bytes": now, "limit_bytes": self.limit, **self.context})
                os._exit(3)
            time.sleep(self.interval)


class Meter:
    """Peak RSS above a baseline taken just before a call, per phase."""

    def __init__(self, sampler: Sampler):
        self.sampler = sampler
        self.kernel = reset_hwm()
        self.method = ("VmHWM reset through /proc/self/clear_refs, baseline VmRSS after gc + malloc_trim"
                       if self.kernel else "VmRSS sampled every 20 ms, baseline after gc + malloc_trim")
        self.base = 0

    def start(self) -> int:
        trim()
        self.base = rss()
        self.restart()
        return self.base

    def restart(self) -> None:
        if self.kernel:
            reset_hwm()
        self.sampler.mark()

    def peak(self) -> int:
        """Bytes above the baseline since the last start/restart."""
        if self.kernel:
            return _status("VmHWM") - self.base
        return self.sampler.max - self.base

    def sampled(self) -> int:
        return self.sampler.max - self.base


# ---- pages ----------------------------------------------------------------------------------
def synthetic_page(seed: int, h: int = 2621, w: int = 1850) -> np.ndarray:
    """A grayscale page of printed-looking text lines (OpenCV Hershey font) at a scan's size."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.full((h, w), 235, np.uint8)
    words = "the of and to in that it was his he with as for had you not be her on at by which".split()
    y = 160
    while y < h - 160:
        line = " ".join(rng.choice(words, 9))
        cv2.putText(img, line, (140, y), cv2.FONT_HERSHEY_COMPLEX, 1.6, 20, 2, cv2.LINE_AA)
        y += 62
    return img


def load_pages(folder: str, n: int) -> tuple[list[np.ndarray], dict]:
    from PIL import Image

    names = sorted(f for f in os.listdir(folder) if f.lower().endswith(".png"))[:n] if os.path.isdir(folder) else []
    if names:
        images = [np.asarray(Image.open(os.path.join(folder, f)).convert("L")) for f in names]
        return images, {"source": "images", "folder": os.path.abspath(folder), "files": names,
                        "sizes": sorted({f"{im.shape[0]}x{im.shape[1]}" for im in images})}
    images = [synthetic_page(i) for i in range(n)]
    return images, {"source": "synthetic", "why": f"no PNG pages in {os.path.abspath(folder)}",
                    "sizes": [f"{images[0].shape[0]}x{images[0].shape[1]}"]}


# ---- the model ------------------------------------------------------------------------------
@dataclass
class Options:
    """The VlmOptions attributes TransformersBackend reads (VlmOptions itself is pydantic)."""

    kind: str
    model: Optional[str]
    device: str
    dtype: str
    vision_batch: float
    no_repeat_ngram: int = 20
    no_repeat_window: int = 90


def param_split(model) -> dict:
    """Parameters by part; the language model's also by role (the MoE's routed experts apart)."""
    out = dict(total=0, vision=0, projector=0, language_model=0, lm_embed_tokens=0, lm_head=0, lm_routed_experts=0,
               lm_shared_experts=0)
    for name, p in model.named_parameters():
        n = p.numel()
        out["total"] += n
        if "vision_tower" in name:
            out["vision"] += n
        elif "multi_modal_projector" in name or "view_separator" in name:
            out["projector"] += n
        else:  # language_model.* and lm_head
            out["language_model"] += n
            if "embed_tokens" in name:
                out["lm_embed_tokens"] += n
            elif name.startswith("lm_head"):
                out["lm_head"] += n
            elif ".mlp.experts." in name:
                out["lm_routed_experts"] += n
            elif ".mlp.shared_experts." in name:
                out["lm_shared_experts"] += n
    out["lm_body"] = out["language_model"] - out["lm_embed_tokens"] - out["lm_head"]  # layers + final norm
    head, embed = model.get_output_embeddings().weight, model.get_input_embeddings().weight
    out["lm_head_tied_to_embed_tokens"] = head.data_ptr() == embed.data_ptr()  # then counted once, in lm_embed_tokens
    out["lm_head_read_per_step"] = head.numel()  # every decode step reads the whole head, tied or not
    return out


def lm_shape(model) -> dict:
    cfg = model.config.get_text_config()
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return {"layers": cfg.num_hidden_layers, "heads": heads, "kv_heads": getattr(cfg, "num_key_value_heads", heads),
            "head_dim": head_dim, "hidden": cfg.hidden_size, "vocab": cfg.vocab_size,
            "routed_experts": getattr(cfg, "n_routed_experts", 0) or 0,
            "experts_per_token": getattr(cfg, "num_experts_per_tok", 0) or 0}


def vision_flops(meta_model, kind: str, pixel_shape: tuple) -> dict:
    """FLOPs of the vision tower + projector for one view, counted by FlopCounterMode on a
    meta-device copy of the model (nothing is computed)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    kwargs = {"pixel_values": torch.empty(1, *pixel_shape[1:], device="meta")}
    if kind == "deepseek-ocr-2":
        kwargs["num_local_patches"] = [0]
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        meta_model.model.get_image_features(**kwargs, return_dict=True)
    return {"per_view": int(counter.get_total_flops()), "view_shape": list(pixel_shape[1:]),
            "by_op": {str(k): int(v) for k, v in counter.get_flop_counts()["Global"].items()},
            "counted_by": "torch.utils.flop_counter.FlopCounterMode, meta device"}


def cache_bytes(cache) -> tuple[int, int]:
    """(bytes of every key/value tensor, sequence length) of a transformers cache object."""
    import torch

    if cache is None:
        return 0, 0
    tensors = []
    for layer in getattr(cache, "layers", None) or []:
        tensors += [getattr(layer, "keys", None), getattr(layer, "values", None)]
    for attr in ("key_cache", "value_cache"):  # older caches
        tensors += list(getattr(cache, attr, None) or [])
    total = sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t))
    length = int(cache.get_seq_length()) if hasattr(cache, "get_seq_length") else 0
    return total, length


class Instrument:
    """Around one backend.generate: times vision_features (instance attribute over the method:
    folioscan's code is untouched) and every forward of the model (the first is prefill), reads
    the cache after each forward, and splits the peak memory at the end of vision encoding."""

    def __init__(self, backend, meter: Optional[Meter], read_cache: bool):
        self.backend, self.meter, self.read_cache = backend, meter, read_cache
        self.vision_s, self.vision_calls, self.encoder_peak, self.forwards = 0.0, [], None, []
        self._orig = backend.vision_features
        backend.vision_features = self._vision
        self._hooks = [backend.model.register_forward_pre_hook(self._pre, with_kwargs=True),
                       backend.model.register_forward_hook(self._post, with_kwargs=True)]
        self._t = 0.0

    def _vision(self, prepared, limit=None):
        t0 = time.perf_counter()
        out = self._orig(prepared, limit)
        self.vision_s += time.perf_counter() - t0
        self.vision_calls.append(len(prepared))
        if self.meter is not None:
            self.encoder_peak = self.meter.peak()
            self.encoder_sampled = self.meter.sampled()
            trim()  # what the encoder freed goes back first: the decoder phase counts only its own
            self.meter.restart()
        return out

    def _pre(self, module, args, kwargs):
        self._t = time.perf_counter()

    def _post(self, module, args, kwargs, out):
        t1 = time.perf_counter()
        cache = getattr(out, "cache", None)  # transformers 5.25; `past_key_values` before
        if cache is None and "cache" not in getattr(out, "__dataclass_fields__", {}):
            cache = getattr(out, "past_key_values", None)
        nbytes, length = cache_bytes(cache) if self.read_cache else (0, 0)
        self.forwards.append({"s": t1 - self._t, "start": self._t, "cache_bytes": nbytes, "cache_len": length})

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        del self.backend.vision_features


def micro_batch_sizes(backend, prepared, limit) -> list[int]:
    from folioscan.workers.engines.vlm.transformers_backend import micro_batches, view_weight

    parts = backend._split(prepared.inputs, prepared.vision_tokens, backend.spec)
    return [len(g) for g in micro_batches([view_weight(p) for p in parts], limit)]


# ---- the worker -----------------------------------------------------------------------------
def worker(args) -> None:
    import torch
    import transformers

    from folioscan.workers.engines.vlm.models import spec
    from folioscan.workers.engines.vlm.random_init import build_random_model
    from folioscan.workers.engines.vlm.transformers_backend import TransformersBackend

    size, kind = args.model.split(":", 1)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    limit = int(args.limit_gb * 1e9)
    sampler = Sampler(limit)
    sampler.context = {"model": args.model}
    sampler.start()
    meter = Meter(sampler)
    pages = [int(p) for p in args.pages.split(",")]
    points = set(args.points.split(",")) if args.points else None
    need = max(pages + [args.rehearsal_pages if args.rehearsal else 0])
    images, page_info = load_pages(args.images, need)
    images = [images[i % len(images)] for i in range(need)]  # fewer files than pages: reused
    budget = spec(kind).budget(args.budget)

    # A: the model (a meta-device copy first: its size, checked against the free memory, and its FLOPs)
    meta_model, _ = build_random_model(kind, full=size == "full", device="meta", dtype=dtype)
    need_bytes = sum(p.numel() for p in meta_model.parameters()) * (torch.finfo(dtype).bits // 8)
    if rss() + need_bytes > limit or need_bytes > mem_available() - 2e9:
        emit({"event": "model_skipped", "model": args.model, "dtype": args.dtype, "weight_bytes": need_bytes,
              "mem_available_bytes": mem_available(), "limit_bytes": limit,
              "why": "the weights alone would pass --limit-gb or the machine's free memory less 2 GB"})
        return
    t0 = time.perf_counter()
    model, processor = build_random_model(kind, full=size == "full", dtype=dtype)
    build_s = time.perf_counter() - t0
    trim()
    split = param_split(model)
    shape = lm_shape(model)
    elt = torch.finfo(dtype).bits // 8
    backends = {}

    def backend_for(vision_batch: float):
        if vision_batch not in backends:
            backends[vision_batch] = TransformersBackend(
                Options(kind=kind, model=None, device="cpu", dtype=args.dtype, vision_batch=vision_batch),
                model=model, processor=processor)
        return backends[vision_batch]

    first = backend_for(float(args.micro_batch))
    one = first.prepare(images[:1], budget)
    pixel_shape = tuple(one.inputs["pixel_values"].shape)
    flops = vision_flops(meta_model, kind, pixel_shape)
    del meta_model
    trim()
    info = {"event": "model", "model": args.model, "kind": kind, "dtype": args.dtype, "budget": args.budget,
            "build_s": round(build_s, 2), "params": split, "weight_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
            "weight_bytes_by_part": {k: v * elt for k, v in split.items() if k in ("vision", "projector", "language_model")},
            "rss_after_build_bytes": rss(), "mem_available_bytes": mem_available(), "lm": shape,
            "vision_flops": flops, "prompt_tokens_per_page": one.prompt_lens[0],
            "vision_tokens_per_page": one.vision_tokens[0], "views_per_page": 1 if args.budget == "base" else None,
            "pages": page_info, "memory_method": meter.method, "torch_threads": torch.get_num_threads(),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()}}
    emit(info)

    del one

    def subset(n: int):  # prepared per call, so the baseline holds no other call's pixels
        return first.prepare(images[:n], budget)

    # C: the rehearsal, end to end
    if args.rehearsal and not args.encoder_only:
        n = args.rehearsal_pages
        backend = first
        prepared = subset(n)
        inst = Instrument(backend, meter, read_cache=True)
        meter.start()
        t0 = time.perf_counter()
        gens = backend.generate(prepared, args.rehearsal_cap)
        wall = time.perf_counter() - t0
        whole = max(inst.encoder_peak or 0, meter.peak())
        inst.close()
        fw = inst.forwards
        prefill, steps = fw[0], fw[1:]
        step_s = sorted(f["s"] for f in steps)
        gaps = sorted(b["start"] - a["start"] for a, b in zip(fw[1:], fw[2:]))
        appended = steps[-1]["cache_len"] - prefill["cache_len"] if steps else 0
        measured = (steps[-1]["cache_bytes"] - prefill["cache_bytes"]) / appended / n if appended else None
        derived = shape["layers"] * 2 * shape["kv_heads"] * shape["head_dim"] * elt
        emit({"event": "rehearsal", "model": args.model, "dtype": args.dtype, "pages": n, "cap": args.rehearsal_cap,
              "vision_batch": backend.vision_batch, "encoder_calls": len(inst.vision_calls),
              "micro_batches": micro_batch_sizes(backend, prepared, backend.vision_batch),
              "output_tokens": [len(g.token_ids) for g in gens], "steps": gens[0].steps,
              "vision_encode_s": round(inst.vision_s, 2), "vision_encode_s_per_page": round(inst.vision_s / n, 2),
              "prefill_s": round(prefill["s"], 2), "prefill_tokens": prefill["cache_len"] * n,
              "decode_steps_timed": len(steps),
              "decode_step_s": {"median": round(step_s[len(step_s) // 2], 4), "min": round(step_s[0], 4),
                                "max": round(step_s[-1], 4), "mean": round(sum(step_s) / len(step_s), 4)} if step_s else None,
              "decode_step_wall_s_median": round(gaps[len(gaps) // 2], 4) if gaps else None,
              "generate_wall_s": round(wall, 2),
              "kv_cache": {"bytes_after_prefill": prefill["cache_bytes"], "len_after_prefill": prefill["cache_len"],
                           "bytes_at_end": steps[-1]["cache_bytes"] if steps else None,
                           "len_at_end": steps[-1]["cache_len"] if steps else None,
                           "bytes_per_token_per_sequence_measured": measured,
                           "bytes_per_token_per_sequence_prefill": prefill["cache_bytes"] / prefill["cache_len"] / n,
                           "bytes_per_token_per_sequence_config": derived,
                           "config_formula": f"layers {shape['layers']} x 2 x kv_heads {shape['kv_heads']} x head_dim {shape['head_dim']} x {elt} B"},
              "peak_bytes": {"call": whole, "encoder_phase": inst.encoder_peak, "decoder_phase": meter.peak()},
              "baseline_rss_bytes": meter.base})

    if args.encoder_only:
        encoder_only(args, model, first, subset, meter, sampler, pages, limit)
        emit({"event": "worker_done", "model": args.model, "ru_maxrss_bytes": _ru_maxrss()})
        return

    # B: peak memory of one generate call against pages, with and without micro-batching
    plan = [("with", n, float(args.micro_batch)) for n in pages]
    plan += [("without", n, float(n)) for n in pages if n > args.micro_batch]
    measured: dict[tuple[str, int], dict] = {}
    for mode, n, vb in plan:
        tag = f"{mode}:{n}"
        if points is not None and tag not in points:
            continue
        backend = backend_for(vb)
        prepared = subset(n)
        trim()
        base_abs = rss()
        one = measured.get(("with", 1))
        predicted = None
        if one and one.get("encoder_phase") is not None:
            views = min(n, vb)
            enc = one["encoder_phase"] / max(one["views_per_encoder_call"], 1) * views
            prev = [m for (md, k), m in measured.items() if md == "with"]
            dec = max(m["decoder_phase"] / m["pages"] for m in prev) * n
            predicted = int(max(enc, dec))
            room = min(limit - base_abs, mem_available() - 2e9)
            if predicted * 1.03 + 50e6 > room:  # a margin: the guard would end the worker mid-call
                emit({"event": "memory_point", "model": args.model, "mode": mode, "pages": n, "vision_batch": vb,
                      "skipped": True, "predicted_peak_bytes": predicted, "room_bytes": room,
                      "why": f"predicted peak {predicted / 1e9:.1f} GB above the {base_abs / 1e9:.1f} GB baseline "
                             f"passes the room left ({room / 1e9:.1f} GB: --limit-gb {args.limit_gb} for the "
                             f"process, or the machine's free memory less 2 GB)"})
                continue
        sampler.context = {"model": args.model, "mode": mode, "pages": n, "vision_batch": vb}
        inst = Instrument(backend, meter, read_cache=False)
        meter.start()
        t0 = time.perf_counter()
        backend.generate(prepared, args.cap)
        wall = time.perf_counter() - t0
        dec = meter.peak()
        sampled = meter.sampled()
        inst.close()
        rec = {"event": "memory_point", "model": args.model, "dtype": args.dtype, "mode": mode, "pages": n,
               "vision_batch": vb, "cap": args.cap, "views_per_encoder_call": max(micro_batch_sizes(backend, prepared, vb)),
               "encoder_calls": len(micro_batch_sizes(backend, prepared, vb)),
               "peak_bytes": max(inst.encoder_peak, dec), "encoder_phase": inst.encoder_peak, "decoder_phase": dec,
               "sampled_peak_bytes": {"encoder_phase": inst.encoder_sampled, "decoder_phase": sampled},
               "baseline_rss_bytes": meter.base, "predicted_peak_bytes": predicted,
               "vision_encode_s": round(inst.vision_s, 2), "prefill_s": round(inst.forwards[0]["s"], 2),
               "generate_wall_s": round(wall, 2), "same_as": "with:1" if mode == "with" and n <= args.micro_batch else None}
        measured[(mode, n)] = rec
        emit(rec)
    sampler.context = {"model": args.model}
    emit({"event": "worker_done", "model": args.model, "ru_maxrss_bytes": _ru_maxrss()})


def encoder_only(args, model, backend, subset, meter, sampler, pages, limit) -> None:
    """The encoder phase alone where the whole model does not leave room for it: the language
    model and its head are dropped (after the backend was built), and `backend.vision_features`
    runs with `limit` = views, i.e. all of a call's views in one encoder call (no micro-batching)."""
    import torch

    model.model.language_model = torch.nn.Module()  # its weights freed; vision tower and projector stay
    model.lm_head = torch.nn.Module()
    trim()
    emit({"event": "encoder_only", "model": args.model, "rss_without_language_model_bytes": rss(),
          "weights_left_bytes": sum(p.numel() * p.element_size() for p in model.parameters())})
    per_view = None
    for n in pages:
        prepared = subset(n)
        trim()
        base_abs = rss()
        if per_view is not None and per_view * n * 1.03 + 50e6 > min(limit - base_abs, mem_available() - 2e9):
            emit({"event": "encoder_point", "model": args.model, "views": n, "skipped": True,
                  "predicted_peak_bytes": int(per_view * n), "room_bytes": int(min(limit - base_abs, mem_available() - 2e9))})
            continue
        sampler.context = {"model": args.model, "encoder_only_views": n}
        meter.start()
        t0 = time.perf_counter()
        backend.vision_features(prepared, limit=float(n))
        seconds = time.perf_counter() - t0
        peak = meter.peak()
        per_view = max(per_view or 0, peak / n)
        emit({"event": "encoder_point", "model": args.model, "dtype": args.dtype, "views": n, "views_per_encoder_call": n,
              "peak_bytes": peak, "sampled_peak_bytes": meter.sampled(), "baseline_rss_bytes": meter.base,
              "vision_encode_s": round(seconds, 2)})
        del prepared


def _ru_maxrss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def dtype_probe() -> dict:
    """Seconds of two of SAM's operations in fp32 and bf16 on this CPU (the dtype decision)."""
    import torch

    out = {}
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        with torch.inference_mode():
            a, w = torch.randn(4096, 768, dtype=dt), torch.randn(2304, 768, dtype=dt)
            conv = torch.nn.Conv2d(256, 256, 3, padding=1).to(dt)
            x = torch.randn(1, 256, 32, 32, dtype=dt)
            times = {}
            for op, f in (("linear_4096x768x2304", lambda: torch.nn.functional.linear(a, w)), ("conv3x3_256ch_32x32", lambda: conv(x))):
                f()
                t0 = time.perf_counter()
                f()
                times[op] = round(time.perf_counter() - t0, 4)
        out[name] = times
    return out


# ---- the parent: workers, summary, roofline -------------------------------------------------
def slope(points: list[tuple[int, int]]) -> Optional[float]:
    """Least-squares bytes per page."""
    if len({p for p, _ in points}) < 2:
        return None
    xs, ys = np.array([p for p, _ in points], float), np.array([b for _, b in points], float)
    return float(np.polyfit(xs, ys, 1)[0])


def roofline(model: dict, rehearsal: Optional[dict], out_tokens: int, batches: list[int]) -> dict:
    """ESTIMATE of pages/s per GPU at the base budget: decode memory-bound (weights read once per
    step + every sequence's KV cache), vision and prefill compute-bound, phases not overlapped."""
    p, lm = model["params"], model["lm"]
    prompt = model["prompt_tokens_per_page"]
    kv_run = (rehearsal or {}).get("kv_cache", {}).get("bytes_per_token_per_sequence_measured")
    kv_from = "measured on the CPU run's cache"
    if not kv_run:
        kv_run = lm["layers"] * 2 * lm["kv_heads"] * lm["head_dim"] * (4 if model["dtype"] == "fp32" else 2)
        kv_from = "config (no rehearsal)"
    kv_token = kv_run * GPU_DTYPE_BYTES / (4 if model["dtype"] == "fp32" else 2)
    e, k = lm["routed_experts"], lm["experts_per_token"]
    routed = p["lm_routed_experts"]
    head = p.get("lm_head_read_per_step") or p["lm_head"] or p["lm_embed_tokens"]  # 0: tied to the embedding
    body_active = p["lm_body"] - routed + (routed * k / e if e else 0)
    read_all = (p["lm_body"] + head) * GPU_DTYPE_BYTES  # the input embedding table is only looked up
    read_active = (body_active + head) * GPU_DTYPE_BYTES
    weights = p["total"] * GPU_DTYPE_BYTES
    ctx_avg = prompt + out_tokens / 2
    attn = lambda ctx: 4 * lm["layers"] * lm["heads"] * lm["head_dim"] * ctx  # noqa: E731  (QK^T and AV, per token)
    decode_flops_token = 2 * (body_active + head) + attn(ctx_avg)
    prefill_flops = 2 * body_active * prompt + 2 * head + 2 * lm["layers"] * lm["heads"] * lm["head_dim"] * prompt ** 2
    vision = model["vision_flops"]["per_view"] * (model.get("views_per_page") or 1)
    out = {"ESTIMATE": True, "assumptions": {
        "output_tokens_per_page": out_tokens, "prompt_tokens_per_page": prompt, "dtype": "bf16 (2 B per weight and KV value)",
        "kv_bytes_per_token_per_sequence_bf16": kv_token, "kv_from": kv_from + ", scaled to 2 B",
        "mean_context_during_decode": ctx_avg, "weights_bytes_bf16": weights,
        "decode_weight_bytes_per_step_all_experts": read_all, "decode_weight_bytes_per_step_active_experts": read_active,
        "vision_flops_per_page": vision, "prefill_flops_per_page": prefill_flops,
        "decode_flops_per_token": decode_flops_token,
        "phases": "vision + prefill compute-bound at the datasheet's dense bf16 peak, decode memory-bound at the "
                  "datasheet's HBM bandwidth (or compute-bound where that is slower); phases summed, not overlapped; "
                  "100% of datasheet figures, so these are upper bounds on pages/s",
        "kv_capacity": "GPU memory minus all weights (bf16), no allowance for activations or the encoder's "
                       "workspace, over the KV cache of one sequence at prompt + output tokens"}}
    if e:
        out["assumptions"]["experts_hit_per_layer_uniform_routing"] = {
            str(b): round(1 - (1 - k / e) ** b, 4) for b in [1] + batches}
    for gpu, g in GPUS.items():
        compute_s = (vision + prefill_flops) / g["bf16_flops_per_s"]
        capacity = int((g["memory_bytes"] - weights) // (kv_token * (prompt + out_tokens)))
        rows = []
        for b in batches:
            eff = min(b, capacity)
            row = {"batch": b, "kv_capacity_sequences": capacity, "batch_fits_kv": b <= capacity, "batch_used": eff}
            for label, read in (("all_experts_read", read_all), ("active_experts_only", read_active)):
                step_mem = (read + eff * kv_token * ctx_avg) / g["hbm_bytes_per_s"]
                step_cmp = eff * decode_flops_token / g["bf16_flops_per_s"]
                step = max(step_mem, step_cmp)
                per_page = out_tokens * step / eff + compute_s
                row[label] = {"pages_per_s": round(1 / per_page, 1), "decode_step_ms": round(step * 1e3, 3),
                              "step_bound": "memory" if step_mem >= step_cmp else "compute",
                              "decode_s_per_page": round(out_tokens * step / eff, 5)}
            if not e:
                row = {**{k2: v for k2, v in row.items() if k2 != "active_experts_only"}}
                row["dense"] = row.pop("all_experts_read")
            rows.append(row)
        out[gpu] = {"vision_plus_prefill_s_per_page": compute_s, "vision_s_per_page": vision / g["bf16_flops_per_s"],
                    "datasheet": g, "batches": rows}
    return out


def summarize(records: dict[str, list[dict]], args, exits: list[dict], wall_s: Optional[float]) -> dict:
    summary = {"benchmark": "vlm_rehearsal", "command": " ".join(["python", "bench/vlm_rehearsal.py", *args.argv]),
               "device": f"cpu ({os.cpu_count()} cores, {platform.machine()}), shared machine",
               "dtype": sorted({r["dtype"] for recs in records.values() for r in recs if r.get("event") == "model"}),
               "budget": args.budget, "random_weights": "costs of the compute graph only, never accuracy",
               "wall_s": wall_s, "workers": exits, "models": {}}
    batches = [int(b) for b in args.roofline_batches.split(",")]
    for m, recs in records.items():
        model = next((r for r in recs if r["event"] == "model"), None)
        reh = next((r for r in reversed(recs) if r["event"] == "rehearsal"), None)
        pts = list({(r["mode"], r["pages"]): r for r in recs if r["event"] == "memory_point"}.values())  # a rerun's last
        done = [r for r in pts if not r.get("skipped")]
        over = [r for r in recs if r["event"] == "over_limit"]
        series = {}
        for mode in ("with", "without"):
            rows = [r for r in done if r["mode"] == mode or (mode == "without" and r.get("same_as") == "with:1")]
            rows.sort(key=lambda r: r["pages"])
            series[mode] = {
                "pages": [r["pages"] for r in rows], "peak_bytes": [r["peak_bytes"] for r in rows],
                "encoder_phase": [r["encoder_phase"] for r in rows], "decoder_phase": [r["decoder_phase"] for r in rows],
                "slope_bytes_per_page": slope([(r["pages"], r["peak_bytes"]) for r in rows]),
                "encoder_phase_slope": slope([(r["pages"], r["encoder_phase"]) for r in rows]),
                "decoder_phase_slope": slope([(r["pages"], r["decoder_phase"]) for r in rows])}
        enc = sorted((r for r in recs if r["event"] == "encoder_point" and not r.get("skipped")), key=lambda r: r["views"])
        if enc:  # --encoder-only: the encoder phase without micro-batching, language model dropped
            series["without_encoder_only"] = {"pages": [r["views"] for r in enc], "encoder_phase": [r["peak_bytes"] for r in enc],
                                              "encoder_phase_slope": slope([(r["views"], r["peak_bytes"]) for r in enc]),
                                              "skipped": [r for r in recs if r["event"] == "encoder_point" and r.get("skipped")]}
        entry = {"model": model, "memory": {"series": series, "skipped": [r for r in pts if r.get("skipped")],
                                            "over_limit": over, "memory_method": (model or {}).get("memory_method")},
                 "rehearsal": reh}
        if model:
            entry["roofline_ESTIMATE"] = roofline(model, reh, args.output_tokens, batches)
        summary["models"][m] = entry
    return summary


def run_worker(args, model: str, extra: list[str]) -> tuple[list[dict], dict]:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--model", model, "--images", args.images,
           "--pages", args.pages, "--micro-batch", str(args.micro_batch), "--cap", str(args.cap),
           "--rehearsal-pages", str(args.rehearsal_pages), "--rehearsal-cap", str(args.rehearsal_cap),
           "--dtype", args.dtype, "--budget", args.budget, "--limit-gb", str(args.limit_gb),
           *(["--encoder-only"] if args.encoder_only else []), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stdout:
        line = line.strip()
        if not line.startswith("{"):
            continue
        rec = json.loads(line)
        lines.append(rec)
        print(line, flush=True)
    _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    end = {"event": "worker_exit", "model": model, "exit_code": code, "ru_maxrss_bytes": usage.ru_maxrss * 1024,
           "ru_maxrss_note": "since the worker's last VmHWM reset (writing 5 to clear_refs resets it too)", "args": extra}
    emit(end)
    return lines, end


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", help="full:KIND or tiny:KIND (random weights); repeat for several "
                    "(default: full:got-ocr2 and full:deepseek-ocr-2)")
    ap.add_argument("--images", default=os.path.join(ROOT, "..", "shared", "eval", "old_books", "pages"))
    ap.add_argument("--pages", default="1,2,4,8", help="pages per generate call for the memory table")
    ap.add_argument("--micro-batch", type=int, default=1, help="vision_batch with micro-batching (views per encoder call)")
    ap.add_argument("--cap", type=int, default=2, help="output tokens of the memory table's generate calls")
    ap.add_argument("--rehearsal-pages", type=int, default=2)
    ap.add_argument("--rehearsal-cap", type=int, default=24)
    ap.add_argument("--no-rehearsal", dest="rehearsal", action="store_false")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--budget", default="base")
    ap.add_argument("--limit-gb", type=float, default=16.0, help="the worker's RSS may not pass this (GB, 1e9 bytes)")
    ap.add_argument("--points", help="memory points to run only, e.g. with:1,without:4 (default: all)")
    ap.add_argument("--encoder-only", action="store_true", help="no generate: the language model dropped, the encoder "
                    "phase without micro-batching at each of --pages views (where the whole model leaves no room for it)")
    ap.add_argument("--isolate", action="store_true", help="each memory point in a fresh worker (rebuilds the model)")
    ap.add_argument("--output-tokens", type=int, default=600, help="per page, for the roofline estimate")
    ap.add_argument("--roofline-batches", default="32,128,256")
    ap.add_argument("--dtype-probe", action="store_true", help="time two SAM operations in fp32 and bf16 first")
    ap.add_argument("--summarize", nargs="+", metavar="JSONL", help="no run: the summary of earlier runs' lines")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    if args.worker:
        args.model = args.model[0]
        return worker(args)

    if args.summarize:
        records: dict[str, list[dict]] = {}
        exits = []
        for path in args.summarize:
            for line in open(path):
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # the indented summary
                if isinstance(rec, dict) and rec.get("event") == "worker_exit":
                    exits.append(rec)
                elif isinstance(rec, dict) and "model" in rec and "event" in rec:
                    records.setdefault(rec["model"], []).append(rec)
        print(json.dumps(summarize(records, args, exits, None), indent=1), flush=True)
        return
    models = args.model or ["full:got-ocr2", "full:deepseek-ocr-2"]
    started = time.time()
    if args.dtype_probe:
        emit({"event": "dtype_probe", "seconds": dtype_probe()})
    records: dict[str, list[dict]] = {}
    exits = []
    for m in models:
        if args.isolate:
            recs, end = run_worker(args, m, ["--no-rehearsal", "--points", "none"] if not args.rehearsal else ["--points", "none"])
            exits.append(end)
            plan = [f"with:{n}" for n in args.pages.split(",")] + [f"without:{n}" for n in args.pages.split(",")
                                                                   if int(n) > args.micro_batch]
            for point in plan:
                more, end = run_worker(args, m, ["--no-rehearsal", "--points", point])
                recs += [r for r in more if r["event"] == "memory_point"]
                exits.append(end)
        else:
            extra = ([] if args.rehearsal else ["--no-rehearsal"]) + (["--points", args.points] if args.points else [])
            recs, end = run_worker(args, m, extra)
            exits.append(end)
        records[m] = recs

    summary = summarize(records, args, exits, round(time.time() - started, 1))
    print(json.dumps(summary, indent=1), flush=True)


if __name__ == "__main__":
    main()
