"""The job's configuration: one pydantic model, built from the CLI or a JSON/YAML file."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Literal, Optional

from pydantic import BaseModel, Field

from folioscan.workers.engines.registry import EngineOptions, TesseractOptions
from folioscan.workers.load import LoadOptions
from folioscan.workers.prep import PrepOptions


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


class JobConfig(BaseModel):
    source: str
    output: str
    endpoint_url: Optional[str] = None  # S3-compatible endpoint; credentials never live here
    region: Optional[str] = None
    executor: Literal["local", "ray"] = "ray"
    ray_address: Optional[str] = None  # None: start Ray on this machine
    num_cpus: Optional[int] = None  # local Ray only
    object_store_mb: int = Field(512, ge=100)  # local Ray only: pages in flight are bounded, so is the store
    ocr_workers: Optional[int] = None  # engine actors (default: one per CPU, or per GPU for VLMs)
    shard_docs: int = Field(16, ge=1)  # documents per committed Parquet file pair
    shards_in_flight: int = Field(4, ge=1)  # shards open at once (books handed out, not yet committed)
    max_pages_per_book: Optional[int] = Field(None, ge=1)  # pages past this are not read; the book says so
    batch_size: Optional[int] = None  # pages per engine call; default 4, or the VLM's own batch size
    dpi: float = 300.0
    max_page_megapixels: float = 200.0
    max_object_mb: float = 4096.0
    prefer_embedded: bool = True
    flip_retry_below: Optional[float] = 0.6  # re-read a page turned 180 degrees when its confidence is under this
    engine: EngineOptions = Field(default_factory=TesseractOptions)
    prep: PrepOptions = Field(default_factory=PrepOptions)
    run_id: str = Field(default_factory=new_run_id)
    progress: bool = True

    @property
    def pages_per_call(self) -> int:
        return self.batch_size or getattr(self.engine, "batch_size", 4)

    def load_options(self) -> LoadOptions:
        return LoadOptions(dpi=self.dpi, max_megapixels=self.max_page_megapixels,
                           prefer_embedded=self.prefer_embedded, max_object_mb=self.max_object_mb)
