"""Executors run the stages over a shard of documents: in-process, or on Ray Data."""
from typing import Iterator, Protocol

from folioscan.records import PageResult, SourceDocument


class Executor(Protocol):
    def process(self, docs: list[SourceDocument]) -> Iterator[PageResult]: ...
    def close(self) -> None: ...


def make_executor(cfg, stages) -> Executor:
    if cfg.executor == "local":
        from folioscan.pipeline.executors.local import LocalExecutor

        return LocalExecutor(stages)
    from folioscan.pipeline.executors.ray_data import RayExecutor

    return RayExecutor(stages, cfg)
