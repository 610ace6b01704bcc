"""Engines by name. Options are one pydantic model per engine, told apart by `kind`;
an engine's module is imported only when that engine is built."""
from __future__ import annotations

from typing import Annotated, Literal, Optional, Union, get_args

from pydantic import BaseModel, ConfigDict, Field

from folioscan.workers.engines import counters
from folioscan.workers.engines.tessdata import DEFAULT_VARIANT
from folioscan.workers.engines.vlm.models import MODELS  # the VLMs' facts: one module, standard library only


class TesseractOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["tesseract"] = "tesseract"
    lang: str = "eng"  # several at once as Tesseract spells it: eng+deu
    psm: int = 3  # fully automatic page segmentation
    variant: Literal["fast", "standard"] = DEFAULT_VARIANT  # which published language data (engines/tessdata.py)
    tessdata: Optional[str] = None  # a folder of .traineddata files, used as it is (overrides `variant`)


class RapidOcrOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["rapidocr"] = "rapidocr"
    use_angle_cls: bool = False
    threads: int = 1


class VlmOptions(BaseModel):
    """A vision-language OCR model read at a vision-token budget (see workers/engines/vlm)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal[tuple(MODELS)] = "deepseek-ocr-2"  # type: ignore[valid-type]
    model: str = ""  # local directory (or hub id where the hub is reachable)
    backend: Literal["transformers", "vllm"] = "transformers"
    budget: str = "adaptive"  # a budget name of the model (vlm/models.py), or "adaptive"
    target_compression: float = 10.0  # adaptive: text tokens per vision token to stay under
    escalate_below: float = 0.80  # re-read at the next budget when page confidence is below this
    max_attempts: int = 3
    batch_size: int = 8
    # vision-encoder micro-batch, in 1024-px views (a 768-px tile counts 0.5625): default measured
    # on the GPU at load (transformers_backend.py), 2 on the CPU
    vision_batch: Optional[float] = Field(None, gt=0)
    batching: Literal["length", "input"] = "length"  # generate batches by expected output length, or in input order
    device: str = "auto"
    dtype: str = "auto"  # bf16 on GPU, fp32 on CPU
    no_repeat_ngram: int = 20
    no_repeat_window: int = 90
    max_new_tokens: Optional[int] = None  # default: derived from the budget


EngineOptions = Annotated[Union[TesseractOptions, RapidOcrOptions, VlmOptions], Field(discriminator="kind")]


VLM_KINDS: tuple[str, ...] = get_args(VlmOptions.model_fields["kind"].annotation)


def engine_names() -> list[str]:
    return ["tesseract", "rapidocr", *VLM_KINDS]


def preflight(options) -> None:
    """What every worker would otherwise find out by failing, checked once on the driver before any
    work: the Tesseract language data is installed (else LanguageDataError, exit 2)."""
    if options.kind == "tesseract":
        from folioscan.workers.engines.tessdata import find_tessdata

        find_tessdata(options.lang, options.variant, options.tessdata)


def build_engine(options):
    """Every engine is built here, so the run record's `engine_loads` counts what was really built."""
    engine = _construct(options)
    counters.add("engine_loads")
    return engine


def _construct(options):
    if options.kind == "tesseract":
        from folioscan.workers.engines.tesseract import TesseractEngine

        return TesseractEngine(options.lang, options.psm, options.tessdata, options.variant)
    if options.kind == "rapidocr":
        from folioscan.workers.engines.rapidocr import RapidOcrEngine

        return RapidOcrEngine(options.use_angle_cls, options.threads)
    from folioscan.workers.engines.vlm.engine import VlmEngine

    return VlmEngine(options)
