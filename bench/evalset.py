"""Shared by the benchmarks: the eval set beside the repo, CER with the ground truth's normalisation, RSS sampling."""
from __future__ import annotations

import csv
import os
import re
import threading
import time
import unicodedata

EVAL = os.environ.get("FOLIOSCAN_EVAL", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "eval"))
OLD_BOOKS = os.path.join(EVAL, "old_books")

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"',
                         "\u00bb": '"', "\u2014": "-", "\u2013": "-", "\u00ad": "", "\ufb01": "fi", "\ufb02": "fl"})


def normalize(text: str, fold_case: bool = False, pair_quotes: bool = True) -> str:
    """Gutenberg-style ground truth has no line breaks, no end-of-line hyphens and plain quotes.

    Two single quotes are one double quote: book d prints its double quotes as two single ones
    (checked by eye, bench/gt_audit.json), which the engine reads faithfully as `''`.
    `fold_case`: compare without case, for small capitals, which the ground truth writes in
    lower case and the engine reads as capitals (books b, d, f; gt_audit.json).
    `pair_quotes=False`: the normalisation before the audit (for comparison)."""
    text = unicodedata.normalize("NFKC", text or "").translate(_QUOTES)
    if pair_quotes:
        text = text.replace("''", '"')
    text = re.sub(r"(\w)-\s*\n\s*(\w)", r"\1\2", text)
    return " ".join((text.casefold() if fold_case else text).split())


def cer(predicted: str, truth: str, fold_case: bool = False, pair_quotes: bool = True) -> float:
    from rapidfuzz.distance import Levenshtein

    truth = normalize(truth, fold_case, pair_quotes)
    return Levenshtein.distance(normalize(predicted, fold_case, pair_quotes), truth) / max(len(truth), 1)


def wer(predicted: str, truth: str) -> float:
    from rapidfuzz.distance import Levenshtein

    t = normalize(truth).split()
    return Levenshtein.distance(normalize(predicted).split(), t) / max(len(t), 1)


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
