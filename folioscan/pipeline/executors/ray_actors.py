"""Ray executor: one streaming pipeline per run.

    books -> loader tasks (streaming generators: load + clean, one page per object)
          -> bounded queue of page refs on the driver
          -> long-lived OCR actors (one engine load each, on a GPU when the engine wants one)

Memory is bounded by counts, never by a book's length: each loader runs at most `LOADER_AHEAD`
pages ahead of the driver, the driver queues at most `queue_pages` page refs, and each actor has
at most two batches in flight (one running, one waiting, so it never idles between calls).
A loader or actor lost to a dead worker or node fails only the books it was carrying; each is
retried from its first page (results of the failed attempt are dropped) up to `BOOK_ATTEMPTS`
times, then becomes a transient book-level error. A lost actor is replaced at once, so the pool
keeps its size, up to `actor_replacements` (config) times per run; past that the run goes on with
the actors it has left (the last one is always replaced, so the run never stalls). A replacement
gets batches only once it is up: on a cluster that lost a node it may wait for resources that never
come back, and the books go on on the actors that are left. An engine that cannot be built in an
actor is none of that: the run stops with a one-line EngineError (exit 2), no book retried or written.

Engine counters (engine loads, out-of-memory back-offs, the batch size that fitted) are each
actor's account of its own process (`workers/engines/counters.py`), sent back with every batch
and asked for once more at the end; the run's figures combine the last account of every actor
the run had. An actor lost before it answered counts what it last reported (nothing, if it
died before its first batch came back).
"""
from __future__ import annotations

import itertools
import logging
import os
from collections import deque
from dataclasses import dataclass
from typing import MutableSequence

import ray

from folioscan.failures import TRANSIENT, describe
from folioscan.pipeline.stages import doc_error, engine_build_error, read_pages
from folioscan.records import PageResult, SourceDocument
from folioscan.workers import memory
from folioscan.workers.engines import counters
from folioscan.workers.engines.registry import VLM_KINDS, EngineError

log = logging.getLogger(__name__)

LOADER_AHEAD = 4  # pages a loader may hold in the object store before the driver takes them
BOOK_ATTEMPTS = 3
ACTOR_CALLS = 2  # batches in flight per actor
LOADER_CPUS = 0.25  # loading + cleaning is ~5% of CPU OCR; actors take the rest of a core


@ray.remote(max_retries=0)
def _load(stages, doc):
    import cv2

    # a loader owns LOADER_CPUS of a core: OpenCV's default thread pool (one thread per core) would
    # run cleaning on every core at once, taking them from the OCR actors
    cv2.setNumThreads(1)
    trim = memory.Every()
    for work in stages.pages(doc):
        yield work
        trim.tick()


@ray.remote(max_restarts=0, max_concurrency=1)
class OcrActor:
    def __init__(self, stages):
        self.start = counters.snapshot()  # before the stage is built: its engine load counts
        self.trim = memory.Every()
        # an engine that cannot be built is told to the driver, in one line, by every call
        self.ocr, self.build_error = None, None
        try:
            self.ocr = stages.ocr_stage()
        except Exception as e:
            self.build_error = str(engine_build_error(stages.engine, e))

    def read(self, *works) -> tuple[list[PageResult], dict[str, int]]:
        if self.build_error is not None:
            raise EngineError(self.build_error)
        results = read_pages(self.ocr, works)
        self.trim.tick(len(results))
        return results, self.stats()

    def stats(self) -> dict[str, int]:
        """This actor's engine counters since it started."""
        return counters.since(self.start, counters.snapshot())


def _engine_error(e: BaseException):
    """The run-level error behind a failed call: the engine could not be built in its actor (told by
    the actor, or its constructor raised), else None."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, EngineError):
        return EngineError(str(cause))
    if isinstance(e, ray.exceptions.RayActorError) and e.actor_init_failed:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        return EngineError(f"an OCR actor could not be started: {lines[-1] if lines else type(e).__name__}")
    return None


def _cancel(gen) -> None:
    try:
        ray.cancel(gen)
    except Exception as e:  # already finished, or its node is gone
        log.debug("cancel: %s", e)


def _wants_gpu(engine) -> bool:
    return getattr(engine, "kind", "") in VLM_KINDS and getattr(engine, "device", "auto") != "cpu"


@dataclass
class _Book:
    doc: SourceDocument
    results: MutableSequence[PageResult]  # executors/__init__.py: book_results
    attempt: int = 0
    emitted: int = 0  # page works the loader yielded in this attempt
    loaded: bool = False


class RayExecutor:
    def __init__(self, stages, cfg):
        if not ray.is_initialized():
            from folioscan.pipeline.quiet import drop_colour_reset, ray_init_kwargs

            kwargs = ray_init_kwargs()
            if cfg.ray_address:
                ray.init(address=cfg.ray_address, **kwargs)
            else:
                env = {k: v for k, v in os.environ.items() if k in ("AWS_ENDPOINT_URL", "TESSDATA_PREFIX", "HF_HUB_OFFLINE")}
                ray.init(num_cpus=cfg.num_cpus, object_store_memory=cfg.object_store_mb * 2**20,
                         runtime_env={"env_vars": env} if env else None, **kwargs)
            drop_colour_reset()  # no ESC[0m after the summary
        self.stages = stages
        self.stages_ref = ray.put(stages)
        resources = ray.cluster_resources()
        # on a cluster, GPU workers may only appear once an actor asks for a GPU (an autoscaled group
        # with no replicas yet): there a GPU engine asks whatever the cluster shows at start
        self.gpu = _wants_gpu(stages.engine) and (resources.get("GPU", 0) >= 1 or bool(cfg.ray_address))
        default = max(1, int(resources.get("GPU", 0))) if self.gpu else max(1, int(resources.get("CPU", 1)))
        self.n_actors = cfg.ocr_workers or default
        self.max_replacements = self.n_actors if cfg.actor_replacements is None else cfg.actor_replacements
        self.actor_options = dict(num_gpus=1, num_cpus=1) if self.gpu else dict(num_cpus=1 - LOADER_CPUS)
        if getattr(stages.engine, "kind", "") in VLM_KINDS:
            # a VLM actor runs its two calls at once: one prepares its pool's images while the other
            # holds the accelerator (the engine serialises generation); Tesseract stays one at a time
            self.actor_options["max_concurrency"] = ACTOR_CALLS
        self.actors: dict[int, ray.actor.ActorHandle] = {}
        # actor -> (number of the call that brought it, its engine counters then); kept after the actor
        # is lost. An actor runs its calls in order, but the driver may collect them out of order.
        self.accounts: dict[int, tuple[int, dict[str, int]]] = {}
        self.starting: dict = {}  # readiness ref -> replacement actor id: no batches until it is up
        self._call_no = itertools.count()
        self._next_actor = 0
        for _ in range(self.n_actors):
            self._add_actor()
        self.max_loaders = max(2, self.n_actors)
        self.loader_cpus = LOADER_CPUS
        if self.gpu and getattr(stages.engine, "boxes", "none") == "tesseract":
            # the loaders also run Tesseract for the word boxes (workers/boxes.py): a core each, and
            # as many as the CPUs the GPU actors leave, so the box reads keep up with the accelerators
            self.loader_cpus = 1
            self.max_loaders = max(2, int(resources.get("CPU", 1)) - self.n_actors)
        self.queue_pages = self.n_actors * stages.batch_size * ACTOR_CALLS
        self.books: dict[str, _Book] = {}
        self.waiting: deque[str] = deque()  # submitted, loader not started
        self.loaders: dict = {}  # ObjectRefGenerator -> (doc_id, attempt)
        self.queue: deque = deque()  # (doc_id, attempt, page ref)
        self.calls: dict = {}  # ObjectRef -> (actor id, [(doc_id, attempt), ...], call number)
        self.book_retries = 0
        self.actors_lost = 0
        self.on_pages = self.on_restart = None  # progress (executors/__init__.py)
        self.book_results = lambda doc: []
        self.actors_replaced = 0

    def _add_actor(self, replacement: bool = False) -> None:
        i, self._next_actor = self._next_actor, self._next_actor + 1
        self.actors[i] = OcrActor.options(**self.actor_options).remote(self.stages_ref)
        self.accounts[i] = (-1, {})
        if replacement:
            self.starting[self.actors[i].__ray_ready__.remote()] = i

    def _started(self, ref) -> None:
        i = self.starting.pop(ref)
        try:
            ray.get(ref)
        except Exception as e:  # died while starting
            if (build_error := _engine_error(e)) is not None:
                raise build_error from None
            if i in self.actors:
                self._lost(i, e)

    # -- the driver's side -------------------------------------------------------------------
    def submit(self, doc: SourceDocument) -> None:
        self.books[doc.doc_id] = _Book(doc, self.book_results(doc))
        self.waiting.append(doc.doc_id)
        self._start_loaders()

    def has_room(self) -> bool:
        return not self.waiting

    def busy(self) -> bool:
        return bool(self.books)

    def poll(self) -> list[tuple[SourceDocument, MutableSequence[PageResult]]]:
        done: list[tuple[SourceDocument, MutableSequence[PageResult]]] = []
        self._dispatch()
        waitables = list(self.calls) + list(self.starting) + (list(self.loaders) if len(self.queue) < self.queue_pages else [])
        if not waitables:
            return self._finished(done)
        ready, rest = ray.wait(waitables, num_returns=1, timeout=1.0, fetch_local=False)
        if ready and rest:
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0, fetch_local=False)
            ready += more
        for w in ready:
            if w in self.calls:
                self._collect(w, done)
            elif w in self.starting:
                self._started(w)
            elif w in self.loaders and len(self.queue) < self.queue_pages:  # a failed call may have dropped it
                self._take_page(w, done)
        self._start_loaders()
        self._dispatch()
        return self._finished(done)

    def _finished(self, done):
        for doc_id, book in list(self.books.items()):
            if book.loaded and len(book.results) == book.emitted:
                done.append((book.doc, book.results))
                del self.books[doc_id]
        return done

    def _start_loaders(self) -> None:
        while self.waiting and len(self.loaders) < self.max_loaders:
            book = self.books[self.waiting.popleft()]
            gen = _load.options(num_returns="streaming", num_cpus=self.loader_cpus,
                                _generator_backpressure_num_objects=LOADER_AHEAD).remote(self.stages_ref, book.doc)
            self.loaders[gen] = (book.doc.doc_id, book.attempt)

    def _take_page(self, gen, done) -> None:
        doc_id, attempt = self.loaders[gen]
        try:
            ref = next(gen)
        except StopIteration:
            del self.loaders[gen]
            if self._current(doc_id, attempt):
                self.books[doc_id].loaded = True
            return
        except Exception as e:  # the loader's worker or node died
            del self.loaders[gen]
            self._fail(doc_id, attempt, e)
            return
        if self._current(doc_id, attempt):
            self.books[doc_id].emitted += 1
            self.queue.append((doc_id, attempt, ref))

    def _dispatch(self) -> None:
        """Send batches to actors with a free call slot; a part batch only to an idle actor."""
        starting = set(self.starting.values())
        for i, actor in list(self.actors.items()):
            if i in starting:
                continue
            while self.queue:
                in_flight = sum(1 for a, *_ in self.calls.values() if a == i)
                if in_flight >= ACTOR_CALLS or (in_flight and len(self.queue) < self.stages.batch_size):
                    break
                batch = [self.queue.popleft() for _ in range(min(self.stages.batch_size, len(self.queue)))]
                ref = actor.read.remote(*(r for _, _, r in batch))
                self.calls[ref] = (i, [(d, a) for d, a, _ in batch], next(self._call_no))

    def _collect(self, ref, done) -> None:
        i, owners, call_no = self.calls.pop(ref)
        try:
            results, account = ray.get(ref)
        except Exception as e:  # actor or worker died, or a page object was lost with its node
            if (build_error := _engine_error(e)) is not None:
                raise build_error from None
            if isinstance(e, (ray.exceptions.RayActorError, ray.exceptions.ActorDiedError)) and i in self.actors:
                self._lost(i, e)
            for doc_id, attempt in dict.fromkeys(owners):
                self._fail(doc_id, attempt, e)
            return
        if call_no > self.accounts[i][0]:
            self.accounts[i] = (call_no, account)
        got: dict[str, list[PageResult]] = {}
        for (doc_id, attempt), r in zip(owners, results):
            if self._current(doc_id, attempt):
                self.books[doc_id].results.append(r)
                got.setdefault(doc_id, []).append(r)
        if self.on_pages is not None:
            for doc_id, rs in got.items():
                self.on_pages(doc_id, rs)

    def _lost(self, i: int, e: BaseException) -> None:
        """Actor `i` died: replace it while replacements are left (or when it was the last one)."""
        del self.actors[i]
        self.actors_lost += 1
        within = self.actors_replaced < self.max_replacements
        if within or not self.actors:
            self._add_actor(replacement=True)
            self.actors_replaced += 1
            log.warning("OCR actor %d lost (%s); replaced (%s)", i, type(e).__name__,
                        f"replacement {self.actors_replaced} of at most {self.max_replacements} this run" if within
                        else "it was the last one, past the limit of replacements (actor_replacements)")
        else:
            log.warning("OCR actor %d lost (%s); the run's %d replacements are used up (actor_replacements): "
                        "going on with %d of %d actors", i, type(e).__name__, self.max_replacements,
                        len(self.actors), self.n_actors)

    def _current(self, doc_id: str, attempt: int) -> bool:
        book = self.books.get(doc_id)
        return book is not None and book.attempt == attempt

    def _fail(self, doc_id: str, attempt: int, exc: BaseException) -> None:
        """Drop the attempt; retry the book from its first page, or give it up as a transient error."""
        if not self._current(doc_id, attempt):
            return
        book = self.books[doc_id]
        for gen, owner in list(self.loaders.items()):
            if owner == (doc_id, attempt):
                del self.loaders[gen]
                _cancel(gen)
        self.queue = deque(q for q in self.queue if q[0] != doc_id)
        if self.on_restart is not None:
            self.on_restart(doc_id)
        book.attempt += 1
        book.emitted, book.loaded, book.results = 0, False, self.book_results(book.doc)  # the attempt's results dropped
        if book.attempt < BOOK_ATTEMPTS:
            log.warning("%s: attempt %d failed (%s); retrying the book", book.doc.uri, attempt + 1, type(exc).__name__)
            self.book_retries += 1
            self.waiting.appendleft(doc_id)
            return
        error = doc_error(book.doc, f"{book.doc.uri}: gave up after {BOOK_ATTEMPTS} attempts: {describe(exc)}", TRANSIENT)
        book.results.append(PageResult(error, "error", None, "", "", error=error.error, error_kind=TRANSIENT))
        book.emitted, book.loaded = 1, True

    def stats(self, ask: bool = True) -> dict:
        """`ask=False` (a stopped run): each actor's last account, without queueing behind its calls."""
        starting = set(self.starting.values())  # a replacement still waiting for room: nothing to ask
        for i, actor in (self.actors.items() if ask else ()):
            if i in starting:
                continue
            try:
                self.accounts[i] = (next(self._call_no), ray.get(actor.stats.remote(), timeout=30))
            except Exception as e:
                log.warning("OCR actor %d did not report its engine loads: %s", i, type(e).__name__)
        return {"ocr_actors": self.n_actors, **counters.combine(a for _, a in self.accounts.values()),
                "book_retries": self.book_retries, "actors_lost": self.actors_lost,
                "actors_replaced": self.actors_replaced}

    def close(self) -> None:
        for gen in self.loaders:
            _cancel(gen)
        for actor in self.actors.values():
            ray.kill(actor)
        self.actors.clear()
