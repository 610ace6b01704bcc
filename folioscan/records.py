"""Typed records passed between stages.

Stages hand these to each other; only the output writer turns them into Arrow rows.
Everything here pickles cheaply so Ray can ship it between workers. `page_number` and `page_label`
say a page_index the way people count pages (from 1).
"""
from __future__ import annotations

import re

import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

# page_index used for a work item that stands for a whole document that failed to open
DOCUMENT_LEVEL = -1


def book_stem(uri: str) -> str:
    """A book's own name, from its source: the PDF's file name without `.pdf`, or the image folder's
    name (what `folioscan eval`'s truth folders, the METS title and export file names start from)."""
    name = uri.rstrip("/").replace("\\", "/").rsplit("/", 1)[-1]
    return re.sub(r"\.pdf$", "", name, flags=re.IGNORECASE) or name or uri


def page_number(page_index: int) -> int:
    """The page as people count it: the first page of a book is page 1. `page_index` (PageWork's
    field, the Parquet column) counts from 0; everything a person reads (`show`, the report, error
    messages, the export file names) says `page_number`, and where the index itself is shown it is
    called page_index."""
    return page_index + 1


def page_label(page_index: int, side: Optional[str] = None) -> str:
    """"page 3", or "page 3 (left)" for a half of a split spread: what `show` and the report print."""
    return f"page {page_number(page_index)}" + (f" ({side})" if side else "")


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
    metadata: Optional[str] = None  # JSON object of a CSV manifest's columns for the book (documents.metadata)

    @property
    def size(self) -> int:
        return sum(m.size for m in self.members)


@dataclass
class PrepInfo:
    """What the cleaning and segmentation steps decided for one page."""

    orientation: int = 0  # degrees clockwise the page was rotated to make it upright
    orientation_confidence: Optional[float] = None  # 0..1; None when the step did not run
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
    x_height: float = 0.0  # median x-height of the text, pixels of the page as scanned (0: no text line)
    curvature: float = 0.0  # how far the text lines bend from straight, in x-heights (prep/dewarp.py)
    dewarped: bool = False
    upscale: float = 1.0  # factor the page was enlarged by before OCR because its text was too small
    prep_ms: float = 0.0
    # each pixel-moving step's transform, loaded image -> cleaned image (workers/prep/transform.py)
    transforms: list = field(default_factory=list)


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
    # 2x3 matrix (a, b, tx, c, d, ty): loaded-image pixels -> PDF points of the source page
    # (top-left origin, unrotated page space); None for image files
    pdf_transform: Optional[tuple[float, ...]] = None
    width: int = 0  # of the cleaned image handed to the engine
    height: int = 0
    prep: PrepInfo = field(default_factory=PrepInfo)
    load_ms: float = 0.0
    error: Optional[str] = None
    error_kind: Optional[str] = None  # failures.TRANSIENT | PERMANENT (None with an error: permanent)
    attempts_made: int = 1  # tries of this page's object read or OCR call, the most of either
    box_read: Optional["BoxRead"] = None  # `boxes: tesseract`: Tesseract's read of the cleaned page (workers/boxes.py)
    content_sha256: Optional[str] = None  # of the book's source bytes, once read (images: on the book's last page)
    duplicate_of: Optional[str] = None  # DOCUMENT_LEVEL only: the book's bytes are those of this doc_id, not read again
    content_claim: Optional[str] = None  # generation of the claim this run's loader took on the book's bytes (pipeline/duplicates.py)


@dataclass
class OcrWord:
    text: str
    confidence: float
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the cleaned page image
    box_source: Optional[tuple[int, int, int, int]] = None  # the same in the loaded page image (set by the OCR stage)


@dataclass
class OcrLine:
    text: str
    confidence: float
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the cleaned page image; () when the engine gives none
    words: list[OcrWord] = field(default_factory=list)  # empty when the engine does not locate words
    box_source: Optional[tuple[int, int, int, int]] = None  # the same in the loaded page image (set by the OCR stage)
    block: int = 0  # the engine's text block and paragraph this line belongs to, numbered from 0 per page
    paragraph: int = 0


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
    max_new_tokens: int = 0  # the output cap this read ran under (VLM engines)
    cap_clamped: bool = False  # that cap was reduced to fit the model's context with the page's vision tokens


@dataclass
class BoxRead:
    """Tesseract's read of a page a text-only engine reads, made for its word boxes (workers/boxes.py)."""

    result: "OcrResult"
    engine: str  # "tesseract <version>"
    ms: float = 0.0
    orientation: int = 0  # of the page image it read; the OCR stage's 180-degree re-read makes it stale


@dataclass
class BoxAlignment:
    """How a text-only engine's words were placed on Tesseract's (engines/align.py): counts of the
    engine's words by what they got."""

    engine: str  # the engine that located the words
    words: int = 0  # on a measured word box
    lines: int = 0  # on their line's box only
    none: int = 0  # without a box
    error: Optional[str] = None  # the box read failed: the page keeps its text without boxes
    tesseract_ms: float = 0.0
    align_ms: float = 0.0


@dataclass
class OcrResult:
    """What an engine returns for one image. Engines know nothing of pages or documents."""

    text: str
    lines: list[OcrLine]
    confidence: Optional[float]  # page level, 0..1
    confidence_min: Optional[float] = None
    confidence_raw: Optional[float] = None  # the engine's own page confidence, before calibration
    attempts: list[OcrAttempt] = field(default_factory=list)
    error: Optional[str] = None
    box_alignment: Optional[BoxAlignment] = None  # `boxes: tesseract` only


@dataclass
class Reading:
    """One engine's reading of a routed page (pipeline/config.py RouteOptions, workers/route.py):
    the page row keeps both, the chosen one as its own text."""

    engine: str
    engine_version: str
    status: str  # "ok" | "error"
    confidence: Optional[float] = None
    confidence_raw: Optional[float] = None
    chars: int = 0  # of its text
    chosen: bool = False
    reason: Optional[str] = None  # the second reading: why the page fell back to the first (None: kept)


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
    completed_at: float = field(default_factory=time.time)  # epoch seconds, the worker's clock: when the result was made
    # routing to a second engine (workers/route.py): why the first engine's reading sends the page on
    # (None: it stays); the page keeps its cleaned image (`work.image`) until the second engine has read it
    route_reason: Optional[str] = None
    readings: list[Reading] = field(default_factory=list)  # both readings once a routed page is settled
    unchosen_text: Optional[str] = None  # the text of the reading not kept
