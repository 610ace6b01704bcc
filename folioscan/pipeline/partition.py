"""`--partition K/N`: N drivers share one listing, each taking the books of its own share.

A book's share is `int(sha256(source URI)[:8 bytes]) mod N`: the listed URI of the book (the PDF's
URI, or the folder of its page images), hashed with SHA-256, never Python's salted `hash()`, so
every driver, on any machine, in any run, puts a book in the same share, and a book keeps its share
when other books are added to or removed from the source. Shares are not ranges of the listing:
each driver still lists the whole source (a listing is cheap next to OCR) and keeps every Nth book
by hash, so the shares come out even in expectation (binomial spread) whatever the names look like.

Shares only divide the work; exactly once still rests on the claims (`leases.py`): two drivers
given the same K, or drivers given different N, overlap, and the claims keep each book to one of
them. `steal` (opt-in): once its own share is listed through, a driver lists the source again and
takes the books of other shares that nobody has claimed or committed yet.
"""
from __future__ import annotations

import hashlib
import re
from typing import NamedTuple

_FORM = re.compile(r"^(\d+)/(\d+)$")


class Partition(NamedTuple):
    k: int
    n: int

    def holds(self, uri: str) -> bool:
        return share_of(uri, self.n) == self.k

    def __str__(self) -> str:
        return f"{self.k}/{self.n}"


def share_of(uri: str, n: int) -> int:
    return int.from_bytes(hashlib.sha256(uri.encode("utf-8")).digest()[:8], "big") % n


def parse_partition(text: str) -> Partition:
    """"K/N" with 0 <= K < N; ValueError otherwise."""
    m = _FORM.match(text.strip())
    if not m:
        raise ValueError(f"partition {text!r} is not K/N (e.g. 0/3: the first of three shares)")
    k, n = int(m.group(1)), int(m.group(2))
    if n < 1 or k >= n:
        raise ValueError(f"partition {text!r}: K counts from 0 and must be below N (0/{max(n, 1)} .. {max(n, 1) - 1}/{max(n, 1)})")
    return Partition(k, n)
