"""The job's configuration: one pydantic model, built from defaults, a config file, the
environment and the flags actually given, in that order of precedence (see `settings.py`)."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from folioscan.retry import RetryPolicy
from folioscan.workers.engines.registry import EngineOptions, TesseractOptions
from folioscan.workers.engines.vlm.schedule import POOL_BATCHES
from folioscan.workers.load import LoadOptions
from folioscan.workers.prep import PrepOptions


def _pages_per_call(engine) -> int:
    vlm_batch = getattr(engine, "batch_size", None)
    return vlm_batch * POOL_BATCHES if vlm_batch else 4


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


class RetryOptions(BaseModel):
    """Transient failures (throttling, 5xx, timeouts, resets) of one object read or one page's
    OCR call are retried with exponential backoff and full jitter."""

    model_config = ConfigDict(extra="forbid")
    attempts: int = Field(4, ge=1, description="tries per unit of work, the first included")
    base_delay_s: float = Field(0.5, ge=0, description="first backoff; doubles per retry")
    max_delay_s: float = Field(30.0, ge=0)


class RouteOptions(BaseModel):
    """Per-page routing to a second engine (docs/routing.md, workers/route.py): every page is read by
    `engine`; a page whose reading is doubtful is read again by `then` on a second pool of workers
    (GPU workers when the cluster has GPUs), and the page row keeps both readings."""

    model_config = ConfigDict(extra="forbid")
    then: Optional[EngineOptions] = Field(None, description=(
        "the second engine, a block like `engine` (kind and its options); None: no routing"))
    below: float = Field(0.8, ge=0, le=1, description=(
        "route a page whose `confidence` (calibrated for Tesseract: P(CER <= 3%)) is under this. 0.8: on "
        "old_books it routes 9.6% of the scans and 44% of scans plus degradations, and a higher threshold "
        "keeps no fewer bad pages (2.8% at 0.8 and 0.9) while routing more (BENCHMARKS.md, routing table)"))
    repetition_above: Optional[float] = Field(0.7, ge=0, le=1, description=(
        "also route a page whose text repeats itself (share of words in a repeated 5-gram, text/signals.py) "
        "over this, or whose engine says its read looped: a loop is near 1; the old_books pages stay under 0.18, "
        "but Dickens' 'It was the best of times, it was the worst of times...' paragraph reaches 0.64. "
        "The reverse guard uses it too. None: off"))
    empty: bool = Field(True, description="also route a page that is not blank but whose first reading has no text")
    lexicon_below: Optional[float] = Field(0.5, ge=0, le=1, description=(
        "also route a page with at least 20 words whose share of words in the language's word list is under "
        "this fixed floor (the 178 old_books truth pages: 0.87 and up). Per page, not against the book's share: "
        "that one is known only at the book's end, after its pages have left the workers. None: off"))
    errors: bool = Field(True, description="also route a page the first engine failed on (its image was cleaned)")
    min_chars_share: float = Field(0.25, ge=0, le=1, description=(
        "reverse guard: a second reading with fewer characters than this share of the segmentation's "
        "estimate (`est_chars`) falls back to the first reading (old_books truth: 0.39 to 1.53 of the estimate); "
        "so do second readings that loop, hit their token cap, or fail"))
    workers: Optional[int] = Field(None, ge=1, description=(
        "second-engine actors (Ray): default one per GPU when it runs on GPUs, else 1 (taken from the first pool's default)"))
    batch_size: Optional[int] = Field(None, ge=1, description=(
        "pages per second-engine call; default 4, or POOL_BATCHES VLM batches"))


class JobConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str
    output: str
    endpoint_url: Optional[str] = None  # S3-compatible endpoint; credentials never live here
    region: Optional[str] = None
    executor: Literal["local", "ray"] = "ray"
    ray_address: Optional[str] = None  # None: start Ray on this machine
    num_cpus: Optional[int] = Field(None, ge=1)  # local Ray only
    object_store_mb: int = Field(512, ge=100)  # local Ray only: pages in flight are bounded, so is the store
    ocr_workers: Optional[int] = Field(None, ge=1)  # engine actors (default: one per CPU, or per GPU for VLMs)
    actor_replacements: Optional[int] = Field(None, ge=0, description=(
        "Ray executor: OCR actors lost (their process or node died) that are replaced by a new one in a run, "
        "so the pool keeps its size; past this the run goes on with fewer (the last actor is always "
        "replaced). Default: the pool size. The summary counts `actors_lost` and `actors_replaced`"))
    shard_docs: int = Field(16, ge=1)  # documents per committed Parquet file pair
    shards_in_flight: int = Field(4, ge=1)  # shards open at once (books handed out, not yet committed)
    spill_dir: Optional[str] = Field(None, description=(
        "local folder for the page rows of the books in flight (one Arrow file per book, deleted once the book "
        "is committed; pipeline/spill.py), so the driver's memory does not grow with a book's length. "
        "None: the system's temporary folder. Give a disk, not a memory-backed tmpfs"))
    max_pages_per_book: Optional[int] = Field(None, ge=1)  # pages past this are not read; the book says so
    batch_size: Optional[int] = Field(None, ge=1)  # pages per engine call; default 4, or POOL_BATCHES VLM batches (sorted by length)
    dpi: float = Field(300.0, gt=0)
    max_page_megapixels: float = Field(200.0, gt=0)
    max_object_mb: float = Field(4096.0, gt=0)
    prefer_embedded: bool = True
    flip_retry_below: Optional[float] = Field(0.6, ge=0, le=1)  # re-read a page turned 180 degrees under this confidence
    retry_failed: bool = False  # also retry books committed with a permanent error (transient ones always are)
    partition: Optional[str] = Field(None, description=(
        "K/N (K from 0): this driver takes only the books whose share, sha256 of the source URI mod N, is K "
        "(pipeline/partition.py); N drivers given 0/N .. N-1/N share one source. Claims still keep every book "
        "to one driver when partitions overlap. None: the whole listing"))
    steal: bool = Field(False, description=(
        "with partition: once its own share is listed through, the driver lists the source again and takes "
        "other shares' books that no driver has claimed or committed (a late, slow or lost driver's share)"))
    dedupe: bool = Field(True, description=(
        "a book whose source bytes (sha256, hashed as they are read) equal a book already committed or in "
        "flight is not OCR'd again: its documents row says status duplicate and duplicate_of (docs/duplicates.md)"))
    retry: RetryOptions = Field(default_factory=RetryOptions)
    lease_ttl_s: float = Field(120.0, gt=0)  # a driver that stops renewing its leases loses them after this
    grace_s: float = Field(25.0, ge=0, description=(
        "after SIGTERM or SIGINT: seconds the books in flight get to finish and be committed before the "
        "run stops without them (their claims released, the run record written, exit 143 or 130); 25 s "
        "fits inside Kubernetes' default 30 s terminationGracePeriodSeconds (deploy/ sets it to 30)"))
    engine: EngineOptions = Field(default_factory=TesseractOptions)
    route: RouteOptions = Field(default_factory=RouteOptions)
    prep: PrepOptions = Field(default_factory=PrepOptions)
    run_id: str = Field(default_factory=new_run_id, pattern=r"^[A-Za-z0-9_.-]+$")
    also: list[str] = []  # export formats written next to the Parquet as each shard commits (OUTPUT/<format>/)
    progress: bool = Field(True, description="progress on stderr (pipeline/progress.py); --quiet turns it off")
    progress_every_s: float = Field(30.0, gt=0, description=(
        "without a terminal (a pipe, a log file, a pod): seconds between plain progress lines on stderr; "
        "a terminal gets one live line instead"))
    base_url: Optional[str] = Field(None, description=(
        "where the exports will be served from (https://host/path/): METS and IIIF write their links to "
        "page images, ALTO, hOCR and PDF under it; default: paths relative to the export file"))

    @field_validator("also")
    @classmethod
    def _known_formats(cls, formats: list[str]) -> list[str]:
        from folioscan.export import FORMATS

        unknown = [f for f in formats if f not in FORMATS]
        if unknown:
            raise ValueError(f"unknown export format(s) {unknown}; known: {', '.join(FORMATS)}")
        from folioscan.export import format_function

        for f in formats:
            format_function(f)  # one that cannot run here (pdfa without Ghostscript) is refused before any work
        return formats

    @field_validator("partition")
    @classmethod
    def _partition_form(cls, value: Optional[str]) -> Optional[str]:
        if value is not None:
            from folioscan.pipeline.partition import parse_partition

            return str(parse_partition(value))
        return value

    @model_validator(mode="after")
    def _steal_needs_partition(self) -> "JobConfig":
        if self.steal and self.partition is None:
            raise ValueError("steal takes other shares' books once this driver's share is done: it needs --partition K/N")
        return self

    @model_validator(mode="after")
    def _route_needs_then(self) -> "JobConfig":
        given = self.route.model_fields_set - {"then"}
        if self.route.then is None and given:
            raise ValueError(f"route: {', '.join(sorted(given))} given without a second engine: --then ENGINE (route.then)")
        return self

    @property
    def pages_per_call(self) -> int:
        return self.batch_size or _pages_per_call(self.engine)

    @property
    def then_pages_per_call(self) -> int:
        return self.route.batch_size or _pages_per_call(self.route.then)

    def load_options(self) -> LoadOptions:
        return LoadOptions(dpi=self.dpi, max_megapixels=self.max_page_megapixels,
                           prefer_embedded=self.prefer_embedded, max_object_mb=self.max_object_mb,
                           retry=self.retry_policy())

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(**self.retry.model_dump())
