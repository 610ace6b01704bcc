"""Hugging Face transformers backend: batched greedy generation, chosen-token log-probs recorded
inside the decoding loop (decoding.py), stops at the model's end tokens (models.py).

The model comes from a local directory (or the hub where reachable: offline mode is on unless
FOLIOSCAN_ALLOW_HUB=1, so a missing network fails at once instead of after timeouts).
`options` is any object with the VlmOptions attributes used below (the GPU benchmark passes a
plain namespace: no pydantic there).
"""
from __future__ import annotations

import copy
import logging
import os
import threading
import time
from typing import Sequence

import numpy as np

from folioscan.workers.engines.vlm.backend import Generation, Prepared, clamp_caps, per_sequence, split_at_end
from folioscan.workers.engines.vlm.models import Budget, spec
from folioscan.workers.engines.vlm.repetition import WindowedNoRepeatNGram

__all__ = ["TransformersBackend", "Generation", "Prepared"]
log = logging.getLogger(__name__)

# generation-config fields that make generate() add logits processors ahead of ours; a checkpoint
# that sets one would have them run before the log-prob recorder, so they are dropped (and logged)
_PROCESSOR_FIELDS = ("repetition_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids",
                     "min_length", "min_new_tokens", "sequence_bias", "suppress_tokens", "begin_suppress_tokens",
                     "forced_bos_token_id", "forced_eos_token_id", "temperature", "top_k", "top_p", "do_sample")


class TransformersBackend:
    def __init__(self, options):
        if os.environ.get("FOLIOSCAN_ALLOW_HUB") != "1":
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        import transformers
        from transformers import AutoModelForImageTextToText, AutoProcessor, GenerationConfig

        if not options.model:
            raise ValueError(f"--model is required for {options.kind}: a local model directory")
        self.torch, self.kind, self.spec = torch, options.kind, spec(options.kind)
        device = options.device if options.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = {"auto": torch.bfloat16 if device.startswith("cuda") else torch.float32,
                 "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[options.dtype]
        local = os.path.isdir(options.model)
        self.processor = AutoProcessor.from_pretrained(options.model, local_files_only=local)
        self.processor.tokenizer.padding_side = "left"  # batched generation appends on the right
        # prepare() may run in another thread while this one decodes: a fast tokenizer must not be
        # used from two threads at once ("Already borrowed"), so prepare has its own copy and a lock
        self._prep_processor, self._prep_lock = copy.deepcopy(self.processor), threading.Lock()
        self.tokenizer = self.processor.tokenizer
        self.model = AutoModelForImageTextToText.from_pretrained(options.model, dtype=dtype, local_files_only=local).to(device).eval()
        self.device, self.dtype = device, dtype
        self.image_token_id = self.model.config.image_token_id
        self.end_ids = self._end_ids()
        text_cfg = self.model.config.get_text_config()
        self.context = min(getattr(text_cfg, "max_position_embeddings", None) or self.spec.context_length,
                           self.spec.context_length)
        dropped = {k: v for k, v in self.model.generation_config.to_diff_dict().items() if k in _PROCESSOR_FIELDS}
        if dropped:
            log.warning("%s: ignoring the checkpoint's generation settings %s (greedy decoding, guard of our own)",
                        self.kind, dropped)
        self.model.generation_config = GenerationConfig(
            bos_token_id=self.model.generation_config.bos_token_id, eos_token_id=sorted(self.end_ids),
            pad_token_id=self.tokenizer.pad_token_id, do_sample=False, num_beams=1)
        self.ngram, self.window = options.no_repeat_ngram, options.no_repeat_window
        self.version = f"transformers-{transformers.__version__}:{os.path.basename(os.path.normpath(options.model))}"

    def _end_ids(self) -> set[int]:
        vocab = self.tokenizer.get_vocab()
        ids = {vocab[t] for t in self.spec.end_tokens if t in vocab}
        if not ids:
            raise ValueError(f"the tokenizer has none of {self.kind}'s end tokens {self.spec.end_tokens}: "
                             f"is this a {self.kind} checkpoint?")
        return ids

    def prepare(self, images: Sequence[np.ndarray], budget: Budget) -> Prepared:
        """CPU only; safe to call from another thread while generate runs."""
        from PIL import Image

        t0 = time.perf_counter()
        pil = [Image.fromarray(im).convert("RGB") for im in images]
        text = {"text": [self.spec.prompt] * len(pil)} if self.spec.prompt else {}
        with self._prep_lock:
            inputs = dict(self._prep_processor(images=pil, return_tensors="pt", padding=True, **text, **budget.processor_kwargs))
        vision = (inputs["input_ids"] == self.image_token_id).sum(dim=1).tolist()
        prompt_lens = inputs["attention_mask"].sum(dim=1).tolist()
        return Prepared(budget, inputs, [int(v) for v in vision], [int(p) for p in prompt_lens], time.perf_counter() - t0)

    def generate(self, prepared: Prepared, max_new_tokens: int | Sequence[int]) -> list[Generation]:
        from folioscan.workers.engines.vlm.decoding import ChosenTokenLogprobs, PerSequenceCap

        torch = self.torch
        n = len(prepared)
        inputs = {k: (v.to(self.device, self.dtype) if torch.is_floating_point(v) else v.to(self.device)) if hasattr(v, "to") else v
                  for k, v in prepared.inputs.items()}
        prompt_len = inputs["input_ids"].shape[1]  # padded: positions run over the padding too
        caps = clamp_caps(per_sequence(max_new_tokens, n), [prompt_len] * n, self.context)
        recorder = ChosenTokenLogprobs(prompt_len)
        processors = [recorder]  # first: it must see the raw scores
        if self.ngram:
            processors.append(WindowedNoRepeatNGram(self.ngram, self.window, prompt_len))
        with torch.inference_mode():
            sequences = self.model.generate(
                **inputs, max_new_tokens=max(c for c, _ in caps), logits_processor=processors,
                stopping_criteria=[PerSequenceCap(prompt_len, [c for c, _ in caps], self.device)],
            )
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
