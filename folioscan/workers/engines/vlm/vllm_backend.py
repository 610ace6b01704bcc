"""vLLM backend (optional extra: `pip install folioscan[vllm]`, vLLM >= 0.11, V1 engine): the same
prepare/generate interface as the transformers backend, plus `generate_many`, which submits all
generate batches of one engine round in ONE `llm.generate` call so that vLLM's continuous
batching schedules the whole pool (`continuous_batching = True`).

What is and is not tested (tests/test_vllm_backend.py): vLLM does not install on the CPU-only
machines this project is built on, so vLLM itself NEVER RAN HERE. The request building and the
result mapping are tested against a fake `vllm` module (LLM, SamplingParams, the logits-processor
base class) injected through the `vllm_module` seam, with the real tokenizer and processor of the
project's tiny random checkpoints: one generate call per round, one SamplingParams per page with
its own clamped cap, stop ids, `logprobs=0` and the guard switch, each page's own
mm_processor_kwargs, outputs mapped back by index, end tokens, caps, log-probs and vision tokens.
Untested, by construction: that vLLM accepts these requests, its scheduling, and the numbers it
returns. What the backend shares with the transformers backend is tested through that backend:
- the repetition guard is the same rule (repetition.ban_repeats_), wrapped per request in vLLM's
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

# The ceiling on sequences vLLM runs at once. The engine hands over a whole round (every generate
# batch of its pool) in one call, so its own batch size no longer shapes the GPU batch: vLLM admits
# requests as its KV cache and token budget allow and starts the next as soon as one ends. Capping
# this at the engine's batch size would serialise the round again; 256 is V1's usual default for
# the LLM class, set explicitly so that it does not move with vLLM versions or hardware.
MAX_NUM_SEQS = 256


def _guard_class(base):
    """The repetition guard as a vLLM logits processor; `base` is vLLM's AdapterLogitsProcessor."""

    class NoRepeatGuard(base):
        """Per-request windowed no-repeat-n-gram: on when extra_args carries `no_repeat_ngram`."""

        def is_argmax_invariant(self) -> bool:
            return False  # it changes which token greedy decoding picks

        def new_req_logits_processor(self, params):
            args = params.extra_args or {}
            if not args.get("no_repeat_ngram"):
                return None
            return WindowedNoRepeatNGram(args["no_repeat_ngram"], args["no_repeat_window"], 0).for_request()

    return NoRepeatGuard


def _import_vllm():
    try:
        import vllm
        import vllm.v1.sample.logits_processor  # noqa: F401  (sets vllm.v1.sample.logits_processor)
    except ImportError as e:
        raise RuntimeError("the vllm backend needs `pip install folioscan[vllm]` on a CUDA machine") from e
    return vllm


def chosen_logprobs(output) -> list[float]:
    """The log-prob of each generated token, from a vLLM CompletionOutput asked for `logprobs=0`.

    `output.logprobs` holds one entry per generated token: a dict token id -> Logprob (`.logprob`),
    or vLLM's FlatLogprobs, which indexes the same way. Anything missing is an error, never an
    empty list: a page without log-probs would otherwise pass as confidence-less."""
    ids, per_token = list(output.token_ids), output.logprobs
    if per_token is None:
        raise RuntimeError("vLLM returned no log-probs (CompletionOutput.logprobs is None) for a request "
                           "that asked for logprobs=0: confidence cannot be computed")
    if len(per_token) != len(ids):
        raise RuntimeError(f"vLLM returned log-probs for {len(per_token)} positions and {len(ids)} tokens")
    out = []
    for k, token in enumerate(ids):
        entry = per_token[k]
        if entry is None or token not in entry:
            raise RuntimeError(f"vLLM returned no log-prob for the chosen token {token} at position {k}")
        out.append(float(entry[token].logprob))
    return out


class VllmBackend:
    continuous_batching = True  # the engine may hand a whole round to generate_many

    def __init__(self, options, vllm_module=None):
        """`vllm_module`: the vllm package, or a stand-in with the same attributes (tests: LLM,
        SamplingParams, __version__, v1.sample.logits_processor.AdapterLogitsProcessor)."""
        from transformers import AutoProcessor

        vllm = vllm_module or _import_vllm()
        self.vllm, self.kind, self.spec = vllm, options.kind, spec(options.kind)
        guard = _guard_class(vllm.v1.sample.logits_processor.AdapterLogitsProcessor)
        self.llm = vllm.LLM(model=options.model, dtype="bfloat16", limit_mm_per_prompt={"image": 1},
                            max_num_seqs=max(options.batch_size, MAX_NUM_SEQS), logprobs_mode="raw_logprobs",
                            logits_processors=[guard])
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
        return self.generate_many([(prepared, max_new_tokens)])[0]

    def generate_many(self, jobs: Sequence[tuple[Prepared, int | Sequence[int]]]) -> list[list[Generation]]:
        """All generate batches of one engine round in ONE `llm.generate` call.

        `jobs`: (prepared batch, its caps: one int or one per page), batches of any budgets.
        Returns one list of Generations per job, in the jobs' order, each in its pages' order.
        Every page is its own request: its batch's prompt and `mm_processor_kwargs` (its budget's),
        greedy, `max_tokens` = its cap clamped to the context, `logprobs=0`, the model's end tokens
        as stop ids, and the repetition guard switched on through `extra_args` when
        no_repeat_ngram > 0. vLLM returns outputs in request order; they are mapped back by index.

        `Generation.steps` is the request's OWN number of output tokens (its end token included):
        in continuous batching no request waits on padded decode steps of others, so there is no
        batch-wide step count as in the transformers backend."""
        prompt = self.spec.prompt or "OCR: "
        extra = {"no_repeat_ngram": self.ngram, "no_repeat_window": self.window} if self.ngram else None
        stop = sorted(self.end_ids)
        requests, params, owners = [], [], []
        for j, (prepared, max_new_tokens) in enumerate(jobs):
            caps = clamp_caps(per_sequence(max_new_tokens, len(prepared)), prepared.prompt_lens, self.context)
            if len(prepared.inputs) != len(caps):
                raise ValueError(f"job {j}: {len(prepared.inputs)} images for {len(caps)} pages")
            for image, (cap, clamped) in zip(prepared.inputs, caps):
                requests.append({"prompt": prompt, "multi_modal_data": {"image": image},
                                 "mm_processor_kwargs": dict(prepared.budget.processor_kwargs)})
                params.append(self.vllm.SamplingParams(temperature=0.0, max_tokens=cap, logprobs=0,
                                                       stop_token_ids=stop, extra_args=dict(extra) if extra else None))
                owners.append((j, cap, clamped))
        results: list[list[Generation]] = [[] for _ in jobs]
        if not requests:
            return results
        outs = list(self.llm.generate(requests, params, use_tqdm=False))
        if len(outs) != len(requests):
            raise RuntimeError(f"vLLM returned {len(outs)} outputs for {len(requests)} requests")
        for out, (j, cap, clamped) in zip(outs, owners):
            o = out.outputs[0]
            ids, lps, hit = split_at_end(list(o.token_ids), chosen_logprobs(o), self.end_ids, cap)
            vision = sum(1 for t in out.prompt_token_ids if t == self.image_token_id)
            results[j].append(Generation(ids, lps, vision, hit, len(o.token_ids), cap, clamped))
        return results

    def batch_decode(self, ids: list[list[int]]) -> list[str]:
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True)
