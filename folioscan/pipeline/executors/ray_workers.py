"""The Ray executor's workers (pipeline/executors/ray_actors.py drives them): the loader task that
streams a book's cleaned pages, the OCR actor that reads batches with its pool's engine (the first
engine's, or the second's when routing), and the pools' bookkeeping."""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

import ray

from folioscan.pipeline.stages import engine_build_error, read_pages, read_routed
from folioscan.records import PageResult
from folioscan.workers import memory
from folioscan.workers.engines import counters
from folioscan.workers.engines.registry import VLM_KINDS, EngineError

log = logging.getLogger(__name__)

LOADER_AHEAD = 4  # pages a loader may hold in the object store before the driver takes them
ACTOR_CALLS = 2  # batches in flight per actor
LOADER_CPUS = 0.25  # loading + cleaning is ~5% of CPU OCR; actors take the rest of a core


@ray.remote(max_retries=0)
def load_book(stages, doc):
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
    def __init__(self, stages, second: bool = False):
        self.start = counters.snapshot()  # before the stage is built: its engine load counts
        self.trim = memory.Every()
        self.route = stages.route
        # an engine that cannot be built is told to the driver, in one line, by every call
        self.ocr, self.build_error = None, None
        try:
            self.ocr = stages.then_stage() if second else stages.ocr_stage()
        except Exception as e:
            self.build_error = str(engine_build_error(stages.then if second else stages.engine, e))

    def read(self, *works) -> tuple[list, dict[str, int]]:
        """Page results in order; with routing, a routed page's result (image kept) is put into the
        object store here and its place holds the reference (the driver never carries its pixels)."""
        if self.build_error is not None:
            raise EngineError(self.build_error)
        results = read_pages(self.ocr, works)
        self.trim.tick(len(results))
        return [Routed(ray.put(r)) if r.route_reason is not None else r for r in results], self.stats()

    def read_routed(self, *firsts) -> tuple[list[PageResult], dict[str, int]]:
        """Second pool: the routed pages' final results (workers/route.py)."""
        if self.build_error is not None:
            raise EngineError(self.build_error)
        results = read_routed(self.ocr, firsts, self.route)
        self.trim.tick(len(results))
        return results, self.stats()

    def stats(self) -> dict[str, int]:
        """This actor's engine counters since it started."""
        return counters.since(self.start, counters.snapshot())


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
class Routed:
    """In a first-pool call's results: a routed page, its first result (with its image) in the object store."""

    ref: object


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
