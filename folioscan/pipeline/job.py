"""The job driver: list sources, skip what is committed, claim the rest, process shard by shard,
commit, supersede what was redone, summarise.

How a run ends (`JobSummary.status`, also in the run record `_runs/<run>.json`): "finished", the
whole listing gone through; "interrupted", stopped by SIGTERM or SIGINT (`stop.py`): the books in
flight got `grace_s` to finish, the rest were not handed out, every claim still held was
released; "failed", the output could not be written (`WriteError`, raised to the caller with the
summary attached as `.summary`): the run stops at the first failed write, keeps what it committed
before, and releases its claims. The run record is written in all three cases when the output
takes it."""
from __future__ import annotations

import logging
import sys
import threading
import time
from itertools import chain
from typing import Iterator, Optional

from folioscan import __version__
from folioscan.pipeline.assemble import assemble_books
from folioscan.pipeline.pagerows import PageRows, drop_books
from folioscan.pipeline.committed import CommittedIndex, decide, runs_to_recover
from folioscan.pipeline.config import JobConfig
from folioscan.pipeline.duplicates import ContentClaims, claims_taken, settle
from folioscan.pipeline.executors import make_executor
from folioscan.pipeline.leases import CLAIM_THREADS, Leases
from folioscan.pipeline.output import DatasetWriter
from folioscan.pipeline import plan
from folioscan.pipeline.partition import parse_partition, share_of
from folioscan.pipeline.progress import Progress
from folioscan.pipeline.shards import BookSink, stream_shards
from folioscan.pipeline.spill import Spill
from folioscan.pipeline.sources import iter_documents
from folioscan.pipeline.stages import Stages
from folioscan.pipeline.stop import Interrupted, Stop
from folioscan.pipeline.summary import PAGE_COLUMNS, JobSummary
from folioscan.pipeline.storage import StorageError, WriteError, parallel, store_for
from folioscan.records import SourceDocument
from folioscan.workers import memory
from folioscan.workers.engines.registry import EngineError, preflight

log = logging.getLogger(__name__)


def _shard_exporter(cfg: JobConfig, summary: JobSummary):
    """`--also`: write the export formats of each shard under OUTPUT/<format>/. Called by the commit
    between the pages part and the documents part (the commit point): a book whose exports could not
    all be written (WriteError) is not committed, so a rerun processes it again and writes them;
    a book committed always has its exports (bar a per-book export error, in `export_errors`)."""
    if not cfg.also:
        return None
    from folioscan.export import ExportContext, ExportSummary, format_function

    fns = {f: format_function(f) for f in cfg.also}
    ctx = ExportContext(cfg.output, cfg.endpoint_url, cfg.region, run_configs={cfg.run_id: cfg.model_dump()},
                        base_url=cfg.base_url)
    return _Exporter(fns, cfg.output, ctx, ExportSummary(errors=summary.export_errors, warnings=summary.export_warnings))


class _Exporter:
    def __init__(self, fns, output: str, ctx, done):
        self.fns, self.output, self.ctx, self.done = fns, output, ctx, done
        self.seconds = 0.0  # since the last take_seconds(): kept out of the "write" stage's time

    def __call__(self, page_rows: PageRows, doc_rows: list[dict]) -> None:
        from folioscan.export import export_books
        from folioscan.export.dataset import Book

        t0 = time.perf_counter()
        try:  # a book's rows are read back from the spill as its turn comes
            books = (Book(d, page_rows.book_rows(d["doc_id"])) for d in doc_rows)
            export_books(books, self.fns, self.output, self.ctx, self.done)
        finally:
            self.seconds += time.perf_counter() - t0

    def take_seconds(self) -> float:
        seconds, self.seconds = self.seconds, 0.0
        return seconds


def _commit(writer: DatasetWriter, leases: Leases, index: CommittedIndex, page_rows: PageRows,
            doc_rows: list[dict], summary: JobSummary, export=None, claims: Optional[ContentClaims] = None,
            taken: Optional[dict[str, str]] = None) -> tuple[PageRows, list[dict]]:
    """Commit the books this run still holds (their exports written first, `_shard_exporter`), then
    remove the rows they supersede and free them. With `claims` (dedupe), each book's standing as a
    copy is settled first (`taken`: the claims on their bytes the loaders took) and the first copies
    are recorded after the commit point (duplicates.py)."""
    ids = {d["doc_id"] for d in doc_rows}
    mine = leases.still_held(ids)
    if mine != ids:
        log.warning("%d book(s) were taken over by another driver while this run stalled; not committed", len(ids - mine))
        summary.documents_claimed_elsewhere += len(ids - mine)
        page_rows = drop_books(page_rows, ids - mine)
        doc_rows = [d for d in doc_rows if d["doc_id"] in mine]
    if not doc_rows:
        return page_rows, doc_rows
    firsts = []
    if claims is not None:
        page_rows, doc_rows, firsts = settle(claims, index, page_rows, doc_rows, leases, taken)
    for d in doc_rows:  # a retried book counts its runs
        before = index.by_id.get(d["doc_id"])
        d["attempts_made"] = (before.attempts_made + 1) if before else 1
    name = writer.commit(page_rows, doc_rows, before_commit=(lambda: export(page_rows, doc_rows)) if export else None)
    summary.shards.append(name)
    index.record(name, doc_rows)
    # past the commit point: later copies of these bytes are duplicates of these books (a PUT each, at once)
    parallel(lambda f: claims.register(f.row["content_sha256"], f.row["doc_id"], f.row["source_uri"]), firsts, CLAIM_THREADS)
    if firsts:
        claims.release_firsts(firsts, leases)  # while the books are still held (`Leases.unbroken`)
    summary.documents_superseded += writer.supersede(index.take_stale(), leases)
    leases.release_many(mine)  # one request for the shard's books where the store allows
    return page_rows, doc_rows


def _preflight(cfg: JobConfig, summary: JobSummary):
    """Every configuration error before any work, and before anything is written or Ray starts: the
    engine (registry.preflight), the source (listed until its first book: a missing folder, bucket or
    manifest, or a source that lists no book, fails here) and the output (usable, or creatable; not
    created yet). Returns the stores and the listing, its first book already read."""
    preflight(cfg.engine)
    if cfg.route.then is not None:
        try:
            preflight(cfg.route.then)
        except EngineError as e:
            raise EngineError(f"--then {cfg.route.then.kind} (route.then): {e}") from None
    in_store = store_for(cfg.source, cfg.endpoint_url, cfg.region)
    listing = plan.listing(in_store, cfg, summary)
    first = next(listing)  # an empty source raises plan.EmptySource from here
    out_store = store_for(cfg.output, cfg.endpoint_url, cfg.region)
    out_store.check_writable(cfg.output, create=False)
    return in_store, out_store, chain([first], listing)


def dry_run(cfg: JobConfig) -> list[tuple[str, str, str]]:
    """(action, source URI, why) for every listed book, touching nothing: no claims, no recovery.
    The same checks as a run come first (`_preflight`)."""
    _, out_store, listing = _preflight(cfg, JobSummary(cfg.run_id))
    index = CommittedIndex(out_store, DatasetWriter(out_store, cfg.output, cfg.run_id).docs_dir)
    index.refresh()
    plan, seen = [], set()
    part = parse_partition(cfg.partition) if cfg.partition else None
    for doc in listing:
        if part is not None and not part.holds(doc.uri):
            plan.append(("skip", doc.uri, f"share {share_of(doc.uri, part.n)} of {part.n}, not this driver's {part.k}"
                                          + (f" (--steal takes it if still free once share {part.k} is done)" if cfg.steal else "")))
            continue
        if doc.doc_id in seen:
            plan.append(("skip", doc.uri, "listed twice"))
            continue
        seen.add(doc.doc_id)
        decision = decide(index, doc, cfg.retry_failed)
        plan.append(("process" if decision.process else "skip", doc.uri, decision.reason))
    return plan


def run_job(cfg: JobConfig, stop: Optional[Stop] = None) -> JobSummary:
    """Run the job. Returns the summary when the run finished or was stopped by a signal (`status`);
    raises WriteError, the summary attached as `.summary`, when the output could not be written.
    SIGTERM and SIGINT are handled while it runs (by `stop`, which the CLI installs earlier)."""
    summary = JobSummary(cfg.run_id)
    stop = stop or Stop(cfg.grace_s)
    with stop.handling():
        in_store, out_store, listing = _preflight(cfg, summary)
        claims = ContentClaims(out_store, cfg.output, cfg.run_id, cfg.lease_ttl_s) if cfg.dedupe else None
        try:
            spill = Spill(cfg.spill_dir)
        except OSError as e:
            raise StorageError(f"spill_dir {cfg.spill_dir!r} cannot be used for the books' page rows in flight: {e}") from e
        stages = Stages(in_store, cfg.load_options(), cfg.prep, cfg.engine, cfg.pages_per_call, cfg.flip_retry_below,
                        retry=cfg.retry_policy(), max_pages_per_book=cfg.max_pages_per_book, content=claims,
                        route=cfg.route if cfg.route.then is not None else None,
                        then_batch_size=cfg.then_pages_per_call if cfg.route.then is not None else 4)
        # the local executor builds its engine here, so an engine that cannot be built (EngineError) leaves
        # nothing written; Ray's actors build theirs while the driver recovers and lists
        try:
            executor = make_executor(cfg, stages)
        except BaseException:
            spill.close()
            raise
        executor.book_results = BookSink(spill, cfg.run_id)
        stop.install()  # again: ray.init put its own SIGTERM handler in
        try:
            if stop.requested:  # stopped while Ray started: nothing written, nothing to record
                summary.status, summary.stopped_by = "interrupted", stop.name
                return summary
            out_store.check_writable(cfg.output)  # the output folder is made here, the first write of the run
            writer = DatasetWriter(out_store, cfg.output, cfg.run_id)
            leases = Leases(store_for(cfg.output, cfg.endpoint_url, cfg.region), cfg.output, cfg.run_id, cfg.lease_ttl_s)
            relist = lambda: iter_documents(in_store, cfg.source)  # noqa: E731  (--steal's second listing)
            return _run_claimed(cfg, summary, listing, out_store, writer, leases, executor, stop, relist)
        finally:
            stop.shield()
            executor.close()
            spill.close()


def _run_claimed(cfg: JobConfig, summary: JobSummary, listing: Iterator[SourceDocument], out_store,
                 writer: DatasetWriter, leases: Leases, executor, stop: Stop, relist=None) -> JobSummary:
    failure: Optional[WriteError] = None
    t0 = time.perf_counter()
    summary.start()  # pages/s counts from here (summary.py)
    try:
        leases.start()
        _process(cfg, summary, listing, out_store, writer, leases, executor, stop, relist)
        summary.status = "interrupted" if stop.requested else "finished"
    except WriteError as e:
        failure = e
        summary.status, summary.error = "failed", str(e)
    except Interrupted:  # a second signal: the books in flight are dropped
        summary.status = "interrupted"
    finally:
        stop.shield()  # the clean-up below is not interrupted by a second signal
        # every claim still held is released (books handed out and not committed); the liveness record
        # stays until the run record is written, unless an error escapes here (no record follows)
        leases.stop(keep_live=sys.exc_info()[0] is None)
    summary.documents_abandoned = summary._in_flight
    _executor_stats(executor, summary, ask=summary.status == "finished")
    if summary.status == "interrupted":
        summary.stopped_by = stop.name
    summary.seconds = time.perf_counter() - t0
    try:
        writer.write_run_record({"folioscan": __version__, "status": summary.status, "message": summary.line(),
                                 "config": cfg.model_dump(), "summary": summary.to_dict()})
    except WriteError as e:
        summary.record_written = False
        if failure is None:  # the run got through but its record cannot be written
            failure = e
            summary.status, summary.error = "failed", str(e)
        log.debug("run record not written: %s", e)
    finally:  # only now: other runs find this run's parts by its liveness record or by its run record
        leases.forget_live()
    if failure is not None:
        failure.summary = summary
        raise failure
    return summary


def _executor_stats(executor, summary: JobSummary, ask: bool) -> None:
    """The executor's counters into the summary; `ask=False` (a stopped run): what the workers last
    reported, without waiting on workers that may still be busy with a book being abandoned."""
    try:
        stats = executor.stats(ask=ask)
    except Exception as e:
        log.warning("executor counters not collected: %s", e)
        return
    for key, value in stats.items():
        setattr(summary, key, value)


def _process(cfg: JobConfig, summary: JobSummary, listing: Iterator[SourceDocument], out_store,
             writer: DatasetWriter, leases: Leases, executor, stop: Stop, relist=None) -> None:
    index = CommittedIndex(out_store, writer.docs_dir, cfg.run_id)
    index.note_ended_runs()  # before documents/ is listed (by recover): runs that end later are looked at again
    summary.orphans_removed = writer.recover(leases.is_live, runs_to_recover(out_store, cfg.output, leases.is_live))
    summary.stale_live_removed = leases.remove_stale()
    index.refresh(writer.listed_documents)  # compacted.py: the index objects and the parts they do not cover, in parallel
    left: dict = {}
    summary.documents_superseded += writer.supersede(index.take_stale(), leases, left)  # left by an interrupted run
    if not left:  # a merged base keeps only the newest rows: merge once the stale ones are gone from the parts
        index.compact()
    summary.committed_index = index.report

    part = parse_partition(cfg.partition) if cfg.partition else None

    def todo() -> Iterator[SourceDocument]:
        planned = plan.planned(plan.own_share(listing, part, summary), index, cfg, summary, set())
        own = plan.claimed(planned, leases, index, summary, cfg.shard_docs)
        if not (part and cfg.steal):
            return own
        others = plan.planned(plan.stolen(relist, part), index, cfg, summary, set(), count_skips=False)
        return chain(own, plan.claimed(others, leases, index, summary, cfg.shard_docs, stolen=True))

    export = _shard_exporter(cfg, summary)
    claims = ContentClaims(out_store, cfg.output, cfg.run_id, cfg.lease_ttl_s) if cfg.dedupe else None  # as the loaders'
    progress = Progress(enabled=cfg.progress, every_s=cfg.progress_every_s, max_pages_per_book=cfg.max_pages_per_book)
    executor.on_pages, executor.on_restart = progress.pages_read, progress.book_restarted
    counting = threading.Event()
    try:
        with progress:
            plan.count_ahead(cfg, index, progress, counting, None if cfg.steal else part)
            _commit_shards(cfg, summary, todo(), writer, leases, index, executor, stop, export, progress, claims)
    finally:
        counting.set()  # the counting pass stops with the run
        _flush_index(index, summary)
        summary.progress = {**progress.numbers(), "pages_per_s": round(summary.pages_per_s, 3)}


def _flush_index(index: CommittedIndex, summary: JobSummary) -> None:
    """The run's last delta of the committed index (compacted.py). Not written (the output refusing
    writes): its parts are read directly by the next run, as the run record says."""
    try:
        index.flush()
    except Exception as e:
        index.report.setdefault("problems", []).append(f"last delta not written: {e}")
        log.warning("committed index: last delta not written (%s); the next run reads those parts directly", e)
    summary.committed_index = index.report


def _commit_shards(cfg: JobConfig, summary: JobSummary, todo: Iterator[SourceDocument], writer: DatasetWriter,
                   leases: Leases, index: CommittedIndex, executor, stop: Stop, export, progress: Progress,
                   claims: Optional[ContentClaims] = None) -> None:
    for docs, books in stream_shards(executor, todo, cfg.shard_docs, cfg.shards_in_flight, stop, summary, progress):
        page_rows, doc_rows = assemble_books(docs, books, cfg.run_id)
        taken = claims_taken(books) if claims is not None else None
        t1 = time.perf_counter()
        try:
            page_rows, doc_rows = _commit(writer, leases, index, page_rows, doc_rows, summary, export, claims, taken)
            summary.stage("write", time.perf_counter() - t1 - (export.take_seconds() if export else 0.0), len(page_rows))
            summary.add(page_rows.tables(PAGE_COLUMNS), doc_rows)
        finally:  # committed, or not to be: the shard's spill files go
            page_rows.discard()
            executor.book_results.done(books)
        summary._in_flight -= len(docs)
        progress.committed(doc_rows)
        del docs, books, page_rows, doc_rows
        memory.release()  # a long book's rows are freed: give the heap back before the next shard
