"""The job driver: list sources, skip what is committed, process shard by shard, commit, summarise."""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Iterator, Optional

from folioscan import __version__
from folioscan.pipeline.assemble import assemble_shard
from folioscan.pipeline.config import JobConfig
from folioscan.pipeline.executors import make_executor
from folioscan.pipeline.output import DatasetWriter
from folioscan.pipeline.progress import Progress
from folioscan.pipeline.sources import iter_documents
from folioscan.pipeline.stages import Stages
from folioscan.pipeline.storage import store_for
from folioscan.records import PageResult, SourceDocument

log = logging.getLogger(__name__)

STAGES = ("load", "clean", "ocr", "write")


@dataclass
class JobSummary:
    run_id: str
    documents: int = 0
    documents_failed: int = 0
    documents_partial: int = 0
    documents_skipped: int = 0  # already committed by an earlier run
    objects_ignored: int = 0  # neither PDF nor page image
    pages: int = 0
    pages_failed: int = 0
    pages_blank: int = 0
    seconds: float = 0.0
    mean_confidence: Optional[float] = None
    orphans_removed: int = 0
    shards: list[str] = field(default_factory=list)
    ocr_actors: int = 0
    engine_loads: int = 0  # engines built, counted inside each OCR actor: one per actor per run
    book_retries: int = 0  # books re-run from their first page after a worker or node was lost
    actors_lost: int = 0
    # worker seconds and pages per stage (load, clean, ocr from the page rows; write on the driver)
    stages: dict[str, dict] = field(default_factory=lambda: {k: {"seconds": 0.0, "pages": 0} for k in STAGES})
    _conf_sum: float = field(default=0.0, repr=False)
    _conf_weight: float = field(default=0.0, repr=False)

    def add(self, page_rows: list[dict], doc_rows: list[dict]) -> None:
        for d in doc_rows:
            self.documents += 1
            self.documents_failed += d["status"] == "error"
            self.documents_partial += d["status"] == "partial"
            if d["status"] != "ok":
                log.warning("%s: %s: %s", d["source_uri"], d["status"], d["error"])
        for p in page_rows:
            for stage, ms in (("load", p["load_ms"]), ("clean", p["prep_ms"]), ("ocr", p["ocr_ms"])):
                if ms:
                    self.stage(stage, ms / 1000, 1)
            self.pages += 1
            self.pages_failed += p["status"] == "error"
            self.pages_blank += p["status"] == "blank"
            if p["confidence"] is not None:
                weight = max(len(p["text"] or ""), 1)
                self._conf_sum += p["confidence"] * weight
                self._conf_weight += weight
        self.mean_confidence = self._conf_sum / self._conf_weight if self._conf_weight else None

    def stage(self, name: str, seconds: float, pages: int) -> None:
        self.stages[name]["seconds"] = round(self.stages[name]["seconds"] + seconds, 3)
        self.stages[name]["pages"] += pages

    @property
    def pages_per_s(self) -> float:
        return self.pages / self.seconds if self.seconds else 0.0

    @property
    def ok(self) -> bool:
        return self.documents_failed == 0 and self.documents_partial == 0

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        return {**out, "pages_per_s": round(self.pages_per_s, 3)}


class _Shard:
    """Books of one Parquet part, in listing order; committed once closed (full, or the listing
    ended) and every book in it is back."""

    def __init__(self):
        self.docs: list[SourceDocument] = []
        self.results: dict[str, list[PageResult]] = {}
        self.closed = False

    @property
    def complete(self) -> bool:
        return self.closed and len(self.results) == len(self.docs)


def _stream(executor, docs: Iterator[SourceDocument], shard_docs: int, open_shards: int
            ) -> Iterator[tuple[list[SourceDocument], list[PageResult]]]:
    """Feed books to the executor as it has room (the listing is read lazily) and yield each
    shard as soon as its books are complete. At most `open_shards` shards are open at once, so
    a long book holds back only the results of its own shard's neighbours."""
    shards: list[_Shard] = []
    shard_of: dict[str, _Shard] = {}
    listing_done = False
    while True:
        while not listing_done and executor.has_room():
            current = shards[-1] if shards and not shards[-1].closed else None
            if current is None and len(shards) >= open_shards:
                break
            doc = next(docs, None)
            if doc is None:
                listing_done = True
                if current is not None:
                    current.closed = True
                break
            if current is None:
                current = _Shard()
                shards.append(current)
            current.docs.append(doc)
            current.closed = len(current.docs) >= shard_docs
            shard_of[doc.doc_id] = current
            executor.submit(doc)
        for shard in [s for s in shards if s.complete]:
            shards.remove(shard)
            yield shard.docs, [r for d in shard.docs for r in shard.results[d.doc_id]]
        if not executor.busy():
            if listing_done and not shards:
                return
            if listing_done or not executor.has_room():  # nothing in flight can complete these
                raise RuntimeError(f"{len(shards)} shards open with no book in flight")
            continue
        for doc, results in executor.poll():
            shard_of.pop(doc.doc_id).results[doc.doc_id] = results


def run_job(cfg: JobConfig) -> JobSummary:
    summary = JobSummary(cfg.run_id)
    in_store = store_for(cfg.source, cfg.endpoint_url, cfg.region)
    out_store = store_for(cfg.output, cfg.endpoint_url, cfg.region)
    out_store.check_writable(cfg.output)  # fail before any work when the output is unusable
    writer = DatasetWriter(out_store, cfg.output, cfg.run_id)
    summary.orphans_removed = writer.recover()
    committed = writer.committed_doc_ids()

    def ignored(_uri: str) -> None:
        summary.objects_ignored += 1

    def todo() -> Iterator[SourceDocument]:
        for doc in iter_documents(in_store, cfg.source, on_skip=ignored):
            if doc.doc_id in committed:  # done by an earlier run, or listed twice in this one
                summary.documents_skipped += 1
            else:
                committed.add(doc.doc_id)
                yield doc

    stages = Stages(in_store, cfg.load_options(), cfg.prep, cfg.engine, cfg.pages_per_call, cfg.flip_retry_below,
                    cfg.max_pages_per_book)
    executor = make_executor(cfg, stages)
    t0 = time.perf_counter()
    with Progress(enabled=cfg.progress) as progress:
        try:
            for docs, results in _stream(executor, todo(), cfg.shard_docs, cfg.shards_in_flight):
                page_rows, doc_rows = assemble_shard(docs, results, cfg.run_id)
                t1 = time.perf_counter()
                summary.shards.append(writer.commit(page_rows, doc_rows))
                summary.stage("write", time.perf_counter() - t1, len(page_rows))
                summary.add(page_rows, doc_rows)
                progress.update(len(doc_rows), len(page_rows), summary.pages_failed)
            for key, value in executor.stats().items():
                setattr(summary, key, value)
        finally:
            executor.close()
    summary.seconds = time.perf_counter() - t0
    writer.write_run_record({"folioscan": __version__, "config": cfg.model_dump(), "summary": summary.to_dict()})
    return summary
