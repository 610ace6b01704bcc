"""The interface every VLM backend implements, in two halves:

    prepare(images, budget) -> Prepared        CPU only (PIL conversion + the processor); thread-safe
    generate(prepared, max_new_tokens) -> [Generation]   the accelerator part

so image preparation can run in another thread or stage while the GPU generates. A cap may be
one int or one per image: a sequence that reaches its own cap is ended there while the others
go on (length-aware batches). Generation steps stop at the model's end tokens (models.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np

from folioscan.workers.engines.vlm.models import Budget


@dataclass
class Prepared:
    budget: Budget
    inputs: Any  # backend-specific model inputs, on the CPU (transformers: dict of tensors)
    vision_tokens: list[int]  # per image, as the processor emitted them
    prompt_lens: list[int]  # per image: prompt tokens (vision tokens included), padding excluded
    prepare_s: float = 0.0  # seconds spent preparing (all images)

    def __len__(self) -> int:
        return len(self.vision_tokens)


@dataclass
class Generation:
    token_ids: list[int]  # end token excluded
    logprobs: list[float]  # of each token in token_ids, under the model's raw distribution
    vision_tokens: int
    hit_token_cap: bool  # reached max_new_tokens without an end token
    steps: int = 0  # decode steps the whole batch ran (the same for every sequence of a call)
    max_new_tokens: int = 0  # the cap this sequence ran under, after clamping to the context
    cap_clamped: bool = False  # the cap asked for did not fit the model's context and was reduced


class VlmBackend(Protocol):
    kind: str
    version: str

    def prepare(self, images: Sequence[np.ndarray], budget: Budget) -> Prepared: ...

    def generate(self, prepared: Prepared, max_new_tokens: int | Sequence[int]) -> list[Generation]: ...

    def batch_decode(self, ids: list[list[int]]) -> list[str]: ...


def per_sequence(max_new_tokens: int | Sequence[int], n: int) -> list[int]:
    caps = [int(max_new_tokens)] * n if isinstance(max_new_tokens, (int, np.integer)) else [int(c) for c in max_new_tokens]
    if len(caps) != n or min(caps, default=1) < 1:
        raise ValueError(f"need {n} output caps of at least 1, got {caps}")
    return caps


def clamp_caps(caps: list[int], prompt_lens: list[int], context: int) -> list[tuple[int, bool]]:
    """Each cap reduced so that prompt + output fits the model's context; (cap, clamped)."""
    out = []
    for cap, prompt in zip(caps, prompt_lens):
        room = context - prompt
        if room < 1:
            raise ValueError(f"the prompt has {prompt} tokens (vision tokens included); the model's context is {context}")
        out.append((min(cap, room), cap > room))
    return out


def split_at_end(ids: list[int], lps: list[float], end_ids: set[int], cap: int) -> tuple[list[int], list[float], bool]:
    """A sequence's tokens up to its first end token and within its cap; whether it hit the cap."""
    ids, lps = ids[:cap], lps[:cap]
    end = next((k for k, t in enumerate(ids) if t in end_ids), None)
    if end is None:
        return ids, lps, len(ids) >= cap
    return ids[:end], lps[:end], False
