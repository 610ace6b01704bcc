"""Typed records passed between stages.

Stages hand these to each other; only the output writer turns them into Arrow rows.
Everything here pickles cheaply so Ray can ship it between workers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

# page_index used for a work item that stands for a whole document that failed to open
DOCUMENT_LEVEL = -1


@dataclass(frozen=True)
class SourceObject:
    """One object (file or S3 key) as seen in a listing."""

    uri: str
    size: int
    fingerprint: str  # content-derived: "etag:..." for S3, "sha256:..." for local files


@dataclass(frozen=True)
class SourceDocument:
    """A book: one PDF, or a folder of page images (in natural file order)."""

    doc_id: str
    uri: str
    kind: str  # "pdf" | "images"
    members: tuple[SourceObject, ...]
    fingerprint: str  # of the content: the PDF's own, or a hash over the image files' fingerprints

    @property
    def size(self) -> int:
        return sum(m.size for m in self.members)


@dataclass
class PrepInfo:
    """What the cleaning and segmentation steps decided for one page."""

    orientation: int = 0  # degrees clockwise the page was rotated to make it upright
    deskew_angle: float = 0.0  # measured tilt of the text, degrees counter-clockwise; undone when applied
    crop_box: Optional[tuple[int, int, int, int]] = None  # x0, y0, x1, y1 in the source image
    illumination: str = "none"
    is_blank: bool = False
    ink_ratio: float = 0.0
    n_columns: int = 0
    n_lines: int = 0
    blocks: list[tuple[int, int, int, int]] = field(default_factory=list)
    text_density: float = 0.0  # estimated characters per megapixel of the cleaned page
    est_chars: int = 0  # estimated characters on the page
    prep_ms: float = 0.0


@dataclass
class PageWork:
    """A page image on its way to the OCR engine (or an error that stands in its place)."""

    doc_id: str
    source_uri: str
    page_index: int  # index in the source document; DOCUMENT_LEVEL for whole-document errors
    page_count: int  # pages in the source document (0 when it could not be opened)
    image: Optional[np.ndarray] = None  # uint8 grayscale, H x W
    dpi: float = 0.0
    image_origin: str = ""  # "embedded" | "rendered" | "image-file"
    side: Optional[str] = None  # "left" | "right" when a two-page spread was split
    parts: int = 1  # how many output pages this source page became (2 for a split spread)
    source_width: int = 0
    source_height: int = 0
    width: int = 0  # of the cleaned image handed to the engine
    height: int = 0
    prep: PrepInfo = field(default_factory=PrepInfo)
    load_ms: float = 0.0
    error: Optional[str] = None
    error_kind: Optional[str] = None  # failures.TRANSIENT | PERMANENT (None with an error: permanent)
    attempts_made: int = 1  # tries of this page's object read or OCR call, the most of either


@dataclass
class OcrLine:
    text: str
    confidence: float
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the cleaned page image


@dataclass
class OcrAttempt:
    """One read of a page; VLM engines may read a page several times at rising budgets."""

    budget: str
    vision_tokens: int = 0
    output_tokens: int = 0
    confidence: Optional[float] = None
    repetition: bool = False
    hit_token_cap: bool = False
    reason: str = ""  # why this attempt was made ("initial", "low-confidence", "repetition", ...)
    ms: float = 0.0
    accepted: bool = False  # the attempt whose text the page keeps


@dataclass
class OcrResult:
    """What an engine returns for one image. Engines know nothing of pages or documents."""

    text: str
    lines: list[OcrLine]
    confidence: Optional[float]  # page level, 0..1
    confidence_min: Optional[float] = None
    attempts: list[OcrAttempt] = field(default_factory=list)
    error: Optional[str] = None


@dataclass
class PageResult:
    """A finished page: the work item plus what the engine read."""

    work: PageWork
    status: str  # "ok" | "blank" | "error"
    ocr: Optional[OcrResult]
    engine: str
    engine_version: str
    ocr_ms: float = 0.0
    error: Optional[str] = None
    error_kind: Optional[str] = None  # failures.TRANSIENT | PERMANENT
