"""VLM throughput through the engine's own batching loop: one JSON line per configuration, then a summary.

    python bench/vlm_throughput.py --model full:deepseek-ocr-2 --images bench/data/pages \
        --hints bench/data/hints.json --device cuda --batch-sizes 256,128,32,8 --max-seconds 220

(The GPU machine's command is bench/gpu_run.sh; bench/gpu_pack.sh puts the pages and wheels it
needs in the repo first.)

Model. `--model` is a model directory, or `tiny:KIND` / `full:KIND`: a randomly initialised model
of the real classes (full: the published architecture and vocabulary), built in memory directly
on `--device` (random_init.build_random_model), bf16 on CUDA and fp32 on the CPU unless `--dtype`,
and handed to TransformersBackend as it is: no save and reload. Its build time is `build_s`.

Lengths. Random weights read noise, so each page's generation is ended at its ground-truth length
in tokens (`gt/<page>.txt` beside the images folder, or `--truth DIR`); without the tokenizer of
a real checkpoint that length is characters / 3.6, the same formula the schedule's own length
estimate uses. Batches then run about as long as a real model's would. Never read accuracy from
this. Length estimates (`est_chars`) are the prep stage's (`--hints FILE`, written by
`--write-hints FILE` on a machine with folioscan's job dependencies).

Configurations: one per batch size (and batching order, `--orders`), the LARGEST batch first.
Each runs a pool of max(pages x --repeat, --min-batches x batch) pages (the pages cycled), handed
to the engine --pool-batches generate batches at a time as the OCR stage does, after an untimed
warm-up of one batch (pages ended at --warmup-tokens; the same cache and compilation settings).
Its line (stdout, flushed) is printed as soon as it ends: pages/s, output tokens/s, the phases
(image preparation in the engine's prefetch thread; vision encoding; prefill up to the LM head's
first call; decode), seconds per decode step, peak memory (CUDA max allocated; on the CPU peak
RSS, reset per configuration where Linux allows), image preparation ms/page, the engine's final
batch_limit and oom_backoffs, the backend's vision_batch / vision_batch_from / view_bytes, how
many pages and full generate batches it ran. The phases are timed with CUDA events on CUDA
(torch.cuda.Event) and perf_counter on the CPU; a configuration's wall time with perf_counter
after a device synchronisation. Once per run (in the summary): image preparation alone, with the
backend's threads (`prep_only`, `prep_only_pages_per_s`: what one actor could sustain from
preparation alone, `prep_threads`).

Time limit. `--max-seconds S` counts from the start of the process (imports and the model build
included). Before each configuration after the first, its time is estimated from what the ones
before measured: seconds per page of vision + prefill, seconds per decode step (fitted linearly in
the batch size over the last two configurations, never above the larger batch's), the ratio of
wall time to those phases, and the decode steps the engine's schedule will run on this pool
(predicted from the true lengths, `predicted_decode_steps`). One that would not fit in what is
left is skipped and listed with the reason in the summary. At S seconds the configuration still
running is stopped (SIGALRM) and reported with what it completed (`complete: false`).

The summary is the last line (`"summary": true, "benchmark": "vlm_throughput"`): printed also
after an error, SIGTERM or SIGINT (exit status 128 + the signal then), so a killed run leaves
every line it got to. An error in one configuration is recorded in its line and the next one runs.

Simulation (item 7 of issue 15): `simulated_useful_slot_fraction` counts the decode slots (batch x
steps) that produced a page's token or its end token, with every page ended at its ground-truth
length as above. It replays the batching and the length estimate's error against those lengths;
it does not capture a real model's lengths (its tokenizer, early ends, loops that run to the cap)
nor escalation re-reads (max_attempts = 1 here). A page that reaches a cap set from the schedule's
estimate (below the page's own cap) is read again at its own cap and counts in
`pages_cut_by_estimate`; a page that reaches its own cap (the user's `--max-new-tokens`, else the
budget's) is done: its tokens count as produced (`pages_at_own_cap`).

Static cache and compilation (transformers 5.25, see docs/vlm.md): `--static-cache` sets the generation
config's static KV cache, sized once for the whole run (`max_cache_len`: longest prompt + longest
page) so no call reallocates it; transformers then compiles the decode step by itself on CUDA
(torch.compile of the model call, CompileConfig: inductor, mode reduce-overhead), not on the CPU.
`--compile` does the same and forces the compilation on the CPU too (CompileConfig
_compile_all_devices); `--no-compile` keeps a static cache uncompiled. The bench never wraps
forward in torch.compile itself. `compiled` in the lines says whether transformers did compile.

Runs in a virtualenv of only torch, transformers, tokenizers, pillow, numpy, opencv-python-headless
and pyarrow: nothing here or in the folioscan modules it imports pulls pydantic, PyMuPDF, Ray,
boto3 or vLLM (tests/test_vlm_bench.py checks it).
"""
from __future__ import annotations

import time

START = time.perf_counter()  # --max-seconds counts from here

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from dataclasses import dataclass, field, replace  # noqa: E402
from typing import Optional  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from folioscan.workers.engines.base import ImageHints  # noqa: E402
from folioscan.workers.engines.vlm import schedule  # noqa: E402
from folioscan.workers.engines.vlm.budgets import CHARS_PER_TEXT_TOKEN, expected_text_tokens  # noqa: E402
from folioscan.workers.engines.vlm.models import MODELS  # noqa: E402

SIMULATION = ("Random weights: every page is ended at its ground-truth length in tokens ({lengths}). "
              "simulated_useful_slot_fraction = decode slots (batch x steps) that produced a page's token or its "
              "end token. It replays the batching and the length estimate's error against those lengths; it does "
              "not capture a real model's lengths (its tokenizer, early ends, loops running to the cap) nor "
              "escalation re-reads (max_attempts = 1).")


HELD = {signal.SIGALRM, signal.SIGTERM, signal.SIGINT}


@dataclass
class BenchOptions:
    """The VlmOptions attributes the backend and engine read (VlmOptions itself is pydantic)."""

    kind: str
    model: Optional[str]
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
    vision_batch: Optional[float] = None
    decode_experts: str = "grouped_mm"
    prep_threads: Optional[int] = None


class StdoutToStderr:
    """File descriptor 1 sent to stderr for a while: tokenizers' trainer writes its progress bar to
    stdout, which holds only the JSON lines."""

    def __enter__(self):
        sys.stdout.flush()
        self.saved = os.dup(1)
        os.dup2(2, 1)

    def __exit__(self, *exc):
        sys.stdout.flush()
        os.dup2(self.saved, 1)
        os.close(self.saved)


def log(msg: str) -> None:
    print(f"[vlm_throughput {time.perf_counter() - START:7.1f}s] {msg}", file=sys.stderr, flush=True)


# ---- timing -------------------------------------------------------------------------------------

class Clock:
    """Marks on the device's timeline: CUDA events on CUDA, perf_counter on the CPU."""

    def __init__(self, torch, device: str):
        self.torch, self.cuda = torch, device == "cuda"

    def mark(self):
        if self.cuda:
            event = self.torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def seconds(self, a, b) -> float:
        """Between two marks; on CUDA the later one must have completed (sync first)."""
        if a is None or b is None:
            return 0.0
        return a.elapsed_time(b) / 1000.0 if self.cuda else b - a

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()


class PeakMemory:
    """CUDA max allocated; on the CPU the peak RSS (VmHWM), reset per configuration where the
    kernel lets /proc/self/clear_refs do it, else the process's peak so far."""

    def __init__(self, torch, device: str):
        self.torch, self.device = torch, device
        self.kind = "cuda_max_allocated" if device == "cuda" else "rss_peak_since_reset"

    def reset(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.reset_peak_memory_stats()
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            self.kind = "rss_peak_of_process"

    def read(self) -> dict:
        if self.device == "cuda":
            return {"peak_memory_bytes": int(self.torch.cuda.max_memory_allocated()), "peak_memory_kind": self.kind,
                    "peak_reserved_bytes": int(self.torch.cuda.max_memory_reserved())}
        peak = None
        try:
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) * 1024
        except OSError:
            pass
        if peak is None:
            peak, self.kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "rss_peak_of_process"
        return {"peak_memory_bytes": peak, "peak_memory_kind": self.kind}


# ---- the backend as the engine sees it ----------------------------------------------------------

@dataclass
class Tracked:
    """A prepared batch and its pages' true lengths."""

    prepared: object
    lengths: list[int]

    def __len__(self) -> int:
        return len(self.prepared)


class Probe:
    """The backend as the engine sees it, plus: each page ends at its true length, and every generate
    call is timed (vision, prefill up to the LM head's first call, decode) and its slots counted.
    Any other attribute (select, release_memory, vision_batch, ...) is the backend's."""

    def __init__(self, backend, lengths: dict[int, int], clock: Clock):
        self.inner, self.lengths, self.clock = backend, lengths, clock
        self.engine = None  # the configuration's engine: its _cap is each page's own cap
        self.length_cap: Optional[int] = None  # warm-up: pages end at min(true length, this)
        self.batch_size = 0
        self._vision: list = [None, None]
        inner_features = backend.vision_features

        def timed_features(prepared, limit=None):  # the backend calls its own vision_features: time it there
            self._vision[0] = clock.mark()
            out = inner_features(prepared, limit)
            self._vision[1] = clock.mark()
            return out

        backend.vision_features = timed_features
        self.reset()

    def __getattr__(self, name):
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def reset(self) -> None:
        self.stats = dict(prepare_s=0.0, prepared_pages=0, vision_s=0.0, prefill_s=0.0, decode_s=0.0, steps=0,
                          decode_forwards=0, slots=0, useful=0, output_tokens=0, calls=0, full_batches=0, pages=0,
                          cut_by_estimate=0, at_own_cap=0)

    def prepare(self, images, budget) -> Tracked:
        prepared = self.inner.prepare(images, budget)
        self.stats["prepare_s"] += prepared.prepare_s
        self.stats["prepared_pages"] += len(images)
        return Tracked(prepared, [self.lengths[id(im)] for im in images])

    def select(self, tracked: Tracked, rows) -> Tracked:
        rows = list(rows)
        return Tracked(self.inner.select(tracked.prepared, rows), [tracked.lengths[i] for i in rows])

    def generate(self, tracked: Tracked, max_new_tokens):
        n_pages = len(tracked)
        caps = [max_new_tokens] * n_pages if isinstance(max_new_tokens, int) else [int(c) for c in max_new_tokens]
        lengths = [min(n, self.length_cap) if self.length_cap else n for n in tracked.lengths]
        clock, marks = self.clock, {}
        self._vision[:] = [None, None]

        def on_head(module, args, out):  # the prefill's logits: prefill ends; gone before the decode steps
            marks["head"] = clock.mark()
            handle.remove()

        handle = self.inner.model.get_output_embeddings().register_forward_hook(on_head)
        try:
            marks["start"] = clock.mark()
            gens = self.inner.generate(tracked.prepared, [min(c, n + 1) for c, n in zip(caps, lengths)])  # n tokens + the end
            marks["end"] = clock.mark()
        finally:
            handle.remove()
        clock.sync()
        signal.pthread_sigmask(signal.SIG_BLOCK, HELD)  # a signal's handler reads these figures: all or none
        try:
            self._account(gens, caps, lengths, marks, n_pages)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD)
        return gens

    def _account(self, gens, caps, lengths, marks, n_pages) -> None:
        clock = self.clock
        vision = clock.seconds(*self._vision)
        head = marks.get("head", marks["end"])
        s = self.stats
        s["vision_s"] += vision
        s["prefill_s"] += max(0.0, clock.seconds(marks["start"], head) - vision)
        s["decode_s"] += clock.seconds(head, marks["end"])
        s["calls"] += 1
        s["full_batches"] += n_pages == self.batch_size
        steps = gens[0].steps if gens else 0
        s["steps"] += steps
        s["decode_forwards"] += max(steps - 1, 0)  # the first token comes from the prefill
        s["slots"] += len(gens) * steps
        for g, cap, n in zip(gens, caps, lengths):
            own = self.engine._cap(g.vision_tokens)  # the page's own cap: the user's, else the budget's
            if not g.hit_token_cap:  # the model's own end token (random weights may emit it early)
                s["useful"] += len(g.token_ids) + 1
                s["output_tokens"] += min(len(g.token_ids), n)
                s["pages"] += 1
            elif g.max_new_tokens >= n + 1:  # reached the page's true length: that is its end
                s["useful"] += n + 1
                s["output_tokens"] += n
                s["pages"] += 1
                g.hit_token_cap = False
            elif cap < own and not g.cap_clamped:  # the schedule's estimate cap: read again whole, tokens wasted
                s["cut_by_estimate"] += 1
            else:  # its own cap (the user's, the budget's, or the context's): done, its tokens are produced
                s["useful"] += len(g.token_ids)
                s["output_tokens"] += len(g.token_ids)
                s["at_own_cap"] += 1
                s["pages"] += 1


# ---- inputs --------------------------------------------------------------------------------------

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


def parse_model(spec_: str) -> tuple[str, Optional[str], str]:
    """(kind, size or None, directory or None) for tiny:KIND / full:KIND or a directory."""
    if ":" in spec_ and not os.path.isdir(spec_):
        size, kind = spec_.split(":", 1)
        if size not in ("tiny", "full") or kind not in MODELS:
            raise SystemExit(f"--model {spec_!r}: a directory, or tiny:KIND / full:KIND with KIND in {sorted(MODELS)}")
        return kind, size, None
    arch = json.load(open(os.path.join(spec_, "config.json"))).get("architectures", [""])[0]
    kinds = [k for k, s in MODELS.items() if s.model_class == arch]
    if not kinds:
        raise SystemExit(f"{spec_}: {arch!r} is none of {[s.model_class for s in MODELS.values()]}")
    return kinds[0], None, spec_


def versions() -> dict:
    out = {"python": platform.python_version()}
    for mod, name in (("torch", "torch"), ("transformers", "transformers"), ("tokenizers", "tokenizers"),
                      ("huggingface_hub", "huggingface_hub"), ("PIL", "pillow"), ("numpy", "numpy"),
                      ("cv2", "opencv"), ("pyarrow", "pyarrow")):
        try:
            out[name] = __import__(mod).__version__
        except ImportError:
            out[name] = None
    try:
        import transformers

        out["transformers_from"] = os.path.dirname(transformers.__file__)
    except ImportError:
        pass
    return out


def pool_of(n_images: int, batch_size: int, repeat: int, min_batches: int) -> list[int]:
    """Indices of a configuration's pages: the images cycled to max(n x repeat, min_batches x batch)."""
    return [k % n_images for k in range(max(n_images * max(repeat, 1), min_batches * batch_size))]


# ---- prediction and time estimate --------------------------------------------------------------

def predict(engine, images, hints, lengths, pool: int, length_cap: Optional[int] = None) -> dict:
    """The generate calls the engine will make on these pages (its own plan, caps and schedule),
    each running until its longest page ends at its true length: calls, pages read, decode steps.
    Re-reads after an estimate fell short are included; escalation is not (max_attempts = 1)."""
    calls = reads = steps = 0
    for start in range(0, len(images), pool):
        ims, hs = images[start:start + pool], hints[start:start + pool]
        ns = [min(n, length_cap) if length_cap else n for n in lengths[start:start + pool]]
        plans = [engine.plan(im, h) for im, h in zip(ims, hs)]
        est = [expected_text_tokens(h.est_chars) if h else 0 for h in hs]
        pending = {i: (first, "initial") for i, (_, first, _) in enumerate(plans)}
        while pending:
            order, _, upper, batches = engine.round_batches(pending, plans, est)  # the engine's own round
            nxt = {}
            for b in batches:
                idx = [order[k] for k in b.indices]
                calls += 1
                reads += len(idx)
                steps += max(min(c, ns[i] + 1) for c, i in zip(b.caps, idx))
                for i, c, k in zip(idx, b.caps, b.indices):
                    if ns[i] + 1 > c and c < upper[k]:
                        nxt[i] = (pending[i][0], "length-estimate")
            pending = nxt
    return {"calls": calls, "reads": reads, "steps": steps}


def step_seconds(history: list[dict], batch_size: int) -> float:
    """Seconds per decode step at `batch_size`, from configurations already measured (larger batches):
    linear in the batch size through the last two, never above the smallest batch measured (a smaller
    batch is not slower per step) and never below proportional scaling from it."""
    pts = [(h["batch_size"], h["s_per_decode_step"]) for h in history if h.get("s_per_decode_step")]
    if not pts:
        return 0.0
    b2, s2 = pts[-1]
    if len(pts) == 1 or pts[-2][0] == b2:
        return s2
    b1, s1 = pts[-2]
    slope = (s1 - s2) / (b1 - b2)
    return min(s2, max(s2 + slope * (batch_size - b2), s2 * batch_size / b2))


def estimate_seconds(history: list[dict], batch_size: int, pages: int, steps: int, warm_pages: int,
                     warm_steps: int) -> Optional[float]:
    """A configuration's expected wall time (warm-up included) from the ones measured before; None
    without any (the first configuration is always run). When the last one was compiled, its warm-up
    time (a new batch shape compiles again) bounds this one's from below."""
    done = [h for h in history if h.get("pages") and h.get("wall_s")]
    if not done:
        return None
    last = done[-1]
    phases = last["phase_s"]
    page_s = (phases["vision"] + phases["prefill"]) / last["pages"]
    overhead = max(1.0, last["wall_s"] / max(phases["vision"] + phases["prefill"] + phases["decode"], 1e-9))
    step = step_seconds(done, batch_size)
    warm = overhead * (warm_pages * page_s + warm_steps * step)
    if last.get("compiled"):
        warm = max(warm, last.get("warmup_s") or 0.0)
    return warm + overhead * (pages * page_s + steps * step)


# ---- one configuration --------------------------------------------------------------------------

def report(stats: dict, wall: float, batch_size: int) -> dict:
    s = stats
    phases = {"image_preparation": s["prepare_s"], "vision": s["vision_s"], "prefill": s["prefill_s"],
              "decode": s["decode_s"]}
    return {"pages": s["pages"], "generate_calls": s["calls"], "full_batches": s["full_batches"],
            "wall_s": round(wall, 3), "pages_per_s": round(s["pages"] / wall, 4) if s["pages"] else None,
            "output_tokens": s["output_tokens"],
            "output_tokens_per_s": round(s["output_tokens"] / wall, 1) if s["pages"] else None,
            "phase_s": {k: round(v, 3) for k, v in phases.items()},
            "decode_steps": s["steps"], "s_per_decode_step": round(s["decode_s"] / s["decode_forwards"], 6)
            if s["decode_forwards"] else None,
            "image_preparation_ms_per_page": round(1000 * s["prepare_s"] / max(s["prepared_pages"], 1), 1),
            "simulated_useful_slot_fraction": round(s["useful"] / s["slots"], 4) if s["slots"] else None,
            "decode_slots": s["slots"], "useful_slots": s["useful"],
            "pages_cut_by_estimate": s["cut_by_estimate"], "pages_at_own_cap": s["at_own_cap"]}


def write_line(obj: dict) -> None:
    """One JSON line on stdout, unbuffered (os.write: also safe from a signal handler)."""
    data = (json.dumps(obj) + "\n").encode()
    while data:
        data = data[os.write(1, data):]


class Run:
    """The whole run's state, so that a signal can finish it at once: the lines printed, the line of
    the configuration in progress, the summary. SIGTERM / SIGINT / SIGALRM (--max-seconds) print the
    configuration in progress (what it completed) and the summary from the handler and leave with
    os._exit: no waiting for the preparation threads to finish their batch."""

    def __init__(self, ctx: Context, summary: dict, batch_sizes: list[int], orders: list[str]):
        self.ctx, self.summary, self.batch_sizes, self.orders = ctx, summary, batch_sizes, orders
        self.runs: list[dict] = []
        self.current: Optional[dict] = None  # line, stage, t0, engine of the configuration in progress
        self.done = False

    def close_current(self, stopped: Optional[str]) -> None:
        """Complete the line of the configuration in progress (what it measured so far) and print it."""
        signal.pthread_sigmask(signal.SIG_BLOCK, HELD)  # a signal now waits until the line is out
        try:
            self._close_current(stopped)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD)

    def _close_current(self, stopped: Optional[str]) -> None:
        cur = self.current
        if cur is None:
            return
        ctx, line, engine = self.ctx, cur["line"], cur["engine"]
        wall = time.perf_counter() - cur["t0"]
        try:
            ctx.clock.sync()
        except Exception:
            pass
        if cur["stage"] == "timed run":
            line.update(report(ctx.probe.stats, wall, line["batch_size"]))
        line.update({"complete": stopped is None, "stopped": None if stopped is None else f"{stopped} during the {cur['stage']}",
                     "batch_limit": engine.batch_limit, "oom_backoffs": engine.oom_backoffs,
                     "vision_batch": getattr(ctx.backend, "vision_batch", None),
                     "vision_batch_from": getattr(ctx.backend, "vision_batch_from", None),
                     "view_bytes": getattr(ctx.backend, "view_bytes", None),
                     "decode_experts": getattr(ctx.backend, "decode_experts", None)})
        if cur["stage"] == "timed run":
            line.update(ctx.memory.read())
        self.current = None
        self.runs.append(line)
        write_line(line)

    def configuration(self, batch_size: int, order: str, deadline: Optional[float]) -> None:
        """Warm-up and timed run of one configuration, or its skip (ctx.skipped) when its estimate
        does not fit in the time left."""
        ctx = self.ctx
        args, probe = ctx.args, ctx.probe
        from folioscan.workers.engines.vlm.engine import VlmEngine

        engine = VlmEngine(replace(ctx.opts, batch_size=batch_size, batching=order), backend=probe)
        probe.engine, probe.batch_size = engine, batch_size
        idx = pool_of(len(ctx.images), batch_size, args.repeat, args.min_batches)
        images, hints = [ctx.images[k] for k in idx], [ctx.hints[k] for k in idx]
        lengths = [ctx.lengths[k] for k in idx]
        chunk = batch_size * args.pool_batches
        pred = predict(engine, images, hints, lengths, chunk)
        warm = predict(engine, images[:batch_size], hints[:batch_size], lengths[:batch_size], chunk, args.warmup_tokens)
        est = estimate_seconds([r for r in self.runs if r.get("complete")], batch_size, len(images), pred["steps"],
                               batch_size, warm["steps"])
        left = None if deadline is None else deadline - time.perf_counter()
        line = {"batch_size": batch_size, "batching": order, "cache": ctx.cache, "compile": ctx.compile_mode,
                "pool_pages": len(images), "distinct_pages": len(set(idx)), "min_batches": args.min_batches,
                "predicted_generate_calls": pred["calls"], "predicted_decode_steps": pred["steps"],
                "estimated_s": None if est is None else round(est, 1)}
        if left is not None and (left <= 0 or (est is not None and est > left)):
            why = "no time left" if left <= 0 else (f"estimated {est:.0f} s (warm-up + {len(images)} pages, "
                                                   f"{pred['steps'] + warm['steps']} decode steps) > {left:.0f} s left")
            ctx.skipped.append({"batch_size": batch_size, "batching": order, "reason": why})
            log(f"skip batch {batch_size} ({order}): {why}")
            return
        cur = self.current = {"line": line, "stage": "warm-up", "t0": time.perf_counter(), "engine": engine}
        log(f"batch {batch_size} ({order}): warm-up, then {len(images)} pages, {pred['calls']} generate calls, "
            f"~{pred['steps']} decode steps" + ("" if est is None else f", ~{est:.0f} s"))
        stopped = None
        try:
            probe.reset()
            probe.length_cap = args.warmup_tokens
            engine.predict_batch(images[:batch_size], hints[:batch_size])
            ctx.clock.sync()
            line["warmup_s"] = round(time.perf_counter() - cur["t0"], 3)
            line["compiled"] = hasattr(ctx.backend.model, "_compiled_call")
            probe.reset()
            probe.length_cap = None
            ctx.memory.reset()
            cur.update(stage="timed run", t0=time.perf_counter())
            for start in range(0, len(images), chunk):  # the OCR stage hands the engine one pool at a time
                engine.predict_batch(images[start:start + chunk], hints[start:start + chunk])
            ctx.clock.sync()
        except Exception as e:  # recorded; the next configuration still runs
            stopped = f"error: {type(e).__name__}: {e}"
            log(traceback.format_exc())
            try:
                ctx.backend.release_memory()
            except Exception:
                pass
        self.close_current(stopped)

    def finish(self, stopped: Optional[str]) -> None:
        """The summary line, once."""
        if self.done:
            return
        self.done = True
        ctx, runs, summary = self.ctx, self.runs, self.summary
        started = {(s["batch_size"], s["batching"]) for s in ctx.skipped} | {(r["batch_size"], r["batching"]) for r in runs}
        for bs in self.batch_sizes:
            for order in self.orders:
                if (bs, order) not in started:
                    ctx.skipped.append({"batch_size": bs, "batching": order, "reason": f"not started: {stopped or 'run ended'}"})
        measured = [r for r in runs if r.get("pages")]
        best = max(measured, key=lambda r: r["pages_per_s"]) if measured else None
        summary.update(
            cache=ctx.cache, compile=ctx.compile_mode, compiled=any(r.get("compiled") for r in runs),
            configurations_run=[r["batch_size"] for r in runs], skipped=ctx.skipped, stopped=stopped,
            elapsed_s=round(time.perf_counter() - START, 1),
            best=None if best is None else {k: best[k] for k in ("batch_size", "batching", "pages_per_s",
                                                                  "output_tokens_per_s", "complete")},
            simulated_useful_slot_fraction={o: {str(r["batch_size"]): r.get("simulated_useful_slot_fraction")
                                                for r in runs if r["batching"] == o} for o in self.orders},
            runs=runs)
        write_line(summary)

    def on_signal(self, signum, frame) -> None:
        """SIGALRM: --max-seconds reached (exit 0); SIGTERM / SIGINT: exit 128 + the signal."""
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig in HELD:
            signal.signal(sig, signal.SIG_IGN)
        stopped = "max-seconds reached" if signum == signal.SIGALRM else f"interrupted by {signal.Signals(signum).name}"
        try:
            try:
                log(f"{stopped}: printing what was measured and leaving")
            except RuntimeError:  # the signal came in the middle of writing to stderr
                pass
            self.close_current(stopped)
        finally:
            self.finish(stopped)
            os._exit(0 if signum == signal.SIGALRM else 128 + signum)


def prep_only(backend, engine, images, hints, pages: int, chunk: int) -> tuple[dict, int]:
    """Image preparation alone, with the backend's threads, on `pages` pages (cycled), in batches of
    `chunk` grouped by each page's starting budget; (report, longest prompt in tokens)."""
    idx = [k % len(images) for k in range(pages)]
    groups: dict[str, list[int]] = {}
    budgets = {}
    for k in idx:
        rungs, first, _ = engine.plan(images[k], hints[k])
        budgets[rungs[first].budget.name] = rungs[first].budget
        groups.setdefault(rungs[first].budget.name, []).append(k)
    longest, t0 = 0, time.perf_counter()
    for name, ks in groups.items():
        for start in range(0, len(ks), chunk):
            prepared = backend.prepare([images[k] for k in ks[start:start + chunk]], budgets[name])
            longest = max(longest, prepared.inputs["input_ids"].shape[1])
    dt = time.perf_counter() - t0
    return {"pages": pages, "batch": chunk, "s": round(dt, 3), "ms_per_page": round(1000 * dt / pages, 1),
            "prep_only_pages_per_s": round(pages / dt, 2), "prep_threads": backend.prep_threads}, longest


@dataclass
class Context:
    args: argparse.Namespace
    torch: object = None
    backend: object = None
    probe: Optional[Probe] = None
    clock: Optional[Clock] = None
    opts: Optional[BenchOptions] = None
    memory: Optional[PeakMemory] = None
    images: list = field(default_factory=list)
    hints: list = field(default_factory=list)
    lengths: list = field(default_factory=list)
    cache: str = "dynamic"
    compile_mode: str = "off"
    skipped: list = field(default_factory=list)


# ---- main ------------------------------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="model directory, or tiny:KIND / full:KIND (random weights)")
    ap.add_argument("--images", required=True, help="folder of PNG pages (e.g. bench/data/pages)")
    ap.add_argument("--truth", help="folder of <page>.txt ground truth (default: gt/ beside the images folder)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"],
                    help="auto: bf16 on cuda, fp32 on cpu")
    ap.add_argument("--batch-sizes", default="256,128,32,8", help="pages per generate call, comma-separated; run largest first")
    ap.add_argument("--orders", default="length", help="batching orders: length (the engine's plan), input (pages in order)")
    ap.add_argument("--min-batches", type=int, default=4, help="full generate batches each batch size runs at least")
    ap.add_argument("--repeat", type=int, default=1, help="the pages at least this many times per configuration")
    ap.add_argument("--pool-batches", type=int, default=schedule.POOL_BATCHES, help="pages per engine call, in generate batches")
    ap.add_argument("--warmup-tokens", type=int, default=64, help="warm-up pages end at min(true length, this)")
    ap.add_argument("--prep-pages", type=int, default=32, help="pages prepared for the preparation-alone figure")
    ap.add_argument("--max-seconds", type=float, help="time for the whole run, from the process start")
    ap.add_argument("--limit", type=int, help="first N pages only")
    ap.add_argument("--budget", default="base")
    ap.add_argument("--max-new-tokens", type=int, help="the user's cap (default: the budget's)")
    ap.add_argument("--no-repeat-ngram", type=int, default=20, help="0: without the repetition guard")
    ap.add_argument("--vision-batch", type=float, help="views per encoder call (default: the backend's choice)")
    ap.add_argument("--decode-experts", default="grouped_mm", choices=["grouped_mm", "batched_mm"],
                    help="MoE kernel while decoding on a GPU (batched_mm: transformers' own switch, copies expert weights per token)")
    ap.add_argument("--prep-threads", type=int, help="threads preparing a batch (default: the backend's)")
    ap.add_argument("--static-cache", action="store_true", help="static KV cache (transformers compiles decode on CUDA)")
    ap.add_argument("--compile", action="store_true", help="static KV cache + transformers' compilation, on any device")
    ap.add_argument("--no-compile", action="store_true", help="with --static-cache: no compilation")
    ap.add_argument("--hints", help="JSON {page file: est_chars} instead of running the prep stage")
    ap.add_argument("--write-hints", help="measure est_chars with the prep stage, write them here and exit")
    args = ap.parse_args(argv)
    if args.no_compile and args.compile:
        ap.error("--compile and --no-compile")
    return args


def build(ctx: Context, summary: dict) -> None:
    args = ctx.args
    names, images = load_pages(args.images, args.limit)
    if args.hints:
        table = json.load(open(args.hints))
        est_chars, est_from = [int(table[n]) for n in names], f"file {os.path.basename(args.hints)}"
    else:
        measured = measure_est_chars(names, images)
        est_chars, est_from = [measured[n] for n in names], "prep.prepare_page on each page"

    import torch

    from folioscan.workers.engines.vlm.transformers_backend import TransformersBackend

    ctx.torch = torch
    summary["versions"] = versions()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible")
    summary["device_name"] = (torch.cuda.get_device_name(0) if args.device == "cuda"
                              else f"cpu ({os.cpu_count()} cores, {platform.machine()})")
    kind, size, directory = parse_model(args.model)
    dtype = {"auto": torch.bfloat16 if args.device == "cuda" else torch.float32, "bf16": torch.bfloat16,
             "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    ctx.opts = BenchOptions(kind=kind, model=directory, device=args.device, budget=args.budget,
                            max_new_tokens=args.max_new_tokens, no_repeat_ngram=args.no_repeat_ngram,
                            dtype={torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}[dtype],
                            vision_batch=args.vision_batch, prep_threads=args.prep_threads,
                            decode_experts=args.decode_experts)
    summary.update(kind=kind, weights=f"random-{size}" if size else "checkpoint", dtype=str(dtype).replace("torch.", ""))
    t0 = time.perf_counter()
    if size:
        from folioscan.workers.engines.vlm.random_init import build_random_model

        with StdoutToStderr():
            model, processor = build_random_model(kind, full=size == "full", device=args.device, dtype=dtype)
        ctx.backend = TransformersBackend(ctx.opts, model=model, processor=processor)
    else:
        ctx.backend = TransformersBackend(ctx.opts)
    ctx.clock = Clock(torch, args.device)
    ctx.clock.sync()
    summary["build_s"] = round(time.perf_counter() - t0, 2)
    summary["parameters"] = sum(p.numel() for p in ctx.backend.model.parameters())
    log(f"built {args.model} in {summary['build_s']} s ({summary['parameters'] / 1e6:.1f} M parameters, {dtype})")

    tokenizer = ctx.backend.tokenizer if directory else None  # a random model's toy BPE is no measure
    truth = args.truth or os.path.join(os.path.dirname(os.path.normpath(args.images)), "gt")
    lengths = true_lengths(names, truth, tokenizer)
    ctx.images, ctx.lengths = images, lengths
    ctx.hints = [ImageHints(est_chars=c) for c in est_chars]
    ctx.probe = Probe(ctx.backend, {id(im): n for im, n in zip(images, lengths)}, ctx.clock)
    ctx.memory = PeakMemory(torch, args.device)
    lengths_from = "ground truth, " + ("tokenizer of the model" if tokenizer else f"characters / {CHARS_PER_TEXT_TOKEN} per token")
    est_tokens = [expected_text_tokens(c) for c in est_chars]
    ratios = sorted(n / e for n, e in zip(lengths, est_tokens) if e > 0)
    estimate = {"pages_with_estimate": len(ratios)}
    if ratios:
        estimate.update({q: round(ratios[min(len(ratios) - 1, int(f * len(ratios)))], 3)
                         for q, f in (("min", 0.0), ("median", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))})
    summary.update(lengths_from=lengths_from, est_chars_from=est_from, true_over_estimated_tokens=estimate,
                   distinct_pages=len(images), true_tokens={"min": min(lengths), "median": sorted(lengths)[len(lengths) // 2],
                                                            "max": max(lengths), "sum": sum(lengths)},
                   simulation=SIMULATION.format(lengths=lengths_from))


def configure_generation(ctx: Context, longest_prompt: int) -> None:
    """Static cache / compilation through the generation config only (never a second torch.compile)."""
    args, model = ctx.args, ctx.backend.model
    if not (args.static_cache or args.compile):
        return
    from folioscan.workers.engines.vlm.engine import VlmEngine

    gc = model.generation_config
    gc.cache_implementation = "static"
    planner = VlmEngine(ctx.opts, backend=ctx.probe)
    longest_out = 0
    for im, h, n in zip(ctx.images, ctx.hints, ctx.lengths):
        rungs, first, _ = planner.plan(im, h)
        longest_out = max(longest_out, min(planner._cap(rungs[first].vision_tokens), n + 1))
    gc.max_cache_len = longest_prompt + longest_out + 8  # one size for every call: no reallocation, no recompile
    ctx.cache = f"static (max_cache_len {gc.max_cache_len})"
    if args.no_compile:
        gc.disable_compile = True
        ctx.compile_mode = "off"
    elif args.compile:
        from transformers import CompileConfig

        cc = CompileConfig()
        cc._compile_all_devices = True  # transformers compiles on CUDA by itself; this also on the CPU
        gc.compile_config = cc
        ctx.compile_mode = "forced (transformers CompileConfig, any device)"
    else:
        ctx.compile_mode = "transformers default (compiles on cuda, not on cpu)"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.write_hints:
        names, images = load_pages(args.images, args.limit)
        json.dump(measure_est_chars(names, images), open(args.write_hints, "w"), indent=0)
        return 0
    batch_sizes = sorted({int(b) for b in args.batch_sizes.split(",")}, reverse=True)
    orders = [o for o in args.orders.split(",") if o]
    deadline = START + args.max_seconds if args.max_seconds else None
    ctx = Context(args)
    summary = {"summary": True, "benchmark": "vlm_throughput", "model": args.model, "device": args.device,
               "budget": args.budget, "images": os.path.abspath(args.images), "batch_sizes": batch_sizes,
               "orders": orders, "min_batches": args.min_batches, "repeat": args.repeat,
               "pool_batches": args.pool_batches, "warmup_tokens": args.warmup_tokens,
               "no_repeat_ngram": args.no_repeat_ngram, "max_new_tokens": args.max_new_tokens,
               "max_seconds": args.max_seconds}
    run = Run(ctx, summary, batch_sizes, orders)
    for sig in HELD:
        signal.signal(sig, run.on_signal)
    if deadline is not None:
        signal.setitimer(signal.ITIMER_REAL, max(deadline - time.perf_counter(), 0.01))
    code, stopped = 0, None
    try:
        build(ctx, summary)
        from folioscan.workers.engines.vlm.engine import VlmEngine

        planner = VlmEngine(replace(ctx.opts, batch_size=batch_sizes[0]), backend=ctx.probe)
        prep, longest_prompt = prep_only(ctx.backend, planner, ctx.images, ctx.hints, args.prep_pages,
                                         min(batch_sizes[0], args.prep_pages))
        summary.update(prep_only=prep, prep_only_pages_per_s=prep["prep_only_pages_per_s"],
                       prep_threads=prep["prep_threads"])
        log(f"preparation alone: {prep['ms_per_page']} ms/page, {prep['prep_only_pages_per_s']} pages/s "
            f"with {prep['prep_threads']} threads")
        configure_generation(ctx, longest_prompt)
        for bs in batch_sizes:
            for order in orders:
                run.configuration(bs, order, deadline)
        if any((r.get("stopped") or "").startswith("error") for r in run.runs):
            code = 1
    except SystemExit as e:
        code, stopped = (e.code if isinstance(e.code, int) else 2), f"exit: {e}"
        if not isinstance(e.code, int) and e.code:
            print(e.code, file=sys.stderr)
    except BaseException as e:  # noqa: BLE001 - the summary is printed whatever happened
        code, stopped = 1, f"error: {type(e).__name__}: {e}"
        log(traceback.format_exc())
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.pthread_sigmask(signal.SIG_BLOCK, HELD)  # nothing may cut the summary short
        run.close_current(stopped or "error")
        run.finish(stopped)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD)
    return code


if __name__ == "__main__":
    sys.exit(main())
