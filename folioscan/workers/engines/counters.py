"""Process-level engine counters: facts an executor sums over its workers into the run record.

Counted where the thing happens (an engine really constructed in `registry.build_engine`, a
generate batch halved after running out of memory in the VLM engine), never where a worker
assumes it happened. Each OCR worker is one process (a Ray actor, or the driver itself with the
local executor), so a snapshot of this module is that worker's account; an executor reports the
difference since it started (`since`) summed over its workers (`combine`).

Kinds of counter:
- totals (`add`): summed over workers (engine_loads, oom_backoffs);
- lows (`low`): the smallest value any worker settled on (vlm_batch_size: the generate batch
  size that fitted after out-of-memory back-off), combined with min.
"""
from __future__ import annotations

import threading
from typing import Iterable, Mapping

_lock = threading.Lock()
_totals: dict[str, int] = {}
_lows: dict[str, int] = {}

TOTALS = ("engine_loads", "oom_backoffs")  # always present in a snapshot, 0 when nothing happened
LOWS = ("vlm_batch_size",)  # present once a worker set them


def add(name: str, n: int = 1) -> None:
    with _lock:
        _totals[name] = _totals.get(name, 0) + n


def low(name: str, value: int) -> None:
    with _lock:
        _lows[name] = min(_lows.get(name, value), value)


def reset_lows() -> None:
    """A new run in this process: lows describe one run (the local executor calls this as it starts)."""
    with _lock:
        _lows.clear()


def snapshot() -> dict[str, int]:
    with _lock:
        return {**{k: 0 for k in TOTALS}, **_totals, **_lows}


def since(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """What happened between two snapshots of one process: totals as differences, lows as they stand."""
    out = {k: v - before.get(k, 0) for k, v in after.items() if k not in LOWS}
    out.update({k: v for k, v in after.items() if k in LOWS})
    return out


def combine(accounts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Several workers' accounts as one: totals summed, lows by their minimum."""
    out: dict[str, int] = {k: 0 for k in TOTALS}
    for acc in accounts:
        for k, v in acc.items():
            if k in LOWS:
                out[k] = min(out.get(k, v), v)
            else:
                out[k] = out.get(k, 0) + v
    return out
