"""What folioscan knows about each supported VLM, in one place: classes, prompt, end tokens,
vision-token budgets, context length, published vocabulary.

An engine author adding a model writes one `ModelSpec` here. Registry, CLI, backends,
random_init and the benchmarks read it; nothing else hard-codes a model fact. Imports only the
standard library (the GPU benchmark runs without pydantic); transformers is imported lazily by
the functions that count a page's vision tokens, with the processor's own tiling function.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional


@dataclass(frozen=True)
class Budget:
    name: str
    vision_tokens: int  # at most; on a given page the processor's tile grid may give fewer (see page_vision_tokens)
    processor_kwargs: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class ModelSpec:
    kind: str
    model_class: str  # transformers class names, for random_init and documentation
    config_class: str
    processor_class: str
    image_processor: str  # "module:Class" of the PIL image processor under transformers.models
    prompt: Optional[str]  # None: the processor writes its own prompt (GOT-OCR2: "... OCR: ")
    end_tokens: tuple[str, ...]  # generation ends at any of these
    image_token: str
    specials: tuple[str, ...]  # special tokens of the published tokenizer that folioscan relies on
    context_length: int  # positions the published model was trained for; output caps are clamped to fit
    vocab_size: int  # of the published checkpoint's language model
    budgets: tuple[Budget, ...]  # the escalation ladder, smallest first: published input modes only
    experimental: tuple[Budget, ...]  # selectable by name, never chosen by the adaptive mode
    vision_tokens: Callable[[Budget, int, int], int]  # (budget, height, width) -> tokens the processor emits
    vision_layout: str  # how the processor lays out a batch's views (transformers_backend.VIEW_LAYOUTS)
    # (budget, height, width) -> the (height, width) every view of the page is resized to by the processor
    view_sizes: Callable[[Budget, int, int], list[tuple[int, int]]]

    def budget(self, name: str) -> Budget:
        for b in self.budgets + self.experimental:
            if b.name == name:
                return b
        names = [b.name for b in self.budgets + self.experimental]
        raise ValueError(f"{self.kind} has no budget {name!r}; choose one of {names} or 'adaptive'")


def _canvas(module: str, h: int, w: int, tile: int, lo: int, hi: int) -> tuple[int, int]:
    """(columns, rows) of tiles the processor cuts a h x w image into (its own function, so the
    count cannot drift)."""
    import importlib

    canvas = importlib.import_module(f"transformers.models.{module}").get_optimal_tiled_canvas
    cols, rows = canvas((h, w), (tile, tile), lo, hi)
    return cols, rows


def _grid(module: str, h: int, w: int, tile: int, lo: int, hi: int) -> int:
    cols, rows = _canvas(module, h, w, tile, lo, hi)
    return cols * rows


# ---- DeepSeek-OCR-2 -------------------------------------------------------------------------
# Published input modes: a 1024-px global view (16x16 = 256 learned queries) plus 0-6 local tiles
# of 768 px (12x12 = 144 each), chosen by aspect ratio (2..6 tiles; none when the page fits in
# 768 px). The processor adds one view-separator token: 257 + 144 x tiles in the prompt.
# `base` (no tiles) must pass tile_size=1024: without cropping the processor resizes the global
# view to tile_size but counts tokens from size.
_DS2_PROC = "deepseek_ocr2.image_processing_pil_deepseek_ocr2"


def _ds2_tokens(b: Budget, h: int, w: int) -> int:
    kw = b.processor_kwargs
    queries = lambda px: math.ceil(px / 64) ** 2  # 16-px patches, 4x downsampled
    tile = kw["tile_size"]
    tiles = 0
    if kw.get("crop_to_patches") and max(h, w) > tile:
        tiles = _grid(_DS2_PROC, h, w, tile, kw["min_patches"], kw["max_patches"])
    return queries(kw["size"]["height"]) + queries(tile) * tiles + 1


def _ds2_view_sizes(b: Budget, h: int, w: int) -> list[tuple[int, int]]:
    """The global view keeps the aspect ratio (longest side to `size`, then padded square); the
    tiles are cut from the page resized to the tile canvas."""
    kw = b.processor_kwargs
    tile, side = kw["tile_size"], kw["size"]["height"] if kw.get("crop_to_patches") else kw["tile_size"]
    out = [(round(h * side / max(h, w)), round(w * side / max(h, w)))]
    if kw.get("crop_to_patches") and max(h, w) > tile:
        cols, rows = _canvas(_DS2_PROC, h, w, tile, kw["min_patches"], kw["max_patches"])
        out.append((rows * tile, cols * tile))
    return out


def _ds2_tiled(n: int) -> Budget:
    return Budget(f"tiled-{n}", 257 + 144 * n, {"crop_to_patches": True, "min_patches": 2, "max_patches": n,
                                                "size": {"height": 1024, "width": 1024}, "tile_size": 768})


DEEPSEEK_OCR_2 = ModelSpec(
    kind="deepseek-ocr-2",
    model_class="DeepseekOcr2ForConditionalGeneration", config_class="DeepseekOcr2Config",
    processor_class="DeepseekOcr2Processor", image_processor=f"{_DS2_PROC}:DeepseekOcr2ImageProcessorPil",
    prompt="<image>\nFree OCR.",
    end_tokens=("<｜end▁of▁sentence｜>",),
    image_token="<image>",
    specials=("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>", "<image>"),
    context_length=8192,
    vocab_size=129280,
    budgets=(
        Budget("base", 257, {"crop_to_patches": False, "size": {"height": 1024, "width": 1024}, "tile_size": 1024}),
        _ds2_tiled(2), _ds2_tiled(4), _ds2_tiled(6),
    ),
    # a 768-px global view (144 + 1 tokens): the model has the queries for it, but no accuracy
    # was published for it as a mode of its own
    experimental=(Budget("experimental-768", 145, {"crop_to_patches": False, "size": {"height": 768, "width": 768},
                                                   "tile_size": 768}),),
    vision_tokens=_ds2_tokens,
    view_sizes=_ds2_view_sizes,
    vision_layout="global+local",  # pixel_values (a global view per image), pixel_values_local, num_local_patches
)

# ---- GOT-OCR2 -------------------------------------------------------------------------------
# 256 tokens per 1024-px crop. Multi-crop cuts the page into a grid of 1..n crops by aspect ratio
# and adds a thumbnail of the whole page when there is more than one crop. Its chat turns end
# with <|im_end|>; the checkpoint's eos is <|endoftext|>, which the model does not emit after a page.
_GOT_PROC = "got_ocr2.image_processing_pil_got_ocr2"


def _got_tokens(b: Budget, h: int, w: int) -> int:
    kw = b.processor_kwargs
    crops = 1
    if kw.get("crop_to_patches") and kw["max_patches"] > 1:
        n = _grid(_GOT_PROC, h, w, kw["size"]["height"], kw["min_patches"], kw["max_patches"])
        crops = n + 1 if n > 1 else 1
    return 256 * crops


def _got_view_sizes(b: Budget, h: int, w: int) -> list[tuple[int, int]]:
    """Every crop and the thumbnail are plain resizes (no aspect kept) to the crop size or canvas."""
    kw = b.processor_kwargs
    side = kw["size"]["height"]
    out = [(side, side)]
    if kw.get("crop_to_patches") and kw["max_patches"] > 1:
        cols, rows = _canvas(_GOT_PROC, h, w, side, kw["min_patches"], kw["max_patches"])
        out.append((rows * side, cols * side))
    return out


def _got_tiled(n: int) -> Budget:
    return Budget(f"tiled-{n}", 256 * (n + 1), {"crop_to_patches": True, "min_patches": 1, "max_patches": n,
                                                "size": {"height": 1024, "width": 1024}})


GOT_OCR2 = ModelSpec(
    kind="got-ocr2",
    model_class="GotOcr2ForConditionalGeneration", config_class="GotOcr2Config",
    processor_class="GotOcr2Processor", image_processor=f"{_GOT_PROC}:GotOcr2ImageProcessorPil",
    prompt=None,
    end_tokens=("<|im_end|>", "<|endoftext|>"),
    image_token="<imgpad>",
    specials=("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<imgpad>"),
    context_length=8192,  # GOT's decoder was trained on 8K tokens (its Qwen2 config allows 32K positions)
    vocab_size=151860,
    budgets=(Budget("base", 256, {"crop_to_patches": False, "size": {"height": 1024, "width": 1024}}),
             _got_tiled(2), _got_tiled(4), _got_tiled(6)),
    experimental=(),
    vision_tokens=_got_tokens,
    view_sizes=_got_view_sizes,
    vision_layout="crops",  # pixel_values: every image's crops in order, 256 tokens each
)

MODELS: dict[str, ModelSpec] = {s.kind: s for s in (DEEPSEEK_OCR_2, GOT_OCR2)}


def spec(kind: str) -> ModelSpec:
    if kind not in MODELS:
        raise ValueError(f"unknown VLM {kind!r}; supported: {sorted(MODELS)}")
    return MODELS[kind]
