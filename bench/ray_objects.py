"""What Ray alone costs a driver per object: no folioscan code. Prints one JSON object.

    python bench/ray_objects.py [--pages 400]

A streaming-generator task yields 612 x 792 page images (485 KB), `per` to an object; the driver
takes each object's ref as it comes and forwards refs to one actor, a call per 4 pages (as the
executor did before issue 18's relief), keeping two calls in flight; the actor answers 2 KB a page.
Driver CPU (getrusage of this process: Ray's core-worker threads included) per page, for 1, 4 and 8
pages an object; and for the generator alone (refs taken and dropped), with and without
backpressure. This is why folioscan's loaders send 8 pages an object (docs/executors.md).
"""
from __future__ import annotations

import argparse
import json
import resource
from collections import deque


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    import numpy as np
    import ray

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pages", type=int, default=400)
    args = ap.parse_args()
    ray.init(num_cpus=3, object_store_memory=512 * 2**20, include_dashboard=False, log_to_driver=False)

    @ray.remote(max_retries=0)
    def loader(n: int, per: int):
        for k in range(0, n, per):
            yield [np.full((792, 612), k % 255, np.uint8) for _ in range(min(per, n - k))]

    @ray.remote
    class Reader:
        def read(self, *objects):
            return [("x" * 2000, i) for obj in objects for i in range(len(obj))]

    reader = Reader.remote()
    ray.get(reader.__ray_ready__.remote())

    def forwarded(n: int, per: int) -> float:
        c0 = cpu()
        gen = loader.options(num_returns="streaming", _generator_backpressure_num_objects=max(1, 4 // per)).remote(n, per)
        queue, calls, done, ended = deque(), set(), 0, False
        while not ended or queue or calls:
            waitables = list(calls) + ([gen] if not ended and len(queue) < 8 else [])
            ready, _ = ray.wait(waitables, num_returns=1, timeout=1.0, fetch_local=False)
            for r in ready:
                if r in calls:
                    calls.discard(r)
                    done += len(ray.get(r))
                else:
                    try:
                        queue.append(next(gen))
                    except StopIteration:
                        ended = True
            while queue and len(calls) < 2:
                calls.add(reader.read.remote(*[queue.popleft() for _ in range(min(max(1, 4 // per), len(queue)))]))
        assert done == n
        return (cpu() - c0) * 1000 / n

    def generator_only(n: int, backpressure: bool) -> float:
        c0 = cpu()
        options = {"_generator_backpressure_num_objects": 4} if backpressure else {}
        gen = loader.options(num_returns="streaming", **options).remote(n, 1)
        kept = deque(maxlen=8)
        for ref in gen:
            kept.append(ref)
        return (cpu() - c0) * 1000 / n

    forwarded(20, 1)  # warm-up: worker processes, imports
    out = {"benchmark": "ray_objects", "pages": args.pages,
           "driver_cpu_ms_per_page_forwarded": {f"{per} pages an object": round(forwarded(args.pages, per), 3) for per in (1, 4, 8)},
           "driver_cpu_ms_per_item_generator_only": {"with backpressure": round(generator_only(args.pages, True), 3),
                                                     "without": round(generator_only(args.pages, False), 3)}}
    print(json.dumps(out, indent=1))
    ray.shutdown()


if __name__ == "__main__":
    main()
