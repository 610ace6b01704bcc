"""Ray executor: one streaming pipeline per run.

    books -> loader tasks (streaming generators: the page count, then load + clean, pages 8 to an object)
          -> bounded queue of object refs on the driver
          -> long-lived OCR actors (one engine load each, on a GPU when the engine wants one): each
             book's rows and facts to the driver, its TextFacts left in the object store
          -> once a book's pages are all back, a book_texts task makes its text (ray_texts.py)

Memory is bounded by counts, never by a book's length: each loader runs at most `LOADER_AHEAD`
pages (at least one object) ahead of the driver, the driver queues at most `queue_pages` pages, and
each actor has at most two batches in flight (one running, one waiting, so it never idles between
calls). The driver never unpickles a page's words nor builds its row (docs/executors.md).
A loader or actor lost to a dead worker or node fails only the books it was carrying; each is
retried from its first page (the failed attempt's results dropped) up to `BOOK_ATTEMPTS` times,
then becomes a transient book-level error; a book whose text raised, a permanent one at once. A
lost actor is replaced at once, up to `actor_replacements` times per run (the last one always),
and gets batches once it is up. An engine that cannot be built in an actor stops the run with a
one-line EngineError (exit 2). Engine counters are each actor's account of its own process, sent
back with every batch; the run's figures combine the last account of every actor (docs/executors.md).

Routing (`route.then`) adds a second pool beside the first: a first-pool actor puts each routed page
(first reading and image) into the object store and the driver queues its reference to the second
pool; the page counts as read once settled there. A second-pool actor lost mid-call restarts no
book: its pages are read again, alone; a page whose actor dies then keeps its first reading. The
first pool waits while `routed_pages` routed pages do (docs/routing.md, "How it runs").
"""
from __future__ import annotations

import itertools
import logging
from collections import deque
from dataclasses import dataclass
from typing import Optional

import ray

from folioscan.failures import PERMANENT, TRANSIENT, describe
from folioscan.pipeline.executors.ray_texts import BookTexts, TextFailed
from folioscan.pipeline.executors.ray_workers import (ACTOR_CALLS, LOADER_AHEAD, LOADER_CPUS, PAGES_PER_OBJECT, OcrActor,
                                                     Pool, cancel, check_fits, engine_error, load_book,
                                                     object_sizes, start_ray, wants_gpu)
from folioscan.pipeline.pagerows import BookPages, PageFacts
from folioscan.pipeline.stages import doc_error
from folioscan.records import PageResult, SourceDocument
from folioscan.workers.route import second_work, settle

log = logging.getLogger(__name__)

BOOK_ATTEMPTS = 3


@dataclass
class _Book:
    doc: SourceDocument
    results: BookPages  # executors/__init__.py: book_results
    attempt: int = 0
    page_count: int = 0  # as its loader first said (0: not yet)
    emitted: int = 0  # objects of page works the loader yielded in this attempt
    settled: int = 0  # of them, read (their parts back)
    routing: int = 0  # routed pages with the second pool
    loaded: bool = False
    text: Optional[str] = None  # once every page is back: "queued" for a book_texts task, then "making"


class RayExecutor:
    def __init__(self, stages, cfg):
        start_ray(cfg)
        self.stages, self.run_id = stages, cfg.run_id
        self.stages_ref = ray.put(stages)
        resources = ray.cluster_resources()
        # on a cluster, GPU workers may only appear once an actor asks for a GPU (an autoscaled group
        # with no replicas yet): there a GPU engine asks whatever the cluster shows at start
        has_gpu = resources.get("GPU", 0) >= 1 or bool(cfg.ray_address)
        self.gpu = wants_gpu(stages.engine) and has_gpu
        then_gpu = stages.then is not None and wants_gpu(stages.then) and has_gpu
        then_n = 0
        if stages.then is not None:
            then_n = cfg.route.workers or (max(1, int(resources.get("GPU", 0))) if then_gpu else 1)
        cpus = max(1, int(resources.get("CPU", 1)) - then_n)  # the second pool's actors take a core each (GPU ones too)
        default = max(1, int(resources.get("GPU", 0))) if self.gpu else cpus
        self.n_actors = cfg.ocr_workers or default
        self.pools = [Pool.build("OCR", False, stages.engine, self.n_actors, self.gpu, stages.batch_size, cfg)]
        if stages.then is not None:
            self.pools.append(Pool.build("second-engine", True, stages.then, then_n, then_gpu, stages.then_batch_size, cfg))
        self.first = self.pools[0]
        self.then = self.pools[1] if len(self.pools) > 1 else None
        # routed pages waiting for the second pool before the first pool stops taking batches
        self.routed_pages = then_n * stages.then_batch_size * ACTOR_CALLS * 2
        if self.then is not None and not cfg.ray_address:
            check_fits(self.pools, resources)
        self.starting: dict = {}  # readiness ref -> (pool, replacement actor id): no batches until it is up
        self._call_no = itertools.count()
        self._next_actor = 0
        for pool in self.pools:
            for _ in range(pool.n_actors):
                self._add_actor(pool)
        self.max_loaders = max(2, self.n_actors)
        self.loader_cpus = LOADER_CPUS
        if self.gpu and getattr(stages.engine, "boxes", "none") == "tesseract":
            # the loaders also run Tesseract for the word boxes (workers/boxes.py): a core each, and
            # as many as the CPUs the GPU actors leave, so the box reads keep up with the accelerators
            self.loader_cpus = 1
            self.max_loaders = max(2, int(resources.get("CPU", 1)) - self.n_actors)
        self.queue_pages = self.n_actors * stages.batch_size * ACTOR_CALLS
        self.per_object = max(1, min(PAGES_PER_OBJECT, stages.batch_size))  # pages per loader object
        self.loader_ahead = max(1, LOADER_AHEAD // self.per_object)  # objects a loader may run ahead
        self.books: dict[str, _Book] = {}
        self.waiting: deque[str] = deque()  # submitted, loader not started
        self.loaders: dict = {}  # ObjectRefGenerator -> (doc_id, attempt)
        self.calls: dict = {}  # ObjectRef -> (pool, actor id, [(doc_id, attempt) per object], call number, TextFacts ref)
        self.calls_of: dict = {}  # actor id -> its calls in flight (ObjectRefs): a dispatch pass never scans `calls`
        self.sent: dict = {}  # a second-pool call's ObjectRef -> its [(doc_id, attempt, page ref, 1)]
        self.texts = BookTexts(self.n_actors)
        self.suspects: set = set()  # routed page refs whose second-pool actor was lost mid-call: read alone next
        self.book_retries = 0
        self.on_pages = self.on_restart = None  # progress (executors/__init__.py)
        self.routed = 0  # pages this run sent to the second pool
        self.book_results = lambda doc: BookPages.in_memory(self.run_id)

    def _add_actor(self, pool: Pool, replacement: bool = False) -> None:
        i, self._next_actor = self._next_actor, self._next_actor + 1
        pool.actors[i] = OcrActor.options(**pool.options).remote(self.stages_ref, self.run_id, pool.second)
        pool.accounts[i] = (-1, {})
        if replacement:
            self.starting[pool.actors[i].__ray_ready__.remote()] = (pool, i)

    def _started(self, ref) -> None:
        pool, i = self.starting.pop(ref)
        try:
            ray.get(ref)
        except Exception as e:  # died while starting
            if (build_error := engine_error(e)) is not None:
                raise build_error from None
            if i in pool.actors:
                self._lost(pool, i, e)

    # -- the driver's side -------------------------------------------------------------------
    def submit(self, doc: SourceDocument) -> None:
        self.books[doc.doc_id] = _Book(doc, self.book_results(doc))
        self.waiting.append(doc.doc_id)
        self._start_loaders()

    def has_room(self) -> bool:
        return not self.waiting

    def busy(self) -> bool:
        return bool(self.books)

    def poll(self) -> list[tuple[SourceDocument, BookPages]]:
        done: list[tuple[SourceDocument, BookPages]] = []
        self._dispatch()
        loading = self.first.queued() < self.queue_pages
        waitables = list(self.calls) + list(self.starting) + list(self.texts.tasks) + (list(self.loaders) if loading else [])
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
            elif w in self.texts.tasks:
                self._text_made(w, done)
            elif w in self.loaders and self.first.queued() < self.queue_pages:  # a failed call may have dropped it
                self._take_page(w, done)
        self._start_loaders()
        self._dispatch()
        return self._finished(done)

    def _finished(self, done):
        """Books given up are handed back (those whose text a task made are, in `_text_made`); those
        whose every page is back are queued for their text (BookTexts.ready)."""
        self.texts.ready(self.books, self.first.actors, done)
        return done

    def _text_made(self, ref, done) -> None:
        for doc_id, attempt, columns in self.texts.made(ref):
            if not self._current(doc_id, attempt):
                continue
            if isinstance(columns, TextFailed):  # lost TextFacts: read again; a failing book text: given up
                self._fail(doc_id, attempt, RuntimeError(columns.reason), again=columns.lost)
                continue
            self.books[doc_id].results.columns = columns
            self.texts.hand_back(self.books, doc_id, done)

    def _start_loaders(self) -> None:
        while self.waiting and len(self.loaders) < self.max_loaders:
            book = self.books[self.waiting.popleft()]
            gen = load_book.options(num_returns="streaming", num_cpus=self.loader_cpus,
                                    _generator_backpressure_num_objects=self.loader_ahead
                                    ).remote(self.stages_ref, book.doc, self.per_object)
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
            book = self.books[doc_id]
            if not book.page_count:  # the loader's first answer: the book's page count
                book.page_count = ray.get(ref)
                return
            size = object_sizes(book.page_count, self.per_object, book.emitted)
            book.emitted += 1
            self.first.queue.append((doc_id, attempt, ref, size))

    def _dispatch(self) -> None:
        """Send batches to actors with a free call slot; a part batch only to an idle actor. The
        first pool waits while the second has `routed_pages` routed pages queued."""
        starting = {i for _, i in self.starting.values()}
        for pool in self.pools:
            if pool is self.first and self.then is not None and len(self.then.queue) >= self.routed_pages:
                continue
            for i, actor in list(pool.actors.items()):
                if i in starting:
                    continue
                while pool.queue:
                    mine = self.calls_of.get(i, [])
                    if pool.second and (pool.queue[0][2] in self.suspects or self._alone(mine)):
                        # a page whose actor was lost mid-call is read alone, on an actor with nothing else
                        if mine:
                            break
                        batch = [pool.queue.popleft()]
                    elif len(mine) >= ACTOR_CALLS or (mine and pool.queued() < pool.batch_size):
                        break
                    else:
                        batch = pool.fill()
                    ref, texts = getattr(actor, pool.method).remote(*(r for _, _, r, _ in batch))
                    self.calls[ref] = (pool, i, [(d, a) for d, a, _, _ in batch], next(self._call_no), texts)
                    self.calls_of.setdefault(i, []).append(ref)
                    if pool.second:
                        self.sent[ref] = batch

    def _alone(self, calls) -> bool:
        """One of these second-pool calls reads a suspect page alone."""
        return any(len(self.sent[c]) == 1 and self.sent[c][0][2] in self.suspects for c in calls if c in self.sent)

    def _collect(self, ref, done) -> None:
        pool, i, owners, call_no, texts = self.calls.pop(ref)
        mine = self.calls_of[i]
        mine.remove(ref)
        if not mine:
            del self.calls_of[i]
        sent = self.sent.pop(ref, None)
        try:
            parts, account, node = ray.get(ref)
        except Exception as e:  # actor or worker died, or a page object was lost with its node
            if (build_error := engine_error(e)) is not None:
                raise build_error from None
            lost = isinstance(e, (ray.exceptions.RayActorError, ray.exceptions.ActorDiedError))
            if lost and i in pool.actors:
                self._lost(pool, i, e)
            if lost and sent is not None:  # the routed pages are still the first pool's: read them again
                self._second_lost(sent, e)
                return
            self.suspects.difference_update(r for _, _, r, _ in sent or ())
            for doc_id, attempt in dict.fromkeys(owners):
                self._fail(doc_id, attempt, e)
            return
        self.suspects.difference_update(r for _, _, r, _ in sent or ())
        if call_no > pool.accounts[i][0]:
            pool.accounts[i] = (call_no, account)
        if pool is self.first:
            self.texts.nodes[i] = node
        got: dict[str, list[PageFacts]] = {}
        for k, ((doc_id, attempt), part) in enumerate(zip(owners, parts)):
            if not self._current(doc_id, attempt):
                continue
            book = self.books[doc_id]
            if pool.second:
                book.routing -= 1
            else:
                book.settled += 1
            for routed in part.routed:  # final once the second pool has read it
                self.then.queue.append((doc_id, attempt, routed, 1))
                book.routing += 1
                self.routed += 1
            part.routed = []
            if part.facts:
                book.results.extend(part, (texts, k))
                got.setdefault(doc_id, []).extend(part.facts)
        if self.on_pages is not None:
            for doc_id, facts in got.items():
                self.on_pages(doc_id, facts)

    def _second_lost(self, sent: list, e: BaseException) -> None:
        """A second-pool actor died in a call: its routed pages go back to the queue's front to be read
        alone; a page it was reading alone falls back to its first reading."""
        alone = len(sent) == 1 and sent[0][2] in self.suspects
        again = []
        for doc_id, attempt, ref, _ in sent:
            if not self._current(doc_id, attempt):
                self.suspects.discard(ref)
            elif alone:
                self.suspects.discard(ref)
                self._fall_back(doc_id, attempt, ref, e)
            else:
                self.suspects.add(ref)
                again.append((doc_id, attempt, ref, 1))
        self.then.queue.extendleft(reversed(again))

    def _fall_back(self, doc_id: str, attempt: int, ref, e: BaseException) -> None:
        """The page's first reading, kept by the reverse guard: the second engine's worker died reading it alone."""
        try:
            first = ray.get(ref)  # one page's result and image, on the driver
        except Exception as lost:  # its object went with the first pool's actor
            self._fail(doc_id, attempt, lost)
            return
        why = f"the {self.then.name} worker died reading this page alone ({type(e).__name__})"
        second = PageResult(second_work(first), "error", None, getattr(self.stages.then, "kind", ""), "",
                            error=why, error_kind=TRANSIENT)
        result = settle(first, second, self.stages.route)
        log.warning("%s page %d: %s; its first reading kept", first.work.source_uri, first.work.page_index, why)
        book = self.books[doc_id]
        book.routing -= 1
        facts = book.results.append(result)
        if self.on_pages is not None:
            self.on_pages(doc_id, [facts])

    def _lost(self, pool: Pool, i: int, e: BaseException) -> None:
        """Actor `i` died: replace it while replacements are left (or when it was the last one)."""
        del pool.actors[i]
        pool.actors_lost += 1
        within = pool.actors_replaced < pool.max_replacements
        if within or not pool.actors:
            self._add_actor(pool, replacement=True)
            pool.actors_replaced += 1
            log.warning("%s actor %d lost (%s); replaced (%s)", pool.name, i, type(e).__name__,
                        f"replacement {pool.actors_replaced} of at most {pool.max_replacements} this run" if within
                        else "it was the last one, past the limit of replacements (actor_replacements)")
        else:
            log.warning("%s actor %d lost (%s); the run's %d replacements are used up (actor_replacements): "
                        "going on with %d of %d actors", pool.name, i, type(e).__name__, pool.max_replacements,
                        len(pool.actors), pool.n_actors)

    def _current(self, doc_id: str, attempt: int) -> bool:
        book = self.books.get(doc_id)
        return book is not None and book.attempt == attempt

    def _fail(self, doc_id: str, attempt: int, exc: BaseException, again: bool = True) -> None:
        """Drop the attempt; retry the book from its first page, or give it up (`again=False`: at once)."""
        if not self._current(doc_id, attempt):
            return
        book = self.books[doc_id]
        for gen, owner in list(self.loaders.items()):
            if owner == (doc_id, attempt):
                del self.loaders[gen]
                cancel(gen)
        for pool in self.pools:  # its pages waiting for either pool, routed ones too
            self.suspects.difference_update(q[2] for q in pool.queue if q[0] == doc_id)
            pool.queue = deque(q for q in pool.queue if q[0] != doc_id)
        if self.on_restart is not None:
            self.on_restart(doc_id)
        book.attempt += 1
        book.results = self.book_results(book.doc)  # the attempt's results dropped
        book.page_count = book.emitted = book.settled = book.routing = 0
        book.loaded, book.text = False, None
        if again and book.attempt < BOOK_ATTEMPTS:
            log.warning("%s: attempt %d failed (%s); retrying the book", book.doc.uri, attempt + 1, type(exc).__name__)
            self.book_retries += 1
            self.waiting.appendleft(doc_id)
            return
        why, kind = (f"gave up after {BOOK_ATTEMPTS} attempts: {describe(exc)}", TRANSIENT) if again else (str(exc), PERMANENT)
        error = doc_error(book.doc, f"{book.doc.uri}: {why}", kind)
        result = PageResult(error, "error", None, "", "", error=error.error, error_kind=kind)
        book.results.append(result)
        self.texts.give_up(doc_id, book, result)

    def stats(self, ask: bool = True) -> dict:
        """`ask=False` (a stopped run): each actor's last account, without queueing behind its calls.
        The first pool's figures at the top level; with routing the second pool's in `then_pool`."""
        starting = {i for _, i in self.starting.values()}  # a replacement still waiting for room: nothing to ask
        out = {**self.first.stats(ask, starting, self._call_no), "book_retries": self.book_retries}
        if self.then is not None:
            out["then_pool"] = {**self.then.stats(ask, starting, self._call_no), "pages_routed": self.routed}
        return out

    def close(self) -> None:
        for gen in self.loaders:
            cancel(gen)
        for pool in self.pools:
            for actor in pool.actors.values():
                ray.kill(actor)
            pool.actors.clear()
