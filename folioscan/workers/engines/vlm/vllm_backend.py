"""vLLM backend (optional extra: `pip install folioscan[vllm]`): the same inputs and outputs as the
transformers backend, for production throughput on GPUs.

Not exercised on the CPU-only machines this project is built on (vLLM does not install there);
kept thin on purpose: the budget's processor kwargs go to vLLM's multimodal processor, greedy
sampling with one log-prob per token gives the same confidence as the transformers backend.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from folioscan.workers.engines.vlm.budgets import Budget
from folioscan.workers.engines.vlm.transformers_backend import PROMPTS, Generation


class VllmBackend:
    def __init__(self, options):
        try:
            import vllm
        except ImportError as e:
            raise RuntimeError("the vllm backend needs `pip install folioscan[vllm]` on a CUDA machine") from e
        from transformers import AutoProcessor

        self.vllm, self.kind = vllm, options.kind
        self.llm = vllm.LLM(model=options.model, dtype="bfloat16", limit_mm_per_prompt={"image": 1},
                            max_num_seqs=max(options.batch_size, 8))
        self.processor = AutoProcessor.from_pretrained(options.model, local_files_only=os.path.isdir(options.model))
        self.image_token_id = self.llm.llm_engine.model_config.hf_config.image_token_id
        self.version = f"vllm-{vllm.__version__}:{os.path.basename(os.path.normpath(options.model))}"

    def generate(self, images: Sequence[np.ndarray], budget: Budget, max_new_tokens: int) -> list[Generation]:
        from PIL import Image

        params = self.vllm.SamplingParams(temperature=0.0, max_tokens=max_new_tokens, logprobs=0)
        prompt = PROMPTS[self.kind] or "OCR: "
        requests = [{"prompt": prompt, "multi_modal_data": {"image": Image.fromarray(im).convert("RGB")},
                     "mm_processor_kwargs": budget.processor_kwargs} for im in images]
        results = []
        for out in self.llm.generate(requests, params, use_tqdm=False):
            o = out.outputs[0]
            lps = [next(iter(d.values())).logprob for d in (o.logprobs or [])]
            vision = sum(1 for t in out.prompt_token_ids if t == self.image_token_id)
            results.append(Generation(list(o.token_ids), lps, vision, o.finish_reason == "length"))
        return results

    def batch_decode(self, ids: list[list[int]]) -> list[str]:
        return self.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
