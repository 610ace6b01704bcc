"""Shared by the benchmarks: the eval set beside the repo, CER with the ground truth's normalisation, RSS sampling."""
from __future__ import annotations

import csv
import os
import sys
import threading
import time

EVAL = os.environ.get("FOLIOSCAN_EVAL", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "eval"))
OLD_BOOKS = os.path.join(EVAL, "old_books")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

# One normalisation and one CER for the benchmarks and `folioscan eval`: folioscan/text/accuracy.py
from folioscan.text.accuracy import cer, normalize, wer  # noqa: E402,F401


def manifest() -> list[dict]:
    """Rows of old_books/manifest.csv, with the ground truth text loaded."""
    if not os.path.isdir(OLD_BOOKS):
        raise SystemExit(f"eval set not found at {OLD_BOOKS} (set FOLIOSCAN_EVAL)")
    rows = list(csv.DictReader(open(os.path.join(OLD_BOOKS, "manifest.csv"))))
    for r in rows:
        r["page_index"] = int(r["page_index"])
        r["truth"] = open(os.path.join(OLD_BOOKS, r["gt"]), encoding="utf-8").read()
    return rows


class Sampler:
    """Calls `sample()` every `every` seconds on a thread while the `with` block runs."""

    every = 0.2

    def sample(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        import psutil

        while not self._stop:
            try:
                self.sample()
            except psutil.Error:  # a process ended between listing and reading it
                pass
            time.sleep(self.every)

    def __enter__(self):
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop = True
        self._t.join()


class PeakRss(Sampler):
    """Peak resident memory of a process and all its children (Ray workers included), sampled."""

    def __init__(self, pid: int | None = None, every: float = 0.2):
        import psutil

        self.proc, self.every, self.peak = psutil.Process(pid or os.getpid()), every, 0

    def sample(self) -> None:
        procs = [self.proc, *self.proc.children(recursive=True)]
        self.peak = max(self.peak, sum(p.memory_info().rss for p in procs if p.is_running()))

    @property
    def peak_mb(self) -> float:
        return round(self.peak / 2**20, 1)
