"""Vision-token budgets per page: the ladder a page can climb, and the adaptive first choice.

Optical compression (DeepSeek-OCR): reading stays ~97% precise while the page's text tokens
are under ~10x the vision tokens and falls off beyond, so the adaptive mode picks the smallest
budget whose expected ratio stays under the target, and escalation climbs the same ladder.

A page's ladder is built from the tile grid the processor will really cut for that page's
shape, and rungs that give the same vision tokens (the same input) are dropped: on a portrait
book page DeepSeek-OCR-2's tiled-4 is often tiled-2's 1x2 grid, and GOT-OCR2's tiled-2 is the
single base crop on a near-square page. A re-read therefore always sees more of the page.
"""
from __future__ import annotations

from dataclasses import dataclass

from folioscan.workers.engines.vlm.models import MODELS, Budget, spec

__all__ = ["Budget", "Rung", "BUDGETS", "ladder", "page_ladder", "choose_rung", "choose_budget", "expected_text_tokens",
           "max_new_tokens"]

CHARS_PER_TEXT_TOKEN = 3.6  # English book prose in these models' BPE vocabularies (approximate)

BUDGETS: dict[str, list[Budget]] = {k: list(s.budgets) for k, s in MODELS.items()}  # published ladders


@dataclass(frozen=True)
class Rung:
    budget: Budget
    vision_tokens: int  # what the processor emits for this budget on this page


def ladder(model_kind: str) -> list[Budget]:
    return BUDGETS[model_kind]


def page_ladder(model_kind: str, height: int, width: int, start: str | None = None) -> list[Rung]:
    """The budgets a h x w page can be read at, each giving strictly more vision tokens than the last.

    `start` (a budget name) begins the ladder there, experimental budgets included; the rungs
    above it are the published ones that add tokens."""
    s = spec(model_kind)
    rungs: list[Rung] = []
    if start is not None:
        b = s.budget(start)
        rungs.append(Rung(b, s.vision_tokens(b, height, width)))
    for b in s.budgets:
        n = s.vision_tokens(b, height, width)
        if not rungs or n > rungs[-1].vision_tokens:
            rungs.append(Rung(b, n))
    return rungs


def expected_text_tokens(est_chars: int) -> int:
    return int(est_chars / CHARS_PER_TEXT_TOKEN)


def choose_rung(rungs: list[Rung], est_chars: int, target_ratio: float = 10.0) -> int:
    """Index of the smallest rung whose text/vision token ratio stays under the target.
    With no estimate (0), the second rung: a page of unknown density gets a middling read."""
    if est_chars <= 0:
        return min(1, len(rungs) - 1)
    tokens = expected_text_tokens(est_chars)
    for i, r in enumerate(rungs):
        if tokens <= target_ratio * r.vision_tokens:
            return i
    return len(rungs) - 1


def choose_budget(model_kind: str, est_chars: int, target_ratio: float = 10.0) -> int:
    """The same choice on the model's published ladder at its budgets' largest token counts
    (no page shape known): an index into BUDGETS[model_kind]."""
    return choose_rung([Rung(b, b.vision_tokens) for b in BUDGETS[model_kind]], est_chars, target_ratio)


def max_new_tokens(vision_tokens: int | Budget, target_ratio: float, floor: int = 256, cap: int = 8192) -> int:
    """Room for 1.5x the target compression: enough for a dense page, a bound on runaway loops."""
    n = vision_tokens.vision_tokens if isinstance(vision_tokens, Budget) else vision_tokens
    return int(min(cap, max(floor, n * target_ratio * 1.5)))
