"""Vision-token budgets per model, and the adaptive choice from a page's estimated text length.

Optical compression (DeepSeek-OCR): reading stays ~97% precise while the page's text tokens
are under ~10x the vision tokens and falls off beyond, so the adaptive mode picks the smallest
budget whose expected ratio stays under the target, and escalation climbs the same ladder.
"""
from __future__ import annotations

from dataclasses import dataclass, field

CHARS_PER_TEXT_TOKEN = 3.6  # English book prose in these models' BPE vocabularies (approximate)


@dataclass(frozen=True)
class Budget:
    name: str
    vision_tokens: int  # at most; a tiled budget may use fewer tiles on a page of unusual shape
    processor_kwargs: dict = field(default_factory=dict, hash=False, compare=False)


def _ds2_tiled(n: int) -> Budget:
    return Budget(f"tiled-{n}", 256 + 144 * n + 1, {"crop_to_patches": True, "min_patches": 2, "max_patches": n,
                                                     "size": {"height": 1024, "width": 1024}, "tile_size": 768})


def _got_tiled(n: int) -> Budget:
    return Budget(f"tiled-{n}", 256 * (n + 1), {"crop_to_patches": True, "min_patches": 1, "max_patches": n,
                                                "size": {"height": 1024, "width": 1024}})


# DeepSeek-OCR-2 has learned queries for two resolutions only: 768 px (144) and 1024 px (256);
# tiles are 768 px. One extra token separates the views. Without cropping, the processor
# must be told a matching size and tile_size or it miscounts the image tokens.
BUDGETS: dict[str, list[Budget]] = {
    "deepseek-ocr-2": [
        Budget("small", 145, {"crop_to_patches": False, "size": {"height": 768, "width": 768}, "tile_size": 768}),
        Budget("base", 257, {"crop_to_patches": False, "size": {"height": 1024, "width": 1024}, "tile_size": 1024}),
        _ds2_tiled(2), _ds2_tiled(4), _ds2_tiled(6),
    ],
    # GOT-OCR2's image processor defaults to 384 px; the model reads 1024 px views of 256 tokens.
    "got-ocr2": [
        Budget("base", 256, {"crop_to_patches": False, "size": {"height": 1024, "width": 1024}}),
        _got_tiled(2), _got_tiled(4), _got_tiled(6),
    ],
}


def ladder(model_kind: str) -> list[Budget]:
    return BUDGETS[model_kind]


def budget_index(model_kind: str, name: str) -> int:
    names = [b.name for b in BUDGETS[model_kind]]
    if name not in names:
        raise ValueError(f"{model_kind} has no budget {name!r}; choose one of {names} or 'adaptive'")
    return names.index(name)


def expected_text_tokens(est_chars: int) -> int:
    return int(est_chars / CHARS_PER_TEXT_TOKEN)


def choose_budget(model_kind: str, est_chars: int, target_ratio: float = 10.0) -> int:
    """Index of the smallest budget whose text/vision token ratio stays under the target.
    With no estimate (0), the model's second rung: a page of unknown density gets a middling read."""
    budgets = BUDGETS[model_kind]
    if est_chars <= 0:
        return min(1, len(budgets) - 1)
    tokens = expected_text_tokens(est_chars)
    for i, b in enumerate(budgets):
        if tokens <= target_ratio * b.vision_tokens:
            return i
    return len(budgets) - 1


def max_new_tokens(budget: Budget, target_ratio: float, floor: int = 256, cap: int = 8192) -> int:
    """Room for 1.5x the target compression: enough for a dense page, a bound on runaway loops."""
    return int(min(cap, max(floor, budget.vision_tokens * target_ratio * 1.5)))
