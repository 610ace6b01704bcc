"""Engines by name. Options are one pydantic model per engine, told apart by `kind`;
an engine's module is imported only when that engine is built."""
from __future__ import annotations

import json
import os
import re
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


class BoxOptions(BaseModel):
    """Word boxes for an engine that reads text without locating it (docs/vlm.md, "Word boxes")."""

    model_config = ConfigDict(extra="forbid")
    # none: the page text without boxes (box_level none); tesseract: Tesseract also reads the cleaned
    # page in the page stage (CPU) and the engine's words are aligned to its located words
    # (engines/align.py, workers/boxes.py), so the exports carry them at measured positions
    boxes: Literal["none", "tesseract"] = "none"
    # the Tesseract read that locates the words (language data, segmentation mode)
    boxes_tesseract: TesseractOptions = Field(default_factory=TesseractOptions)


class TruthOptions(BoxOptions):
    """Test and benchmark use only: plays a text-only engine by returning each page's ground-truth
    text (engines/truth.py), so the word-box alignment can be measured and tested without a GPU."""

    kind: Literal["truth"] = "truth"
    # CSV: `source` (or `pdf`: the book's file or folder, matched by its name), `page_index` (from
    # 0), `gt` (the text file, relative to the CSV), optional `side`; old_books/manifest.csv is one
    manifest: str = ""


class VlmOptions(BoxOptions):
    """A vision-language OCR model read at a vision-token budget (see workers/engines/vlm)."""


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
    # MoE decoding on a GPU: keep transformers' grouped kernel (default), or let it switch to
    # batched_mm, which copies the chosen experts' weights per token (transformers_backend.py)
    decode_experts: Literal["grouped_mm", "batched_mm"] = "grouped_mm"
    batching: Literal["length", "input"] = "length"  # generate batches by expected output length, or in input order
    device: str = "auto"
    dtype: str = "auto"  # bf16 on GPU, fp32 on CPU
    no_repeat_ngram: int = 20
    no_repeat_window: int = 90
    max_new_tokens: Optional[int] = None  # default: derived from the budget


class SyntheticOptions(BaseModel):
    """Tests and benchmarks only: made-up text of a typical page, read from nothing (engines/synthetic.py)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["synthetic"] = "synthetic"
    delay_s: float = Field(0.0, ge=0)  # seconds each engine call sleeps, standing in for a GPU's time
    words: int = Field(300, ge=1)  # words per page
    seed: int = 0  # the text is a function of the page image and this


EngineOptions = Annotated[Union[TesseractOptions, RapidOcrOptions, VlmOptions, TruthOptions, SyntheticOptions], Field(discriminator="kind")]


VLM_KINDS: tuple[str, ...] = get_args(VlmOptions.model_fields["kind"].annotation)


def engine_names() -> list[str]:
    return ["tesseract", "rapidocr", *VLM_KINDS, "truth", "synthetic"]


class EngineError(RuntimeError):
    """An engine that cannot be built as configured: a run-level configuration error (exit 2), never
    a book's error row. The message is one line and says what to change."""


def preflight(options) -> None:
    """What every worker would otherwise find out by failing, checked once on the driver before any
    work: the Tesseract language data is installed (else LanguageDataError), a VLM's model is a
    checkpoint of that model (else EngineError); both exit 2. RapidOCR and the synthetic engine
    need no files."""
    if options.kind == "tesseract":
        from folioscan.workers.engines.tessdata import find_tessdata

        find_tessdata(options.lang, options.variant, options.tessdata)
    elif options.kind in VLM_KINDS:
        check_vlm_model(options.kind, options.model)
    elif options.kind == "truth":
        from folioscan.workers.engines.truth import load_manifest

        load_manifest(options.manifest)
    if getattr(options, "boxes", "none") == "tesseract":
        preflight(options.boxes_tesseract)


# a Hugging Face model id: owner/name, letters, digits, "-", "_", "."; no "--" or ".." (the hub's own rule)
_HUB_ID = re.compile(r"^(?!.*(--|\.\.))[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


def hub_offline(environ=os.environ) -> bool:
    """Whether a VLM worker will load offline: the backend sets HF_HUB_OFFLINE=1 unless it is set
    already or FOLIOSCAN_ALLOW_HUB=1 (transformers_backend.py)."""
    value = environ.get("HF_HUB_OFFLINE")
    if value is None:
        return environ.get("FOLIOSCAN_ALLOW_HUB") != "1"
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


def _hub_cache(environ=os.environ) -> str:
    if environ.get("HF_HUB_CACHE"):
        return environ["HF_HUB_CACHE"]
    home = environ.get("HF_HOME") or os.path.join(environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    return os.path.join(home, "hub")


def check_vlm_model(kind: str, model: str) -> None:
    """`model` is a local checkpoint of `kind` (its config.json names the model class the registry
    knows for it), or a well-formed hub id that is in the local Hugging Face cache, or, where the
    hub may be reached, at least well-formed. Else EngineError, one line."""
    want = MODELS[kind].model_class
    if not model:
        raise EngineError(f"--engine {kind} needs --model: a local model directory (or a Hugging Face id owner/name)")
    path = os.path.expanduser(model)
    if os.path.isdir(path):
        return _check_model_config(kind, os.path.join(path, "config.json"), path)
    if os.path.exists(path):
        raise EngineError(f"--model {model}: is a file, not a model directory")
    if not _HUB_ID.match(model):
        raise EngineError(f"--model {model}: no such model directory (and not a Hugging Face id owner/name)")
    cache = _hub_cache()
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        raise EngineError(f"--model {model}: no such directory, and huggingface_hub is not installed to look "
                          f"for it as a hub id (pip install 'folioscan[vlm]')") from None
    cached = try_to_load_from_cache(model, "config.json", cache_dir=cache)
    if isinstance(cached, str):
        return _check_model_config(kind, cached, f"{model} (Hugging Face cache)")
    if hub_offline():
        raise EngineError(f"--model {model}: no such directory, and not in the Hugging Face cache {cache} while the "
                          f"hub is off (HF_HUB_OFFLINE; FOLIOSCAN_ALLOW_HUB=1 allows it); download it first or give "
                          f"the model directory ({want})")


def _check_model_config(kind: str, config_path: str, where: str) -> None:
    want = MODELS[kind].model_class
    try:
        with open(config_path, "rb") as f:
            config = json.loads(f.read().decode())
    except FileNotFoundError:
        raise EngineError(f"--model {where}: no config.json; not a Hugging Face model directory") from None
    except (OSError, ValueError) as e:
        raise EngineError(f"--model {where}: config.json cannot be read: {e}") from None
    arch = (config.get("architectures") or [None])[0] if isinstance(config, dict) else None
    if arch == want:
        return
    other = next((s.kind for s in MODELS.values() if s.model_class == arch), None)
    hint = f"; that is --engine {other}" if other else ""
    got = arch or (config.get("model_type") if isinstance(config, dict) else None) or "no architectures"
    raise EngineError(f"--model {where}: holds {got}, not a {kind} model ({want}){hint}")


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
    if options.kind == "truth":
        from folioscan.workers.engines.truth import TruthEngine

        return TruthEngine(options.manifest)
    if options.kind == "synthetic":
        from folioscan.workers.engines.synthetic import SyntheticEngine

        return SyntheticEngine(options.delay_s, options.words, options.seed)
    from folioscan.workers.engines.vlm.engine import VlmEngine

    return VlmEngine(options)
