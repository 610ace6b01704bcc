"""Hugging Face transformers backend: batched greedy generation with raw-logit log-probs.

The model comes from a local directory (or the hub where reachable: offline mode is on unless
FOLIOSCAN_ALLOW_HUB=1, so a missing network fails at once instead of after timeouts).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from folioscan.workers.engines.vlm.budgets import Budget
from folioscan.workers.engines.vlm.repetition import WindowedNoRepeatNGram

PROMPTS = {"deepseek-ocr-2": "<image>\nFree OCR.", "got-ocr2": None}  # GOT builds its own "OCR: " prompt


@dataclass
class Generation:
    token_ids: list[int]
    logprobs: list[float]
    vision_tokens: int
    hit_token_cap: bool


class TransformersBackend:
    def __init__(self, options):
        if os.environ.get("FOLIOSCAN_ALLOW_HUB") != "1":
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        import transformers
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if not options.model:
            raise ValueError(f"--model is required for {options.kind}: a local model directory")
        self.torch, self.kind = torch, options.kind
        device = options.device if options.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = {"auto": torch.bfloat16 if device.startswith("cuda") else torch.float32,
                 "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[options.dtype]
        local = os.path.isdir(options.model)
        self.processor = AutoProcessor.from_pretrained(options.model, local_files_only=local)
        self.processor.tokenizer.padding_side = "left"  # batched generation appends on the right
        self.model = AutoModelForImageTextToText.from_pretrained(options.model, dtype=dtype, local_files_only=local).to(device).eval()
        self.device, self.dtype = device, dtype
        self.image_token_id = self.model.config.image_token_id
        eos = self.model.generation_config.eos_token_id or self.processor.tokenizer.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos])
        self.ngram, self.window = options.no_repeat_ngram, options.no_repeat_window
        self.version = f"transformers-{transformers.__version__}:{os.path.basename(os.path.normpath(options.model))}"

    def generate(self, images: Sequence[np.ndarray], budget: Budget, max_new_tokens: int) -> list[Generation]:
        from PIL import Image

        torch = self.torch
        pil = [Image.fromarray(im).convert("RGB") for im in images]
        prompt = PROMPTS[self.kind]
        text = {"text": [prompt] * len(pil)} if prompt else {}
        inputs = self.processor(images=pil, return_tensors="pt", padding=True, **text, **budget.processor_kwargs)
        inputs = {k: (v.to(self.device, self.dtype) if torch.is_floating_point(v) else v.to(self.device)) if hasattr(v, "to") else v
                  for k, v in inputs.items()}
        prompt_len = inputs["input_ids"].shape[1]
        vision = (inputs["input_ids"] == self.image_token_id).sum(dim=1).tolist()
        guard = WindowedNoRepeatNGram(self.ngram, self.window, prompt_len) if self.ngram else None
        with torch.inference_mode():
            out = self.model.generate(
                **inputs, do_sample=False, max_new_tokens=max_new_tokens, num_beams=1,
                logits_processor=[guard] if guard else None, output_logits=True, return_dict_in_generate=True,
                pad_token_id=self.processor.tokenizer.pad_token_id,
            )
        steps = torch.stack(out.logits, dim=1).float()  # raw logits: batch x steps x vocab
        chosen = out.sequences[:, prompt_len:]
        logprobs = torch.log_softmax(steps, dim=-1).gather(-1, chosen[:, : steps.shape[1], None]).squeeze(-1)
        results = []
        for i in range(len(pil)):
            ids, lps = chosen[i].tolist(), logprobs[i].tolist()
            end = next((k for k, t in enumerate(ids) if t in self.eos), None)
            hit_cap = end is None and len(ids) >= max_new_tokens
            end = len(ids) if end is None else end
            results.append(Generation(ids[:end], lps[:end], int(vision[i]), hit_cap))
        return results

    def batch_decode(self, ids: list[list[int]]) -> list[str]:
        return self.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
