"""Hugging Face transformers backend: batched greedy generation, chosen-token log-probs recorded
inside the decoding loop (decoding.py), stops at the model's end tokens (models.py).

Vision encoding is bounded by memory, not by the generate batch. transformers' generate() runs
the vision tower over every image of the batch at once before prefill; SAM's global-attention
layers hold a (views x heads x 4096 x 4096) bias and score matrix (DeepSeek-OCR-2: ~400 MiB per
1024-px view in bf16; GOT-OCR2 computes its softmax in fp32), so a batch of 256 pages would need
~100 GB for the encoder alone. Measured on the CPU in fp32 at the published sizes: one view costs
the encoder 1.80 GB (DeepSeek-OCR-2) and 2.63 GB (GOT-OCR2) at its peak (BENCHMARKS.md). Here the views
are encoded in micro-batches of at most `vision_batch` 1024-px-equivalent views (a 768-px tile
weighs 0.5625), their features are scattered into the prompt's embeddings at the image tokens,
and generate() gets `inputs_embeds` (no pixels): one decoder batch over all pages, whose memory
then grows with pages only by the KV cache and activations. `vision_batch` comes from the
options, else from the peak memory of one view measured on the GPU at load (VISION_MEMORY_SHARE
of the free memory), else CPU_VISION_BATCH on the CPU.

The model comes from a local directory (or the hub where reachable: offline mode is on unless
FOLIOSCAN_ALLOW_HUB=1, so a missing network fails at once instead of after timeouts), or is
handed in already built (`model=`, `processor=`: benchmarks build random models on the device).
`options` is any object with the VlmOptions attributes used below (the GPU benchmark passes a
plain namespace: no pydantic there).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Sequence

import numpy as np

from folioscan.workers.engines.vlm.backend import Generation, Prepared, clamp_caps, per_sequence, split_at_end
from folioscan.workers.engines.vlm.models import Budget, spec
from folioscan.workers.engines.vlm.repetition import WindowedNoRepeatNGram

__all__ = ["TransformersBackend", "Generation", "Prepared", "VIEW_LAYOUTS"]
log = logging.getLogger(__name__)

# generation-config fields that make generate() add logits processors ahead of ours; a checkpoint
# that sets one would have them run before the log-prob recorder, so they are dropped (and logged)
_PROCESSOR_FIELDS = ("repetition_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids",
                     "min_length", "min_new_tokens", "sequence_bias", "suppress_tokens", "begin_suppress_tokens",
                     "forced_bos_token_id", "forced_eos_token_id", "temperature", "top_k", "top_p", "do_sample")
_GREEDY = {("do_sample", False)}  # what the backend sets anyway: nothing is dropped, nothing to warn about

VIEW_PX = 1024  # a view of this size weighs 1 in `vision_batch`; others by their area
CPU_VISION_BATCH = 2  # views per encoder call on the CPU (a published-size 1024-px view: 1.8-2.6 GB in fp32)
VISION_MEMORY_SHARE = 0.25  # of the GPU memory free after loading, for the encoder's micro-batches
MAX_VISION_BATCH = 64  # beyond this the encoder is long past saturating the GPU
PREP_THREADS = 4  # threads preparing one batch's images (at most the machine's cores)


# ---- how each model's processor lays out the vision inputs of a batch ------------------------
# split(inputs, vision_tokens, spec) -> per image: the encoder's keyword arguments for that image alone;
# join(parts) -> the keyword arguments for several images. The model's get_image_features takes them.

def _split_global_local(inputs, vision_tokens, spec):
    """DeepSeek-OCR-2: one global view per image (pixel_values) and its local tiles, flattened over
    the batch (pixel_values_local), counted per image (num_local_patches)."""
    counts = [int(n) for n in inputs["num_local_patches"]]
    local, start, parts = inputs.get("pixel_values_local"), 0, []
    for i, n in enumerate(counts):
        part = {"pixel_values": inputs["pixel_values"][i:i + 1], "num_local_patches": [n]}
        if n:
            part["pixel_values_local"] = local[start:start + n]
        parts.append(part)
        start += n
    return parts


def _join_global_local(parts):
    import torch

    local = [p["pixel_values_local"] for p in parts if "pixel_values_local" in p]
    return {"pixel_values": torch.cat([p["pixel_values"] for p in parts]),
            "pixel_values_local": torch.cat(local) if local else None,
            "num_local_patches": torch.tensor([int(n) for p in parts for n in p["num_local_patches"]])}


def _split_crops(inputs, vision_tokens, spec):
    """GOT-OCR2: every crop of every image in one pixel_values tensor; an image's crops are
    consecutive and each gives the base budget's tokens (the processor does not return the count)."""
    tokens_per_crop = spec.budgets[0].vision_tokens
    parts, start = [], 0
    for v in vision_tokens:
        n = v // tokens_per_crop
        parts.append({"pixel_values": inputs["pixel_values"][start:start + n]})
        start += n
    return parts


def _join_crops(parts):
    import torch

    return {"pixel_values": torch.cat([p["pixel_values"] for p in parts])}


VIEW_LAYOUTS = {"global+local": (_split_global_local, _join_global_local), "crops": (_split_crops, _join_crops)}


def view_weight(part) -> float:
    """An image's encoder cost in 1024-px views: each view by its area (attention grows faster,
    so smaller views are over-counted: the bound errs on the safe side)."""
    return sum(t.shape[0] * t.shape[-1] * t.shape[-2] / VIEW_PX ** 2
               for k, t in part.items() if k.startswith("pixel_values") and t is not None)


def micro_batches(weights: Sequence[float], limit: float) -> list[list[int]]:
    """Consecutive images grouped so each group weighs at most `limit` (an image heavier than the
    limit goes alone)."""
    groups: list[list[int]] = []
    load = 0.0
    for i, w in enumerate(weights):
        if groups and load + w <= limit:
            groups[-1].append(i)
            load += w
        else:
            groups.append([i])
            load = w
    return groups


class TransformersBackend:
    def __init__(self, options, model=None, processor=None):
        if os.environ.get("FOLIOSCAN_ALLOW_HUB") != "1":
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        import transformers
        from transformers import AutoModelForImageTextToText, AutoProcessor, GenerationConfig

        self.torch, self.kind, self.spec = torch, options.kind, spec(options.kind)
        device = options.device if options.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = {"auto": torch.bfloat16 if device.startswith("cuda") else torch.float32,
                 "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[options.dtype]
        if model is not None:
            dtype = model.dtype  # a model built in memory is used in the dtype it was built in
        if model is None:
            if not options.model:
                raise ValueError(f"--model is required for {options.kind}: a local model directory")
            local = os.path.isdir(options.model)
            processor = AutoProcessor.from_pretrained(options.model, local_files_only=local)
            model = AutoModelForImageTextToText.from_pretrained(options.model, dtype=dtype, local_files_only=local)
        self.processor = processor
        self.processor.tokenizer.padding_side = "left"  # batched generation appends on the right
        # a fast tokenizer must not be used from two threads at once ("Already borrowed"): every
        # thread that prepares images gets its own copy of the processor (no lock, see prepare)
        self._local = threading.local()
        self.tokenizer = self.processor.tokenizer
        # moved, never cast: from_pretrained (or the builder) already chose the dtype, and keeps the
        # weights a model needs in fp32 there (DeepSeek-OCR-2's MoE router, rotary frequencies)
        self.model = model.to(device).eval()
        self.decode_experts = self._keep_experts(getattr(options, "decode_experts", None))
        self.device, self.dtype = device, dtype
        self.image_token_id = self.model.config.image_token_id
        self.end_ids = self._end_ids()
        text_cfg = self.model.config.get_text_config()
        self.context = min(getattr(text_cfg, "max_position_embeddings", None) or self.spec.context_length,
                           self.spec.context_length)
        dropped = {k: v for k, v in self.model.generation_config.to_diff_dict().items()
                   if k in _PROCESSOR_FIELDS and (k, v) not in _GREEDY}
        if dropped:
            log.warning("%s: ignoring the checkpoint's generation settings %s (greedy decoding, guard of our own)",
                        self.kind, dropped)
        self.model.generation_config = GenerationConfig(
            bos_token_id=self.model.generation_config.bos_token_id, eos_token_id=sorted(self.end_ids),
            pad_token_id=self.tokenizer.pad_token_id, do_sample=False, num_beams=1)
        self.ngram, self.window = options.no_repeat_ngram, options.no_repeat_window
        name = os.path.basename(os.path.normpath(options.model)) if options.model else f"{options.kind}-in-memory"
        self.version = f"transformers-{transformers.__version__}:{name}"
        self._split, self._join = VIEW_LAYOUTS[self.spec.vision_layout]
        from concurrent.futures import ThreadPoolExecutor

        self.prep_threads = max(1, int(getattr(options, "prep_threads", None) or min(PREP_THREADS, os.cpu_count() or 1)))
        self._prep_pool = ThreadPoolExecutor(self.prep_threads, thread_name_prefix="vlm-prep")
        self.view_bytes = None  # peak bytes one 1024-px view cost the encoder, measured on the GPU
        self._vision_oom = False  # the last failure was the encoder running out of memory
        self.vision_batch, self.vision_batch_from = self._vision_batch(getattr(options, "vision_batch", None))

    def _keep_experts(self, asked) -> str | None:
        """The MoE implementation decoding runs with. transformers swaps `grouped_mm` for
        `batched_mm` during decoding on any non-CPU device (`_optimize_model_for_decode`), which copies
        the chosen experts' weights for every token at every step: ~10 GB per MoE layer per step at
        256 pages x 6 experts (computed from the weights' shapes; not measured). At OCR batch sizes the grouped kernel is kept unless asked otherwise
        (`decode_experts: batched_mm`, for the benchmark's comparison). None: nothing to switch."""
        get = getattr(self.model, "get_experts_implementation", None)
        used = {v for v in (get() if get else {}).values() if v}
        if "grouped_mm" not in used:
            return None  # no MoE kernel to switch (GOT-OCR2), or one chosen on purpose
        if asked == "batched_mm":
            return "batched_mm (transformers' switch for decoding)"
        import contextlib

        self.model._optimize_model_for_decode = contextlib.nullcontext  # the instance's: generate calls self.<name>()
        return "/".join(sorted(used))

    def _end_ids(self) -> set[int]:
        vocab = self.tokenizer.get_vocab()
        ids = {vocab[t] for t in self.spec.end_tokens if t in vocab}
        if not ids:
            raise ValueError(f"the tokenizer has none of {self.kind}'s end tokens {self.spec.end_tokens}: "
                             f"is this a {self.kind} checkpoint?")
        return ids

    # ---- vision encoding in micro-batches ------------------------------------------------------
    def _vision_batch(self, asked) -> tuple[float, str]:
        if asked:
            return float(asked), "options"
        if not self.device.startswith("cuda"):
            return float(CPU_VISION_BATCH), "cpu-default"
        torch = self.torch
        probe = self.prepare([np.full((VIEW_PX, VIEW_PX), 255, np.uint8)], self.spec.budgets[0])
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        self.vision_features(probe, limit=1.0)
        torch.cuda.synchronize()
        self.view_bytes = max(torch.cuda.max_memory_allocated() - before, 1)
        free, _ = torch.cuda.mem_get_info()
        views = int(VISION_MEMORY_SHARE * free // self.view_bytes)
        return float(max(1, min(MAX_VISION_BATCH, views))), "measured"

    def vision_features(self, prepared: Prepared, limit: float | None = None):
        """The image-token features of a prepared batch, in the order of its image tokens
        (images in order, each image's tokens as its model lays them out): (tokens, hidden)."""
        torch = self.torch
        parts = self._split(prepared.inputs, prepared.vision_tokens, self.spec)
        feats = []
        with torch.inference_mode():
            for group in micro_batches([view_weight(p) for p in parts], limit or self.vision_batch):
                kwargs = {k: v.to(self.device, self.dtype) if torch.is_tensor(v) and v.is_floating_point() else v
                          for k, v in self._join([parts[i] for i in group]).items()}
                try:
                    pooled = self.model.get_image_features(**kwargs, return_dict=True).pooler_output
                except Exception as e:
                    from folioscan.failures import is_out_of_memory

                    self._vision_oom = is_out_of_memory(e)  # release_memory then halves the micro-batch too
                    raise
                pooled = pooled if isinstance(pooled, (list, tuple)) else [pooled]
                feats.extend(f.reshape(-1, f.shape[-1]) for f in pooled)
                del kwargs, pooled
        features = torch.cat(feats)
        if features.shape[0] != sum(prepared.vision_tokens):
            raise RuntimeError(f"{self.kind}: the encoder gave {features.shape[0]} image features for "
                               f"{sum(prepared.vision_tokens)} image tokens")
        return features

    def _embeds(self, prepared: Prepared, input_ids):
        features = self.vision_features(prepared)
        embeds = self.model.get_input_embeddings()(input_ids)
        mask = (input_ids == self.image_token_id).unsqueeze(-1)
        return embeds.masked_scatter(mask, features.to(embeds.dtype))

    # ---- the two halves --------------------------------------------------------------------------
    def _processor(self):
        proc = getattr(self._local, "processor", None)
        if proc is None:
            import copy

            proc = self._local.processor = copy.deepcopy(self.processor)
        return proc

    def prefit(self, image: np.ndarray, budget: Budget) -> np.ndarray:
        """The page shrunk (area averaging, in grayscale) to the largest size any of its views is
        resized to, so the processor's RGB conversion and bicubic resizes work on what the model
        will see rather than on a 300-dpi scan (a 2621 x 1850 page: ~3x less preparation). Kept
        as it is when that would change the processor's tile grid (vision tokens)."""
        import cv2

        h, w = image.shape[:2]
        scale = min(1.0, max(max(th / h, tw / w) for th, tw in self.spec.view_sizes(budget, h, w)))
        if scale > 0.95:
            return image
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        if self.spec.vision_tokens(budget, size[1], size[0]) != self.spec.vision_tokens(budget, h, w):
            return image
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA)

    def prepare(self, images: Sequence[np.ndarray], budget: Budget) -> Prepared:
        """CPU only, thread-safe. The images are prepared in PREP_THREADS chunks at once (PIL,
        OpenCV and numpy release the GIL in their loops) and merged into one batch."""
        t0 = time.perf_counter()
        size = -(-len(images) // self.prep_threads)
        chunks = [list(images[k:k + size]) for k in range(0, len(images), size)]
        if len(chunks) <= 1:
            prepared = self._prepare(images, budget)
        else:
            prepared = self._merge(list(self._prep_pool.map(lambda c: self._prepare(c, budget), chunks)))
        prepared.prepare_s = time.perf_counter() - t0
        return prepared

    def _prepare(self, images: Sequence[np.ndarray], budget: Budget) -> Prepared:
        from PIL import Image

        pil = [Image.fromarray(self.prefit(im, budget)).convert("RGB") for im in images]
        text = {"text": [self.spec.prompt] * len(pil)} if self.spec.prompt else {}
        inputs = dict(self._processor()(images=pil, return_tensors="pt", padding=True, **text, **budget.processor_kwargs))
        # pixels held in the model's dtype: half the host memory of a prepared batch in bf16
        inputs = {k: v.to(self.dtype) if self.torch.is_tensor(v) and v.is_floating_point() else v for k, v in inputs.items()}
        vision = (inputs["input_ids"] == self.image_token_id).sum(dim=1).tolist()
        prompt_lens = inputs["attention_mask"].sum(dim=1).tolist()
        return Prepared(budget, inputs, [int(v) for v in vision], [int(p) for p in prompt_lens])

    def _merge(self, parts: list[Prepared]) -> Prepared:
        """Several prepared batches of one budget as one, prompts left-padded to the longest."""
        import torch.nn.functional as F

        torch = self.torch
        width = max(p.inputs["input_ids"].shape[1] for p in parts)
        pad = lambda t, value: F.pad(t, (width - t.shape[1], 0), value=value)  # noqa: E731
        views = [v for p in parts for v in self._split(p.inputs, p.vision_tokens, self.spec)]
        inputs = {**{k: v for k, v in self._join(views).items() if v is not None},
                  "input_ids": torch.cat([pad(p.inputs["input_ids"], self.tokenizer.pad_token_id) for p in parts]),
                  "attention_mask": torch.cat([pad(p.inputs["attention_mask"], 0) for p in parts])}
        return Prepared(parts[0].budget, inputs, [v for p in parts for v in p.vision_tokens],
                        [n for p in parts for n in p.prompt_lens])

    def select(self, prepared: Prepared, rows: Sequence[int]) -> Prepared:
        """The prepared inputs of some of a batch's images (a smaller batch after running out of
        memory), without preparing them again; padding columns no kept row needs are dropped."""
        rows = list(rows)
        ids, mask = prepared.inputs["input_ids"][rows], prepared.inputs["attention_mask"][rows]
        start = int(mask.shape[1] - mask.sum(dim=1).max())  # left padding shared by every kept row
        parts = self._split(prepared.inputs, prepared.vision_tokens, self.spec)
        inputs = {**{k: v for k, v in self._join([parts[i] for i in rows]).items() if v is not None},
                  "input_ids": ids[:, start:], "attention_mask": mask[:, start:]}
        return Prepared(prepared.budget, inputs, [prepared.vision_tokens[i] for i in rows],
                        [prepared.prompt_lens[i] for i in rows], 0.0)

    def release_memory(self) -> None:
        """After running out of memory: hand the allocator's cached blocks back before a retry, and
        halve the vision micro-batch when the encoder was what ran out (fewer pages alone would not
        shrink it)."""
        import gc

        gc.collect()
        if self.device.startswith("cuda"):
            self.torch.cuda.empty_cache()
        if self._vision_oom and self.vision_batch > 1:
            self.vision_batch = max(1.0, self.vision_batch / 2)
            self.vision_batch_from = self.vision_batch_from.removesuffix("+oom") + "+oom"
            log.warning("%s: out of memory in the vision encoder; %g views per call from now on", self.kind, self.vision_batch)
        self._vision_oom = False

    def generate(self, prepared: Prepared, max_new_tokens: int | Sequence[int]) -> list[Generation]:
        from folioscan.workers.engines.vlm.decoding import ChosenTokenLogprobs, PerSequenceCap

        torch = self.torch
        n = len(prepared)
        input_ids = prepared.inputs["input_ids"].to(self.device)
        attention_mask = prepared.inputs["attention_mask"].to(self.device)
        prompt_len = input_ids.shape[1]  # padded: positions run over the padding too
        caps = clamp_caps(per_sequence(max_new_tokens, n), [prompt_len] * n, self.context)
        recorder = ChosenTokenLogprobs(prompt_len)
        processors = [recorder]  # first: it must see the raw scores
        if self.ngram:
            processors.append(WindowedNoRepeatNGram(self.ngram, self.window, prompt_len))
        with torch.inference_mode():
            embeds = self._embeds(prepared, input_ids)
            sequences = self.model.generate(
                input_ids=input_ids, inputs_embeds=embeds, attention_mask=attention_mask,
                max_new_tokens=max(c for c, _ in caps), logits_processor=processors,
                stopping_criteria=[PerSequenceCap(prompt_len, [c for c, _ in caps], self.device)],
            )
            del embeds
        logprobs = recorder.finish(sequences).float().cpu().tolist()
        chosen = sequences[:, prompt_len:].cpu().tolist()
        steps = sequences.shape[1] - prompt_len
        out = []
        for i in range(n):
            cap, clamped = caps[i]
            ids, lps, hit = split_at_end(chosen[i], logprobs[i], self.end_ids, cap)
            out.append(Generation(ids, lps, prepared.vision_tokens[i], hit, steps, cap, clamped))
        return out

    def batch_decode(self, ids: list[list[int]]) -> list[str]:
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True)
