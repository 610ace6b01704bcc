"""Everything the report shows, gathered in one pass over the output dataset.

Parquet parts are read one at a time through the Store (local or S3), only the columns needed, and
folded into small aggregates; only the lowest-confidence pages keep their text. So the report's
memory depends on the largest part, not on the size of the dataset.
"""
from __future__ import annotations

import heapq
import io
import json
import logging
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Optional

import numpy as np
import pyarrow.parquet as pq

from folioscan.pipeline.storage import Store, StorageError, join
from folioscan.workers.engines.registry import VLM_KINDS

log = logging.getLogger(__name__)

DEFAULT_FLAG_BELOW = 0.80  # used when neither --flag-below nor the run's engine says otherwise
HIST_BINS = 20
TEXT_CHARS = 1200  # of a worst page's text kept for the report
PAGE_COLUMNS = ["doc_id", "source_uri", "page_index", "side", "status", "error", "error_kind", "confidence",
                "budget", "vision_tokens", "attempts", "load_ms", "prep_ms", "ocr_ms", "completed_at", "run_id", "engine",
                "routed", "route_reason", "readings"]
DOC_COLUMNS = ["source_uri", "status", "error", "error_kind", "pages_out", "run_id", "processed_at"]
STAGES = ("load", "clean", "ocr", "write")
_PAGE_STAGE_COLUMNS = {"load": "load_ms", "clean": "prep_ms", "ocr": "ocr_ms"}  # write: run record only


@dataclass
class WorstPage:
    confidence: float
    doc_id: str
    source_uri: str
    page_index: int
    side: Optional[str]
    text: str
    engine: Optional[str]
    thumbnail: Optional[str] = None  # data: URI of a small JPEG
    thumbnail_error: Optional[str] = None


@dataclass
class Throughput:
    """A run's pages/s from its pages' completion times (`completed_at`)."""

    points: list  # (minutes since the run's start, pages/s over the stretch ending there)
    pages: int
    seconds: float  # from the run's start to its last page
    start_from: str  # where the run's start came from: "run record" or "run id"

    @property
    def overall(self) -> float:
        """pages / seconds: the run summary's definition of pages/s (pipeline/summary.py)."""
        return self.pages / self.seconds


def rate_points(times: list[float], start: float) -> list[tuple[float, float]]:
    """Pages/s over consecutive stretches from `start` to the last completion time: a stretch ends at
    the first page completed a minute after the previous end (runs of 10 minutes or more) or a twelfth
    of the run after it (shorter runs, so a one-minute run still shows a curve), the last one at the
    last page (joined to the one before when under half as long: no spike from a last batch). The stretches cover the run exactly, so their time-weighted mean is the overall figure."""
    times = sorted(times)
    span = times[-1] - start
    width = 60.0 if span >= 600 else span / 12
    stretches, prev, n = [], start, 0  # [end, pages, seconds]
    for t in times:
        n += 1
        if t - prev >= width and t > prev:
            stretches.append([t, n, t - prev])
            prev, n = t, 0
    if n:  # pages after the last full stretch: a last one, or added to the one before when under half as long
        if stretches and times[-1] - prev < width / 2:
            stretches[-1][0] = times[-1]
            stretches[-1][1] += n
            stretches[-1][2] += times[-1] - prev
        else:
            stretches.append([times[-1], n, times[-1] - prev])
    return [((end - start) / 60, pages / seconds) for end, pages, seconds in stretches if seconds > 0]


@dataclass
class RunInfo:
    run_id: str
    record: Optional[dict] = None  # _runs/<run>.json, when present
    commits: dict = field(default_factory=lambda: defaultdict(int))  # processed_at -> pages committed
    pages: int = 0
    completed: list = field(default_factory=list)  # the pages' completed_at, epoch seconds

    @property
    def started(self) -> Optional[datetime]:
        """The run's start: the run record's `summary.started_at`, else the time in the run id (to the second)."""
        at = ((self.record or {}).get("summary") or {}).get("started_at")
        if at:
            return datetime.fromisoformat(at)
        m = re.match(r"(\d{8}T\d{6}Z)", self.run_id)
        return datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc) if m else None

    def throughput(self) -> Optional[Throughput]:
        """From the pages' completion times; None for pages written before `completed_at` existed."""
        if not self.completed or self.started is None:
            return None
        start = self.started.timestamp()
        seconds = max(self.completed) - start
        if seconds <= 0:
            return None
        source = "run record" if ((self.record or {}).get("summary") or {}).get("started_at") else "run id"
        return Throughput(rate_points(self.completed, start), len(self.completed), seconds, source)

    def rate_series(self) -> list[tuple[float, float]]:
        """Outputs from before `completed_at`: (minutes since the run started, pages/s since the previous
        commit) per commit that committed pages; a commit of books that failed whole adds its time to the next one."""
        times = sorted(self.commits)
        if not times:
            return []
        start = self.started or times[0]
        prev, out = start, []
        for t in times:
            dt = (t - prev).total_seconds()
            if self.commits[t] and dt > 0:
                out.append(((t - start).total_seconds() / 60, self.commits[t] / dt))
                prev = t
        return out

    @property
    def stages(self) -> dict:
        return ((self.record or {}).get("summary") or {}).get("stages") or {}


@dataclass
class ReportData:
    output: str
    flag_below: float
    flag_source: str
    pages: int = 0
    page_status: Counter = field(default_factory=Counter)
    doc_status: Counter = field(default_factory=Counter)
    page_error_kinds: Counter = field(default_factory=Counter)
    doc_error_kinds: Counter = field(default_factory=Counter)
    error_messages: Counter = field(default_factory=Counter)  # message with the object named removed -> pages
    book_error_messages: Counter = field(default_factory=Counter)  # -> books that failed whole (no page rows)
    error_example: dict = field(default_factory=dict)  # message -> one source_uri
    engines: Counter = field(default_factory=Counter)
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(HIST_BINS, dtype=np.int64))
    flagged: int = 0
    stage_ms: dict = field(default_factory=lambda: {s: 0.0 for s in _PAGE_STAGE_COLUMNS})
    stage_pages: int = 0
    budgets: Counter = field(default_factory=Counter)  # pages per accepted budget (VLM engines)
    budget_tokens: Counter = field(default_factory=Counter)  # vision tokens per budget, every attempt
    attempts_per_page: Counter = field(default_factory=Counter)
    escalation_reasons: Counter = field(default_factory=Counter)
    vlm_pages: int = 0
    # routing (docs/routing.md): pages routed to a second engine, of them kept with its reading; why
    # they were routed (the reason's first word) and why the ones that fell back did
    routed: int = 0
    routed_kept: int = 0
    route_reasons: Counter = field(default_factory=Counter)
    fallback_reasons: Counter = field(default_factory=Counter)
    second_engines: Counter = field(default_factory=Counter)
    runs: dict = field(default_factory=dict)  # run_id -> RunInfo
    worst: list = field(default_factory=list)  # WorstPage, lowest confidence first
    unreadable_parts: list = field(default_factory=list)
    accuracy: Optional[dict] = None  # the last `folioscan eval` of this output (OUTPUT/_eval/latest.json)

    def run(self, run_id: str) -> RunInfo:
        if run_id not in self.runs:
            self.runs[run_id] = RunInfo(run_id)
        return self.runs[run_id]

    @property
    def ok_pages(self) -> int:
        return int(self.histogram.sum())


def _parts(store: Store, folder: str) -> list[str]:
    return [join(folder, n) for n in store.ls(folder) if n.endswith(".parquet")]


def _read(store: Store, uri: str, columns: list[str], data: ReportData):
    try:
        f = pq.ParquetFile(io.BytesIO(store.read(uri)))
        present = [c for c in columns if c in f.schema_arrow.names]
        return f.read(columns=present)
    except Exception as e:  # a damaged part is named in the report, not fatal to it
        data.unreadable_parts.append(f"{uri}: {type(e).__name__}: {e}")
        return None


def _error_message(error: str, uri: str) -> str:
    msg = error.replace(uri, "<source>") if uri else error
    return re.sub(r"(/[^\s:]+)+", "<path>", msg)[:160]


def _fold_pages(table, data: ReportData, worst: list, n_worst: int) -> None:
    n = table.num_rows
    cols = {name: table.column(name).to_pylist() if name in table.column_names else [None] * n
            for name in PAGE_COLUMNS if name not in ("attempts", "text")}  # older schema versions lack some (routing: v8)
    data.pages += n
    attempts = table.column("attempts").to_pylist() if "attempts" in table.column_names else [[]] * n
    conf = np.array([c if c is not None else np.nan for c in cols["confidence"]], dtype=np.float64)
    for i in range(n):
        status, run_id = cols["status"][i], cols["run_id"][i]
        data.page_status[status] += 1
        data.engines[cols["engine"][i]] += 1
        data.run(run_id).pages += 1
        if cols["completed_at"][i] is not None:
            data.run(run_id).completed.append(cols["completed_at"][i].timestamp())
        if status == "error":
            kind = cols["error_kind"][i] or "unclassified"
            data.page_error_kinds[kind] += 1
            msg = _error_message(cols["error"][i] or "", cols["source_uri"][i])
            data.error_messages[msg] += 1
            data.error_example.setdefault(msg, cols["source_uri"][i])
        if all(cols[c][i] is not None for c in _PAGE_STAGE_COLUMNS.values()):
            data.stage_pages += 1
            for stage, c in _PAGE_STAGE_COLUMNS.items():
                data.stage_ms[stage] += cols[c][i]
        if cols["routed"][i]:
            _fold_routed(data, cols["route_reason"][i], cols["readings"][i] or [])
        reads = attempts[i] or []
        data.attempts_per_page[len(reads)] += 1
        for a in reads[1:]:  # re-reads: escalations (VLM) or the 180-degree retry (every engine)
            data.escalation_reasons[(a.get("reason") or "?").split("@")[0]] += 1  # "@<orientation>" apart
        if cols["engine"][i] in VLM_KINDS and cols["vision_tokens"][i] is not None:
            data.vlm_pages += 1
            data.budgets[cols["budget"][i] or "?"] += 1
            for a in reads:
                data.budget_tokens[a.get("budget") or "?"] += a.get("vision_tokens") or 0
    ok = np.array([s == "ok" for s in cols["status"]], dtype=bool) & ~np.isnan(conf)
    scores = np.clip(conf[ok], 0, 1)
    data.histogram += np.histogram(scores, bins=HIST_BINS, range=(0, 1))[0]
    data.flagged += int((scores < data.flag_below).sum())
    # this part's lowest pages; only they are read with their text
    idx = np.flatnonzero(ok)
    idx = idx[np.argsort(conf[idx], kind="stable")][:n_worst]
    if not len(idx):
        return
    texts = table.column("text").take(idx).to_pylist() if "text" in table.column_names else [None] * len(idx)
    for j, i in enumerate(idx):
        item = (-float(conf[i]), cols["doc_id"][i], int(cols["page_index"][i]), cols["side"][i] or "")
        if len(worst) < n_worst or item > worst[0][0]:
            page = WorstPage(float(conf[i]), cols["doc_id"][i], cols["source_uri"][i], int(cols["page_index"][i]),
                             cols["side"][i], (texts[j] or "")[:TEXT_CHARS], cols["engine"][i])
            entry = (item, page)
            heapq.heappush(worst, entry) if len(worst) < n_worst else heapq.heapreplace(worst, entry)


def _fold_routed(data: ReportData, reason: Optional[str], readings: list) -> None:
    data.routed += 1
    data.route_reasons[(reason or "?").split(" ")[0]] += 1
    second = readings[1] if len(readings) > 1 else {}
    data.second_engines[second.get("engine") or "?"] += 1
    if second.get("chosen"):
        data.routed_kept += 1
    else:
        data.fallback_reasons[(second.get("reason") or "?").split(":")[0].split(" ")[0]] += 1


def _run_records(store: Store, output: str, data: ReportData) -> None:
    folder = join(output, "_runs")
    for name in store.ls(folder):
        if not name.endswith(".json"):
            continue
        try:
            record = json.loads(store.read(join(folder, name)))
        except Exception as e:
            data.unreadable_parts.append(f"{join(folder, name)}: {type(e).__name__}: {e}")
            continue
        data.run(name[: -len(".json")]).record = record


def _flag_threshold(data: ReportData, given: Optional[float]) -> None:
    if given is not None:
        data.flag_below, data.flag_source = given, "--flag-below"
        return
    for run_id in sorted(data.runs, reverse=True):  # the latest run that names one
        engine = (((data.runs[run_id].record or {}).get("config") or {}).get("engine") or {})
        if engine.get("escalate_below") is not None:
            data.flag_below, data.flag_source = float(engine["escalate_below"]), f"escalate_below of run {run_id}"
            return


def collect(store: Store, output: str, flag_below: Optional[float] = None, worst: int = 12) -> ReportData:
    output = output.rstrip("/")
    data = ReportData(output, DEFAULT_FLAG_BELOW, "default")
    _run_records(store, output, data)
    _flag_threshold(data, flag_below)
    from folioscan.pipeline.evaluate import latest

    data.accuracy = latest(store, output)
    for uri in _parts(store, join(output, "documents")):
        table = _read(store, uri, DOC_COLUMNS, data)
        if table is None:
            continue
        cols = {name: table.column(name).to_pylist() if name in table.column_names else [None] * table.num_rows
                for name in DOC_COLUMNS}
        for i in range(table.num_rows):
            data.doc_status[cols["status"][i]] += 1
            if cols["status"][i] in ("error", "partial"):
                data.doc_error_kinds[cols["error_kind"][i] or "unclassified"] += 1
            if cols["error"][i] and not cols["pages_out"][i]:  # a book that never got to pages
                msg = _error_message(cols["error"][i], cols["source_uri"][i])
                data.book_error_messages[msg] += 1
                data.error_example.setdefault(msg, cols["source_uri"][i])
            if cols["processed_at"][i] is not None:
                data.run(cols["run_id"][i]).commits[cols["processed_at"][i]] += cols["pages_out"][i] or 0
    page_parts = _parts(store, join(output, "pages"))
    if not page_parts and not data.runs and not data.doc_status:
        raise StorageError(f"{output}: no folioscan output here (no pages/, documents/ or _runs/)")
    heap: list = []
    for uri in page_parts:
        table = _read(store, uri, PAGE_COLUMNS + ["text"], data)
        if table is not None:
            _fold_pages(table, data, heap, worst)
    data.worst = [p for _, p in sorted(heap, reverse=True)]
    return data
