"""The Ray executor's workers (pipeline/executors/ray_actors.py drives them): the loader task that
streams a book's cleaned pages, the OCR actor that reads batches with its pool's engine (the first
engine's, or the second's when routing), the task that makes a book's text, and the pools'
bookkeeping.

What crosses to the driver is kept small, because one driver feeds many workers: a loader yields
its book's page count, then its pages `PAGES_PER_OBJECT` to an object (Ray's cost is per object);
an actor answers each object with a `PagePart` (the pages' facts and their rows as one Arrow
record batch, made here: pipeline/pagerows.py) and leaves their TextFacts in a second object the
driver never reads; a `book_texts` task makes the books' text from those, off the driver (ray_texts.py)."""
from __future__ import annotations

import logging
import os
from collections import deque
from dataclasses import dataclass, field

import ray

from folioscan.pipeline.pagerows import page_part
from folioscan.pipeline.stages import engine_build_error, read_pages, read_routed
from folioscan.workers import memory
from folioscan.workers.engines import counters
from folioscan.workers.engines.registry import VLM_KINDS, EngineError

log = logging.getLogger(__name__)

LOADER_AHEAD = 4  # pages a loader may hold in the object store before the driver takes them (at least one object)
FILL_LOOKAHEAD = 8  # queued objects a call may pass over that would take it past its batch size
PAGES_PER_OBJECT = 8  # most pages a loader puts in one object (fewer when the engine's calls are smaller)
ACTOR_CALLS = 2  # batches in flight per actor
LOADER_CPUS = 0.25  # loading + cleaning is ~5% of CPU OCR; actors take the rest of a core


@ray.remote(max_retries=0)
def load_book(stages, doc, per: int):
    """Yields the book's page count (what the driver sizes calls by), then its page works, `per` to a list."""
    import cv2

    # a loader owns LOADER_CPUS of a core: OpenCV's default thread pool (one thread per core) would
    # run cleaning on every core at once, taking them from the OCR actors
    cv2.setNumThreads(1)
    trim = memory.Every()
    works: list = []
    counted = False
    for work in stages.pages(doc):
        if not counted:
            cap = stages.max_pages_per_book
            yield max(1, min(work.page_count, cap) if cap else work.page_count)
            counted = True
        works.append(work)
        trim.tick()
        if len(works) >= per:
            yield works
            works = []
    if works:
        yield works


def object_sizes(page_count: int, per: int, k: int) -> int:
    """Pages in a loader's object `k` (0 first) of a book of `page_count` pages, as the driver guesses
    it for sizing calls (a split spread or a book-level error makes it off by a little)."""
    return max(1, min(per, page_count - k * per))


@ray.remote(max_restarts=0, max_concurrency=1)
class OcrActor:
    def __init__(self, stages, run_id: str, second: bool = False):
        self.start = counters.snapshot()  # before the stage is built: its engine load counts
        self.node = ray.get_runtime_context().get_node_id()  # where the driver sends book text (text_near)
        self.trim = memory.Every()
        self.route, self.run_id = stages.route, run_id
        # an engine that cannot be built is told to the driver, in one line, by every call
        self.ocr, self.build_error = None, None
        try:
            self.ocr = stages.then_stage() if second else stages.ocr_stage()
        except Exception as e:
            self.build_error = str(engine_build_error(stages.then if second else stages.engine, e))

    @ray.method(num_returns=2)
    def read(self, *objects):
        """The pages of a loader's objects (lists of page works, each one book's): for each object its
        PagePart and, in the second answer, its TextFacts. With routing, a routed page's result
        (image kept) is put into the object store here and its part holds the reference (the driver
        never carries its pixels)."""
        if self.build_error is not None:
            raise EngineError(self.build_error)
        results = read_pages(self.ocr, [w for works in objects for w in works])
        self.trim.tick(len(results))
        parts, texts, at = [], [], 0
        for works in objects:
            mine, at = results[at:at + len(works)], at + len(works)
            part, text = page_part(works[0].doc_id, [r for r in mine if r.route_reason is None], self.run_id)
            part.routed = [ray.put(r) for r in mine if r.route_reason is not None]
            parts.append(part)
            texts.append(text)
        return (parts, self.stats(), self.node), texts

    @ray.method(num_returns=2)
    def read_routed(self, *firsts):
        """Second pool: each routed page's final result (workers/route.py) as a one-page PagePart, and its TextFacts."""
        if self.build_error is not None:
            raise EngineError(self.build_error)
        results = read_routed(self.ocr, firsts, self.route)
        self.trim.tick(len(results))
        parts = [page_part(r.work.doc_id, [r], self.run_id) for r in results]
        return ([p for p, _ in parts], self.stats(), self.node), [t for _, t in parts]

    def stats(self) -> dict[str, int]:
        """This actor's engine counters since it started."""
        return counters.since(self.start, counters.snapshot())


def start_ray(cfg) -> None:
    """Join the cluster at `ray_address`, or start a local Ray sized by the config (unless this
    process has one already: tests, benchmarks)."""
    if ray.is_initialized():
        return
    from folioscan.pipeline.quiet import drop_colour_reset, ray_init_kwargs

    kwargs = ray_init_kwargs()
    if cfg.ray_address:
        ray.init(address=cfg.ray_address, **kwargs)
    else:
        env = {k: v for k, v in os.environ.items() if k in ("AWS_ENDPOINT_URL", "TESSDATA_PREFIX", "HF_HUB_OFFLINE")}
        ray.init(num_cpus=cfg.num_cpus, object_store_memory=cfg.object_store_mb * 2**20,
                 runtime_env={"env_vars": env} if env else None, **kwargs)
    drop_colour_reset()  # no ESC[0m after the summary


def engine_error(e: BaseException):
    """The run-level error behind a failed call: the engine could not be built in its actor (told by
    the actor, or its constructor raised), else None."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, EngineError):
        return EngineError(str(cause))
    if isinstance(e, ray.exceptions.RayActorError) and e.actor_init_failed:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        return EngineError(f"an OCR actor could not be started: {lines[-1] if lines else type(e).__name__}")
    return None


def cancel(gen) -> None:
    try:
        ray.cancel(gen)
    except Exception as e:  # already finished, or its node is gone
        log.debug("cancel: %s", e)


def wants_gpu(engine) -> bool:
    return getattr(engine, "kind", "") in VLM_KINDS and getattr(engine, "device", "auto") != "cpu"


@dataclass
class Pool:
    """One pool of OCR actors: the first engine's, or the second's (routing)."""

    name: str  # "OCR" (the first engine's) | "second-engine": how log lines name its actors
    second: bool
    n_actors: int
    max_replacements: int
    options: dict  # Ray actor options
    batch_size: int
    method: str  # the actor method a batch calls
    actors: dict = field(default_factory=dict)  # id -> ActorHandle
    # actor -> (number of the call that brought it, its engine counters then); kept after the actor
    # is lost. An actor runs its calls in order, but the driver may collect them out of order.
    accounts: dict = field(default_factory=dict)
    queue: deque = field(default_factory=deque)  # (doc_id, attempt, page ref)
    actors_lost: int = 0
    actors_replaced: int = 0

    @classmethod
    def build(cls, name: str, second: bool, engine, n: int, gpu: bool, batch_size: int, cfg) -> "Pool":
        """A pool of `n` actors of `engine` (GPU ones when `gpu`), its options from the config."""
        options = dict(num_gpus=1, num_cpus=1) if gpu else dict(num_cpus=1 - LOADER_CPUS)
        if getattr(engine, "kind", "") in VLM_KINDS:
            # a VLM actor runs its two calls at once: one prepares its pool's images while the other
            # holds the accelerator (the engine serialises generation); Tesseract stays one at a time
            options["max_concurrency"] = ACTOR_CALLS
        replacements = n if cfg.actor_replacements is None else cfg.actor_replacements
        return cls(name, second, n, replacements, options, batch_size, "read_routed" if second else "read")

    def queued(self) -> int:
        """Pages waiting in the queue (objects sized as the driver guesses)."""
        return sum(q[3] for q in self.queue)

    def fill(self) -> list:
        """A call's objects from the front of the queue: the first one, then each that still fits in
        the batch size (a few objects on, past one that does not: a book's short last object leaves
        room another book's short one may fill). Never more pages than the batch size, as sized."""
        batch = [self.queue.popleft()]
        n, k, skipped = batch[0][3], 0, 0
        while n < self.batch_size and k < len(self.queue) and skipped < FILL_LOOKAHEAD:
            size = self.queue[k][3]
            if n + size <= self.batch_size:
                batch.append(self.queue[k])
                del self.queue[k]
                n += size
            else:
                k, skipped = k + 1, skipped + 1
        return batch

    def stats(self, ask: bool, starting: set, call_no) -> dict:
        """The pool's figures: each actor asked for its account (unless `ask` is False, or it is still
        `starting`), the last account of every actor it had combined. `call_no`: the executor's call counter."""
        for i, actor in (self.actors.items() if ask else ()):
            if i in starting:
                continue
            try:
                self.accounts[i] = (next(call_no), ray.get(actor.stats.remote(), timeout=30))
            except Exception as e:
                log.warning("%s actor %d did not report its engine loads: %s", self.name, i, type(e).__name__)
        return {"ocr_actors": self.n_actors, **counters.combine(a for _, a in self.accounts.values()),
                "actors_lost": self.actors_lost, "actors_replaced": self.actors_replaced}


def check_fits(pools: list[Pool], resources: dict) -> None:
    """A local Ray with routing: both pools and a loader must fit on this machine, else the second
    pool would wait for room for ever (and the first with it, once enough routed pages queue up).
    EngineError (exit 2) before any work."""
    for unit, key, extra in (("CPU", "num_cpus", LOADER_CPUS), ("GPU", "num_gpus", 0)):
        asked = {p.name: p.n_actors * p.options.get(key, 0) for p in pools}
        have = resources.get(unit, 0)
        if sum(asked.values()) + extra > have + 1e-9:
            raise EngineError(f"routing on this machine's Ray: the OCR pool asks {asked[pools[0].name]:g} {unit}s and the "
                              f"second-engine pool {asked[pools[1].name]:g}, with {extra:g} for a loader; it has {have:g}: "
                              f"lower --ocr-workers or --then-workers")
