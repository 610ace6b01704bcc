"""vLLM backend (optional extra: `pip install folioscan[vllm]`, vLLM >= 0.11, V1 engine): the same
prepare/generate interface and the same engine code path as the transformers backend.

NOT TESTED HERE: vLLM does not install on the CPU-only machines this project is built on. What
it shares with the transformers backend is tested through that backend:
- the repetition guard is the same rule (repetition.banned_tokens), wrapped per request in vLLM's
  AdapterLogitsProcessor and switched on per request through SamplingParams.extra_args;
- confidence is the chosen token's log-prob under the RAW distribution: `logprobs=0` returns the
  sampled token's log-prob, and with `logprobs_mode="raw_logprobs"` (set explicitly below; the V1
  default) vLLM computes it before any logits processor or penalty, as decoding.ChosenTokenLogprobs
  does. (The V0 engine of vLLM < 0.10 computed it after the processors: not supported.)
- end tokens come from models.py (stop_token_ids), caps are per request (`max_tokens`), clamped
  to the context like the transformers backend.
"""
from __future__ import annotations

import os
import time
from typing import Sequence

import numpy as np

from folioscan.workers.engines.vlm.backend import Generation, Prepared, clamp_caps, per_sequence, split_at_end
from folioscan.workers.engines.vlm.models import Budget, spec
from folioscan.workers.engines.vlm.repetition import WindowedNoRepeatNGram


def _guard_class():
    from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

    class NoRepeatGuard(AdapterLogitsProcessor):
        """Per-request windowed no-repeat-n-gram: on when extra_args carries `no_repeat_ngram`."""

        def is_argmax_invariant(self) -> bool:
            return False  # it changes which token greedy decoding picks

        def new_req_logits_processor(self, params):
            args = params.extra_args or {}
            if not args.get("no_repeat_ngram"):
                return None
            return WindowedNoRepeatNGram(args["no_repeat_ngram"], args["no_repeat_window"], 0).for_request()

    return NoRepeatGuard


class VllmBackend:
    def __init__(self, options):
        try:
            import vllm
        except ImportError as e:
            raise RuntimeError("the vllm backend needs `pip install folioscan[vllm]` on a CUDA machine") from e
        from transformers import AutoProcessor

        self.vllm, self.kind, self.spec = vllm, options.kind, spec(options.kind)
        self.llm = vllm.LLM(model=options.model, dtype="bfloat16", limit_mm_per_prompt={"image": 1},
                            max_num_seqs=max(options.batch_size, 8), logprobs_mode="raw_logprobs",
                            logits_processors=[_guard_class()])
        self.processor = AutoProcessor.from_pretrained(options.model, local_files_only=os.path.isdir(options.model))
        self.tokenizer = self.processor.tokenizer
        vocab = self.tokenizer.get_vocab()
        self.end_ids = {vocab[t] for t in self.spec.end_tokens if t in vocab}
        if not self.end_ids:
            raise ValueError(f"the tokenizer has none of {self.kind}'s end tokens {self.spec.end_tokens}")
        hf = self.llm.llm_engine.model_config.hf_config
        self.image_token_id = getattr(hf, "image_token_id", None) or getattr(hf, "image_token_index")
        self.context = min(self.llm.llm_engine.model_config.max_model_len, self.spec.context_length)
        self.ngram, self.window = options.no_repeat_ngram, options.no_repeat_window
        self.version = f"vllm-{vllm.__version__}:{os.path.basename(os.path.normpath(options.model))}"

    def prepare(self, images: Sequence[np.ndarray], budget: Budget) -> Prepared:
        """PIL images and the vision token count the processor will give each (vLLM runs the
        processor itself, on its own worker)."""
        from PIL import Image

        t0 = time.perf_counter()
        pil = [Image.fromarray(im).convert("RGB") for im in images]
        vision = [self.spec.vision_tokens(budget, im.shape[0], im.shape[1]) for im in images]
        text = len(self.tokenizer(self.spec.prompt or "OCR: ").input_ids)  # the image placeholder counts once too much
        return Prepared(budget, pil, vision, [v + text for v in vision], time.perf_counter() - t0)

    def generate(self, prepared: Prepared, max_new_tokens: int | Sequence[int]) -> list[Generation]:
        caps = clamp_caps(per_sequence(max_new_tokens, len(prepared)), prepared.prompt_lens, self.context)
        prompt = self.spec.prompt or "OCR: "
        extra = {"no_repeat_ngram": self.ngram, "no_repeat_window": self.window} if self.ngram else None
        requests, params = [], []
        for image, (cap, _) in zip(prepared.inputs, caps):
            requests.append({"prompt": prompt, "multi_modal_data": {"image": image},
                             "mm_processor_kwargs": prepared.budget.processor_kwargs})
            params.append(self.vllm.SamplingParams(temperature=0.0, max_tokens=cap, logprobs=0,
                                                   stop_token_ids=sorted(self.end_ids), extra_args=extra))
        outs = self.llm.generate(requests, params, use_tqdm=False)
        steps = max((len(o.outputs[0].token_ids) for o in outs), default=0)  # continuous batching: the longest
        results = []
        for out, (cap, clamped) in zip(outs, caps):
            o = out.outputs[0]
            lps = [d[t].logprob for t, d in zip(o.token_ids, o.logprobs or [])]
            ids, lps, hit = split_at_end(list(o.token_ids), lps, self.end_ids, cap)
            vision = sum(1 for t in out.prompt_token_ids if t == self.image_token_id)
            results.append(Generation(ids, lps, vision, hit, steps, cap, clamped))
        return results

    def batch_decode(self, ids: list[list[int]]) -> list[str]:
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True)
