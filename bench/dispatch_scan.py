"""What one `RayExecutor._dispatch` pass costs the driver when every actor is busy (the steady state
of a large pool), against the number of actors. The executor's real `_dispatch` over its real
bookkeeping (calls in flight, queue); the actor handles are stand-ins whose `.remote` is never
reached at steady state (every actor already has ACTOR_CALLS calls in flight). No Ray is started.

    python bench/dispatch_scan.py [--actors 8 64 128 256]

`poll()` runs `_dispatch` twice; at a few pages a call it polls about once per call collected."""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import timeit
from collections import deque

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from folioscan.pipeline.executors.ray_actors import RayExecutor  # noqa: E402
from folioscan.pipeline.executors.ray_workers import ACTOR_CALLS, Pool  # noqa: E402


def busy_executor(n: int, batch_size: int = 4) -> RayExecutor:
    ex = object.__new__(RayExecutor)
    pool = Pool("OCR", False, n, n, {}, batch_size, "read")
    pool.actors = {i: object() for i in range(n)}
    pool.queue = deque(("d", 0, object(), batch_size) for _ in range(n * ACTOR_CALLS))
    ex.pools, ex.first, ex.then = [pool], pool, None
    ex.starting, ex.sent, ex.suspects = {}, {}, set()
    ex._call_no = itertools.count()
    ex.calls, ex.calls_of = {}, {}
    for i in range(n):
        for _ in range(ACTOR_CALLS):
            ref = object()
            ex.calls[ref] = (pool, i, [("d", 0)], next(ex._call_no), object())
            ex.calls_of.setdefault(i, []).append(ref)  # the executor's per-actor index (where it has one)
    return ex


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--actors", type=int, nargs="+", default=[8, 64, 128, 256])
    args = ap.parse_args()
    for n in args.actors:
        ex = busy_executor(n)
        per = min(timeit.repeat(ex._dispatch, number=10, repeat=5)) / 10
        print(f"{n:4d} actors: one _dispatch pass {per * 1e3:8.3f} ms")


if __name__ == "__main__":
    main()
