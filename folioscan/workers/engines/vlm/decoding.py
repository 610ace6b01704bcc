"""Pieces of the decoding loop: the chosen token's log-prob under the model's raw distribution,
and per-sequence output caps.

The recorder is the first logits processor: it sees the raw scores before any guard edits them
(in place). It keeps one step's log-softmax (batch x vocab) and, on the next step, gathers the
token that was appended, so what it holds over a whole generation is O(batch x steps) floats,
not the O(batch x vocab x steps) of `output_logits=True`. The last token is gathered after
generate returns, from the final sequences.
"""
from __future__ import annotations

import torch
from transformers import LogitsProcessor, StoppingCriteria


class ChosenTokenLogprobs(LogitsProcessor):
    def __init__(self, prompt_len: int):
        self.prompt_len = prompt_len
        self.last: torch.Tensor | None = None  # log-softmax of the latest step, batch x vocab
        self.chosen: list[torch.Tensor] = []  # per step: log-prob of the token that step appended, (batch,)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.last is not None:
            self.chosen.append(self.last.gather(-1, input_ids[:, -1:]).squeeze(-1))
        self.last = torch.log_softmax(scores.float(), dim=-1)  # a new tensor: later in-place edits do not reach it
        return scores

    def finish(self, sequences: torch.LongTensor) -> torch.Tensor:
        """batch x generated log-probs aligned with `sequences[:, prompt_len:]`. generate may have
        run (and undone) a step past the end; those extra records are dropped."""
        steps = sequences.shape[1] - self.prompt_len
        chosen = self.chosen[:steps]
        if len(chosen) < steps and self.last is not None:
            chosen.append(self.last.gather(-1, sequences[:, -1:]).squeeze(-1))
        self.last = None
        if not chosen:
            return torch.zeros(sequences.shape[0], 0)
        return torch.stack(chosen, dim=1)


class PerSequenceCap(StoppingCriteria):
    """Stopping criterion: sequence i is done once it has generated caps[i] tokens (the others go on)."""

    def __init__(self, prompt_len: int, caps: list[int], device):
        self.prompt_len = prompt_len
        self.caps = torch.tensor(caps, device=device)

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        return (input_ids.shape[1] - self.prompt_len) >= self.caps
