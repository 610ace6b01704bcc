"""Give memory freed by finished pages back to the OS in long-lived processes (loaders, OCR actors).

A page image is megabytes: freed by Python/NumPy, glibc keeps it in the heap (fragmented arenas of
several threads) and MuPDF keeps decoded images in its resource store (256 MB by default), so a
process that has read thousands of pages holds more than one that has read ten. `release()` empties
MuPDF's store and trims the C heap; it costs about a millisecond, so callers do it every few pages.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

EVERY_PAGES = 8

_libc = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _libc.malloc_trim  # glibc only (musl has none); without it there is nothing to trim
    except (OSError, AttributeError):
        _libc = None


def release() -> None:
    if "pymupdf" in sys.modules:
        sys.modules["pymupdf"].TOOLS.store_shrink(100)
    if _libc is not None:
        _libc.malloc_trim(0)


class Every:
    """Call `release()` once per `n` ticks."""

    def __init__(self, n: int = EVERY_PAGES):
        self.n, self.count = n, 0

    def tick(self, pages: int = 1) -> None:
        self.count += pages
        if self.count >= self.n:
            self.count = 0
            release()
