"""Ray Data executor: documents fan out to CPU tasks that load and clean pages; a pool of
engine actors (one engine load each, on a GPU when the engine wants one) reads them in
batches; results stream back to the driver, which commits shards."""
from __future__ import annotations

import logging
import os
import pickle
import warnings
from typing import Iterator

from folioscan.records import PageResult, SourceDocument
from folioscan.workers.engines.registry import VLM_KINDS

log = logging.getLogger(__name__)


# Records travel as pickled bytes: Arrow cannot type them, and an explicit binary column
# keeps Ray Data from guessing (and warning) on every block.
class _OcrActor:
    def __init__(self, stages):
        self.ocr = stages.ocr_stage()

    def __call__(self, batch: dict) -> dict:
        works = [pickle.loads(b) for b in batch["page"]]
        return {"result": [pickle.dumps(r, protocol=5) for r in self.ocr(works)]}


def _pages_of(row: dict, stages) -> list[dict]:
    return [{"page": pickle.dumps(w, protocol=5)} for w in stages.pages(pickle.loads(row["doc"]))]


def _wants_gpu(engine) -> bool:
    return getattr(engine, "kind", "") in VLM_KINDS and getattr(engine, "device", "auto") != "cpu"


class RayExecutor:
    def __init__(self, stages, cfg):
        import ray

        self.stages = stages
        if not ray.is_initialized():
            from folioscan.pipeline.quiet import ray_init_kwargs

            kwargs = ray_init_kwargs()
            if cfg.ray_address:
                ray.init(address=cfg.ray_address, **kwargs)
            else:
                env = {k: v for k, v in os.environ.items() if k in ("AWS_ENDPOINT_URL", "TESSDATA_PREFIX", "HF_HUB_OFFLINE")}
                ray.init(num_cpus=cfg.num_cpus, runtime_env={"env_vars": env} if env else None, **kwargs)
        import ray.data

        # our own progress line and summary replace Ray Data's per-dataset chatter
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", message="The minimum number of concurrent actors")
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        resources = ray.cluster_resources()
        self.gpu = _wants_gpu(stages.engine) and resources.get("GPU", 0) >= 1
        default = int(resources.get("GPU", 1)) if self.gpu else max(1, int(resources.get("CPU", 1)))
        self.actors = cfg.ocr_workers or default

    def process(self, docs: list[SourceDocument]) -> Iterator[PageResult]:
        import ray.data

        ds = ray.data.from_items([{"doc": pickle.dumps(d)} for d in docs], override_num_blocks=max(1, len(docs)))
        # Loading and cleaning is light next to CPU OCR; fractional CPUs let one actor per
        # core run and still leave room for the loader tasks (whole CPUs would deadlock them).
        ds = ds.flat_map(_pages_of, fn_kwargs={"stages": self.stages}, num_cpus=0.2)
        ds = ds.map_batches(
            _OcrActor, fn_constructor_args=(self.stages,), batch_size=self.stages.batch_size,
            batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=self.actors),
            num_gpus=1 if self.gpu else 0, num_cpus=1 if self.gpu else 0.8,
        )
        for row in ds.iter_rows():
            yield pickle.loads(row["result"])

    def close(self) -> None:
        pass
