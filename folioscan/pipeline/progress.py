"""Progress while the job runs, on stderr, moved by pages as their results reach the driver (not by
shard commits): pages and books done out of the total, pages/s over the last minute, the ETA and
the books failed so far.

In a terminal: one live line (tqdm), redrawn as pages come back and once a second. Anywhere else
(a pipe, a log file, a Kubernetes pod): one plain line every `progress_every_s` seconds (config,
`--progress-every`) and a last one when the run ends; no escape codes. `--quiet`: nothing.

Totals. Books: the books this run will process (listed, not already committed), counted by a
second, counting-only pass over the listing in a thread (`count_listing`), so the total is known
once the listing is done while the run itself reads the listing lazily; until then the line shows
the running count ("books 3 of 40 listed so far"). The run's own listing ending makes the total
exact (books claimed by another driver meanwhile drop out). Pages: a book's page count is known
once its first page is back; the pages of books not yet started are estimated at the mean of
those known, shown with "~" until every book's count is known. The ETA is the pages left at the
pages/s of the last minute.

The numbers at the end go into the run record (`summary.progress`). docs/progress.md says more.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Callable, Iterator, Optional, Sequence

from folioscan.records import DOCUMENT_LEVEL

if TYPE_CHECKING:
    from folioscan.pipeline.pagerows import PageFacts

log = logging.getLogger(__name__)

WINDOW_S = 60.0  # pages/s is measured over this much of the recent past
TERMINAL_REFRESH_S = 1.0


def _clock(seconds: Optional[float]) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    def __init__(self, enabled: bool = True, every_s: float = 30.0, stream=None,
                 terminal: Optional[bool] = None, clock: Callable[[], float] = time.monotonic,
                 max_pages_per_book: Optional[int] = None):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.terminal = enabled and (self.stream.isatty() if terminal is None else terminal)
        self.every_s = every_s
        self.clock = clock
        self.cap = max_pages_per_book  # a longer book is read this far
        self.lock = threading.RLock()
        self._final: Optional[dict] = None  # the numbers at the end of the run (`__exit__`)
        self.bar = None
        self.t0 = clock()
        self.pages_done = 0  # page rows back from the workers (a restarted book's are taken off again)
        self.books_done = 0  # committed
        self.books_failed = 0  # committed in error or partial
        self.books_started = 0  # handed to the executor
        self.books_listed = 0  # running count of the counting pass
        self.books_total: Optional[int] = None
        self._pages_of: dict[str, int] = {}  # book in flight -> page rows back
        self._expected: dict[str, int] = {}  # book started -> its page rows, as far as known
        self._recent: deque[tuple[float, int]] = deque()  # (time, pages) within the window
        self._ticker: Optional[threading.Thread] = None
        self._stop = threading.Event()

    # -- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> "Progress":
        self.t0 = self.clock()
        if self.terminal:
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            # log lines (a failed book's warning) are written above the live line, not into it
            self._redirect = logging_redirect_tqdm()
            self._redirect.__enter__()
            self.bar = tqdm(total=None, file=self.stream, dynamic_ncols=True, bar_format="{desc}", leave=True)
        if self.enabled:
            self._ticker = threading.Thread(target=self._tick, name="folioscan-progress", daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
        with self.lock:
            # the run is over: its last line and the run record (`numbers()`, asked later) say the same,
            # not a last-minute rate that goes on sliding while the driver writes its index and record
            self._final = self.numbers()
            if self.bar is not None:
                self._draw()
                self.bar.close()
                self.bar = None
                self._redirect.__exit__(None, None, None)
            elif self.enabled:
                self._line()

    def _tick(self) -> None:
        every = TERMINAL_REFRESH_S if self.terminal else self.every_s
        while not self._stop.wait(every):
            with self.lock:
                if self.bar is not None:
                    self._draw()
                else:
                    self._line()

    # -- what the driver and the executors tell it -------------------------------------------
    def book_started(self) -> None:
        with self.lock:
            self.books_started += 1

    def listed(self, books: int, done: bool = False) -> None:
        """The counting pass: books to process listed so far; `done`: that is all of them."""
        with self.lock:
            self.books_listed = books
            if done and self.books_total is None:
                self.books_total = books

    def listing_done(self, books: int) -> None:
        """The run's own listing ended: `books` were handed out, the exact total."""
        with self.lock:
            self.books_total = books

    def pages_read(self, doc_id: str, facts: Sequence[PageFacts]) -> None:
        """Page results of one book as they reach the driver (a batch at a time), as their facts."""
        n = sum(1 for f in facts if f.page_index != DOCUMENT_LEVEL)
        with self.lock:
            self._pages_of[doc_id] = self._pages_of.get(doc_id, 0) + n
            for f in facts:
                if f.page_index != DOCUMENT_LEVEL:
                    count = min(f.page_count, self.cap) if self.cap else f.page_count
                    self._expected[doc_id] = max(self._expected.get(doc_id, 0), count, self._pages_of[doc_id])
                    break
            self.pages_done += n
            if n:
                self._recent.append((self.clock(), n))
            if self.bar is not None:
                self._draw()

    def book_restarted(self, doc_id: str) -> None:
        """A book is read again from its first page (a lost worker): its pages so far do not count."""
        with self.lock:
            self.pages_done -= self._pages_of.pop(doc_id, 0)

    def book_back(self, doc_id: str, pages: int) -> None:
        """Every page of the book is back (`pages` of them): its page count is exact now."""
        with self.lock:
            self._expected[doc_id] = pages
            self._pages_of.pop(doc_id, None)

    def committed(self, doc_rows: Sequence[dict]) -> None:
        with self.lock:
            self.books_done += len(doc_rows)
            self.books_failed += sum(1 for d in doc_rows if d["status"] in ("error", "partial"))  # a duplicate is not failed
            if self.bar is not None:
                self._draw()

    # -- the numbers ---------------------------------------------------------------------------
    def rate(self) -> float:
        """Pages/s over the last minute (over the run so far while it is younger than that)."""
        now = self.clock()
        while self._recent and self._recent[0][0] < now - WINDOW_S:
            self._recent.popleft()
        span = min(WINDOW_S, now - self.t0)
        return sum(n for _, n in self._recent) / span if span > 0 else 0.0

    def pages_total(self) -> tuple[Optional[int], bool]:
        """(pages expected, exact?); None while no book's page count is known."""
        if not self._expected:
            return None, False
        books = self.books_total if self.books_total is not None else max(self.books_started, self.books_listed)
        unknown = max(books - len(self._expected), 0)
        known = sum(self._expected.values())
        estimate = known + round(unknown * known / len(self._expected))
        return max(estimate, self.pages_done), unknown == 0 and self.books_total is not None

    def numbers(self) -> dict:
        """What the line shows; the run record keeps the last of them (`summary.progress`)."""
        if self._final is not None:
            return dict(self._final)
        with self.lock:
            total, exact = self.pages_total()
            rate = self.rate()
            eta = None
            if total is not None and self.books_total is not None and rate > 0:
                eta = max(total - self.pages_done, 0) / rate
            return {"pages_done": self.pages_done, "pages_total": total, "pages_total_exact": exact,
                    "books_done": self.books_done, "books_total": self.books_total,
                    "books_listed": self.books_listed, "books_failed": self.books_failed,
                    "pages_per_s_last_minute": round(rate, 3), "eta_s": None if eta is None else round(eta, 1),
                    "elapsed_s": round(self.clock() - self.t0, 1)}

    def text(self) -> str:
        n = self.numbers()
        total = n["pages_total"]
        pages = f"pages {n['pages_done']}"
        if total is not None:
            pages += f"/{'' if n['pages_total_exact'] else '~'}{total}"
            if total:
                pages += f" ({min(n['pages_done'] / total, 1):.0%})"
        if n["books_total"] is not None:
            books = f"books {n['books_done']}/{n['books_total']}"
        else:
            books = f"books {n['books_done']} of {max(n['books_listed'], self.books_started)} listed so far"
        return (f"{pages}, {books}, {n['books_failed']} failed, {n['pages_per_s_last_minute']:.2f} pages/s "
                f"(last min), ETA {_clock(n['eta_s'])}, elapsed {_clock(n['elapsed_s'])}")

    def _line(self) -> None:
        print(f"progress: {self.text()}", file=self.stream, flush=True)

    def _draw(self) -> None:
        self.bar.set_description_str(self.text(), refresh=True)


def count_listing(listing: Callable[[], Iterator], wanted: Callable[[object], bool], progress: Progress,
                  stop: threading.Event) -> Optional[threading.Thread]:
    """Start the counting pass over a second listing of the source, in a thread: the books `wanted`
    (not already committed) are counted, nothing else is kept. A listing that fails here only
    leaves the total unknown until the run's own listing ends (logged)."""
    if not progress.enabled:
        return None

    def run() -> None:
        n = 0
        try:
            for doc in listing():
                if stop.is_set():
                    return
                if wanted(doc):
                    n += 1
                    if n % 100 == 0:
                        progress.listed(n)
            progress.listed(n, done=True)
        except Exception as e:
            log.warning("progress: the listing could not be counted ahead (%s: %s); the total is known when the "
                        "run's own listing ends", type(e).__name__, e)

    thread = threading.Thread(target=run, name="folioscan-listing-count", daemon=True)
    thread.start()
    return thread
