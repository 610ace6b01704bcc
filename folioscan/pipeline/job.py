"""The job driver: list sources, skip what is committed, process shard by shard, commit, summarise."""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from itertools import islice
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
from folioscan.records import SourceDocument

log = logging.getLogger(__name__)


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

    @property
    def pages_per_s(self) -> float:
        return self.pages / self.seconds if self.seconds else 0.0

    @property
    def ok(self) -> bool:
        return self.documents_failed == 0 and self.documents_partial == 0

    def to_dict(self) -> dict:
        return {**asdict(self), "pages_per_s": round(self.pages_per_s, 3)}


def _shards(docs: Iterator[SourceDocument], size: int) -> Iterator[list[SourceDocument]]:
    while shard := list(islice(docs, size)):
        yield shard


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
            if doc.doc_id in committed:
                summary.documents_skipped += 1
            else:
                yield doc

    stages = Stages(in_store, cfg.load_options(), cfg.prep, cfg.engine, cfg.batch_size)
    executor = make_executor(cfg, stages)
    conf_sum = conf_weight = 0.0
    t0 = time.perf_counter()
    with Progress(enabled=cfg.progress) as progress:
        try:
            for shard in _shards(todo(), cfg.shard_docs):
                results = list(executor.process(shard))
                page_rows, doc_rows = assemble_shard(shard, results, cfg.run_id)
                summary.shards.append(writer.commit(page_rows, doc_rows))
                for d in doc_rows:
                    summary.documents += 1
                    summary.documents_failed += d["status"] == "error"
                    summary.documents_partial += d["status"] == "partial"
                    if d["status"] != "ok":
                        log.warning("%s: %s: %s", d["source_uri"], d["status"], d["error"])
                for p in page_rows:
                    summary.pages += 1
                    summary.pages_failed += p["status"] == "error"
                    summary.pages_blank += p["status"] == "blank"
                    if p["confidence"] is not None:
                        weight = max(len(p["text"] or ""), 1)
                        conf_sum += p["confidence"] * weight
                        conf_weight += weight
                progress.update(len(doc_rows), len(page_rows), summary.pages_failed)
        finally:
            executor.close()
    summary.seconds = time.perf_counter() - t0
    summary.mean_confidence = conf_sum / conf_weight if conf_weight else None
    writer.write_run_record({"folioscan": __version__, "config": cfg.model_dump(), "summary": summary.to_dict()})
    return summary
