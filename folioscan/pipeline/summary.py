"""The run's summary: counts of books and pages by outcome, seconds per stage, the engine
counters the executor reports, and how the run ended. Printed by the CLI, written as the run
record's `summary` and as `--summary-json`."""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Iterable, Optional

import pyarrow as pa
import pyarrow.compute as pc

log = logging.getLogger("folioscan.pipeline.job")  # the run's own log: the summary's warnings read as the job's

STAGES = ("load", "clean", "ocr", "write")
# the pages columns `JobSummary.add` reads (the driver reads only these back from its spill)
PAGE_COLUMNS = ("load_ms", "prep_ms", "ocr_ms", "status", "attempts", "completed_at", "box_alignment", "confidence", "text",
                "routed", "readings")


@dataclass
class JobSummary:
    run_id: str
    status: str = "running"  # then "finished", "interrupted" (SIGTERM/SIGINT) or "failed" (the output cannot be written)
    stopped_by: Optional[str] = None  # "SIGTERM" or "SIGINT" when interrupted
    documents_abandoned: int = 0  # handed out, not committed when the run stopped (grace over, second signal, failed write)
    error: Optional[str] = None  # the write that failed, when status is "failed"
    record_written: bool = True  # False when the run record itself could not be written
    documents: int = 0
    documents_failed: int = 0
    documents_partial: int = 0
    documents_duplicate: int = 0  # committed as a copy of bytes read as another book (docs/duplicates.md)
    documents_skipped: int = 0  # already committed by an earlier run
    documents_retried: int = 0  # committed before with an error, processed again
    documents_replaced: int = 0  # new content under a committed name, processed again
    documents_carried_failed: int = 0  # skipped, and still in error from an earlier run (permanent)
    documents_claimed_elsewhere: int = 0  # claimed, or just committed, by another live driver
    documents_other_shares: int = 0  # listed, in another driver's share (--partition K/N)
    documents_stolen: int = 0  # of another share, taken once this driver's own was done (--steal)
    documents_superseded: int = 0  # older rows removed from the output because a book was redone
    objects_ignored: int = 0  # neither PDF nor page image
    pages: int = 0
    pages_failed: int = 0
    pages_blank: int = 0
    pages_read_alone: int = 0  # re-read one at a time after their batch failed (attempt reason "batch-failed:...")
    pages_boxes_failed: int = 0  # `boxes: tesseract`: read pages left without word boxes (box_alignment.error)
    # routing (route.then, docs/routing.md): pages committed that the first engine routed to the second;
    # of them, kept with the second engine's reading, and fallen back to the first by the reverse guard
    pages_routed: int = 0
    pages_routed_kept: int = 0
    pages_routed_fallback: int = 0
    seconds: float = 0.0  # the whole run, its last commit and clean-up included
    # pages/s is pages / pages_seconds: wall seconds from the run's start (`started_at`, once the executor
    # is up) to the completion of its last page (`last_page_at`, the latest `completed_at` of its page
    # rows); the report computes its figure the same way from the pages table
    started_at: Optional[str] = None
    last_page_at: Optional[str] = None
    pages_seconds: float = 0.0
    progress: dict = field(default_factory=dict)  # the progress line's last numbers (pipeline/progress.py)
    mean_confidence: Optional[float] = None
    orphans_removed: int = 0
    export_errors: list[str] = field(default_factory=list)  # --also: books a format could not be written for
    export_warnings: list[str] = field(default_factory=list)  # --also: books written not whole (a METS pointing at files not there)
    shards: list[str] = field(default_factory=list)
    ocr_actors: int = 0  # the pool's size: OCR workers the run keeps (replacements of lost ones not counted)
    engine_loads: int = 0  # engines really built, in every OCR worker: one per worker unless one was rebuilt
    oom_backoffs: int = 0  # VLM generate batches halved after running out of memory, over all workers
    # the generate batch size that fitted after out-of-memory back-off (smallest over workers);
    # None when no back-off happened
    vlm_batch_size: Optional[int] = None
    book_retries: int = 0  # books re-run from their first page after a worker or node was lost
    actors_lost: int = 0  # OCR actors whose process or node died
    actors_replaced: int = 0  # of those, replaced by a new actor (up to the config's actor_replacements)
    # routing: the second engine's pool, as the top-level figures are the first's (ocr_actors, engine_loads,
    # oom_backoffs, vlm_batch_size, actors_lost, actors_replaced; Ray: pages_routed, sent to it this run); {} without
    then_pool: dict = field(default_factory=dict)
    # how the committed state was read at the start and written (pipeline/compacted.py): the base, deltas,
    # parts read directly, seconds, and any index object found damaged (read from the parts instead)
    committed_index: dict = field(default_factory=dict)
    stale_live_removed: int = 0  # other runs' `_live/<run>.json` records left expired (a killed driver), removed
    # worker seconds and pages per stage (load, clean, ocr from the page rows; write on the driver)
    stages: dict[str, dict] = field(default_factory=lambda: {k: {"seconds": 0.0, "pages": 0} for k in STAGES})
    _in_flight: int = field(default=0, repr=False)  # books handed to the executor and not yet committed
    _conf_sum: float = field(default=0.0, repr=False)
    _conf_weight: float = field(default=0.0, repr=False)
    _started: Optional[datetime] = field(default=None, repr=False)
    _last_page: Optional[datetime] = field(default=None, repr=False)

    def start(self) -> None:
        self._started = datetime.now(timezone.utc)
        self.started_at = self._started.isoformat()

    def add(self, page_tables: Iterable[pa.Table], doc_rows: list[dict]) -> None:
        """Count a committed shard: its documents rows and its pages rows (Arrow tables of PAGE_COLUMNS
        at least: counted column by column, not row by row, as one driver counts every page of a run)."""
        for d in doc_rows:
            self.documents += 1
            self.documents_failed += d["status"] == "error"
            self.documents_partial += d["status"] == "partial"
            self.documents_duplicate += d["status"] == "duplicate"
            if d["status"] not in ("ok", "duplicate"):
                log.warning("%s: %s: %s", d["source_uri"], d["status"], d["error"])
        for t in page_tables:
            self._add_pages(t)
        self.mean_confidence = self._conf_sum / self._conf_weight if self._conf_weight else None

    def _add_pages(self, t: pa.Table) -> None:
        if not t.num_rows:
            return
        for stage, col in (("load", "load_ms"), ("clean", "prep_ms"), ("ocr", "ocr_ms")):
            ms = pc.drop_null(t.column(col))
            ms = ms.filter(pc.not_equal(ms, 0))
            if len(ms):
                self.stage(stage, pc.sum(ms).as_py() / 1000, len(ms))
        status = t.column("status")
        self.pages += t.num_rows
        self.pages_failed += _count(pc.equal(status, "error"))
        self.pages_blank += _count(pc.equal(status, "blank"))
        attempts = t.column("attempts").combine_chunks()
        alone = pc.starts_with(pc.struct_field(pc.list_flatten(attempts), "reason"), "batch-failed:")
        self.pages_read_alone += len(pc.unique(pc.filter(pc.list_parent_indices(attempts), alone)))
        last = pc.max(t.column("completed_at")).as_py()
        if last is not None and (self._last_page is None or last > self._last_page):
            self._last_page = last
            self.last_page_at = last.isoformat()
            if self._started is not None:
                self.pages_seconds = max((last - self._started).total_seconds(), 0.0)
        boxes_error = pc.struct_field(t.column("box_alignment").combine_chunks(), "error")
        self.pages_boxes_failed += _count(pc.and_(pc.is_valid(boxes_error), pc.not_equal(boxes_error, "")))
        routed = t.filter(pc.fill_null(t.column("routed"), False))
        if routed.num_rows:
            readings = routed.column("readings").combine_chunks()
            later = pc.list_slice(readings, 1, None) if len(readings) else readings
            chosen = pc.fill_null(pc.struct_field(pc.list_flatten(later), "chosen"), False)
            kept = len(pc.unique(pc.filter(pc.list_parent_indices(later), chosen)))
            self.pages_routed += routed.num_rows
            self.pages_routed_kept += kept
            self.pages_routed_fallback += routed.num_rows - kept
        conf = t.column("confidence")
        has = pc.is_valid(conf)
        weight = pc.max_element_wise(pc.fill_null(pc.utf8_length(t.column("text")), 0), 1).filter(has)
        self._conf_sum += pc.sum(pc.multiply(pc.cast(weight, pa.float64()), conf.filter(has))).as_py() or 0.0
        self._conf_weight += pc.sum(weight).as_py() or 0

    def stage(self, name: str, seconds: float, pages: int) -> None:
        self.stages[name]["seconds"] = round(self.stages[name]["seconds"] + seconds, 3)
        self.stages[name]["pages"] += pages

    @property
    def pages_per_s(self) -> float:
        """Pages over wall seconds from the run's start to its last page's completion."""
        return self.pages / self.pages_seconds if self.pages_seconds > 0 else 0.0

    @property
    def still_failed(self) -> int:
        """Books of this source in error or partial now: this run's and those carried over."""
        return self.documents_failed + self.documents_partial + self.documents_carried_failed

    @property
    def ok(self) -> bool:
        return self.still_failed == 0 and not self.export_errors

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        return {**out, "pages_per_s": round(self.pages_per_s, 6), "pages_seconds": round(self.pages_seconds, 3),
                "documents_still_failed": self.still_failed}

    def routing_line(self) -> Optional[str]:
        """The routing share, for the summary; None without routing."""
        if not self.then_pool:
            return None
        share = f" ({self.pages_routed / self.pages:.1%})" if self.pages else ""
        return (f"{self.pages_routed} of {self.pages} pages routed to the second engine{share}: "
                f"{self.pages_routed_kept} kept the second reading, {self.pages_routed_fallback} fell back to the first (reverse guard)")

    def line(self) -> str:
        """How the run ended, in one line (the run record's `message`; the CLI prints it)."""
        done = f"{self.documents} books ({self.pages} pages) committed by this run"
        if self.status == "interrupted":
            gone = (f", {self.documents_abandoned} in flight abandoned" if self.documents_abandoned else
                    ", every book in flight finished")
            return (f"interrupted by {self.stopped_by}: {done}{gone}; claims released; "
                    f"a rerun processes the rest")
        if self.status == "failed":
            return f"stopped: {self.error}; {done}; claims released; rerun once the output can be written"
        return f"{self.status}: {done}"




def _count(mask) -> int:
    return pc.sum(pc.cast(pc.fill_null(mask, False), pa.int64())).as_py() or 0
