"""Graceful stop on SIGTERM (how Kubernetes and `ray job stop` stop a driver) and SIGINT (Ctrl-C).

The first signal asks the run to stop: no more books are handed out, the books in flight have
`grace_s` seconds (`JobConfig.grace_s`) to finish and be committed, then the claims of every
unfinished book are released and the run record is written with `status: interrupted`; the CLI
exits 128 + the signal's number (143 for SIGTERM, 130 for SIGINT). A second signal stops at once:
it raises `Interrupted` in the main thread, and the same clean-up follows (claims released, record
written), during which further signals are noted, not raised; a third kills the process outright,
for a clean-up that hangs.

Python runs signal handlers in the main thread only, between bytecodes: a long C call (one OCR
batch) finishes before the handler runs.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator, Optional

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(BaseException):
    """A second stop signal: stop now. A BaseException, like KeyboardInterrupt, so that no `except
    Exception` on the way (a per-book error handler, a retry loop) swallows it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Stop:
    def __init__(self, grace_s: float):
        self.grace_s = grace_s
        self.signum: Optional[int] = None  # the first signal received
        self.signals = 0
        self.at: Optional[float] = None  # monotonic time of the first signal
        self.hard = False  # a second signal stopped the run at once
        self._shielded = False  # cleaning up: a further signal must not interrupt it
        self._previous: dict[int, object] = {}

    # -- handlers -----------------------------------------------------------------------------
    def install(self) -> None:
        """Take SIGTERM and SIGINT (again: `ray.init` sets its own SIGTERM handler). Main thread only."""
        if threading.current_thread() is not threading.main_thread():
            return
        for s in SIGNALS:
            previous = signal.signal(s, self._handle)
            if previous != self._handle and s not in self._previous:
                self._previous[s] = previous

    def restore(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for s, previous in self._previous.items():
            signal.signal(s, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    @contextmanager
    def handling(self) -> Iterator["Stop"]:
        """Signals handled inside; the handlers before are put back after, unless they were ours."""
        was_installed = bool(self._previous)
        self.install()
        try:
            yield self
        finally:
            if not was_installed:
                self.restore()

    def _handle(self, signum: int, _frame) -> None:
        self.signals += 1
        if self.signals == 1:
            self.signum, self.at = signum, time.monotonic()
            if self._shielded:
                _say(f"{self.name}: the run is already ending (another signal kills at once)")
                self.signals = 2  # the next one is the third
                return
            _say(f"{self.name}: stopping; no new books, the books in flight have {self.grace_s:g} s to finish "
                 f"(another signal stops at once)")
            return
        if self.signals == 2 and not self._shielded:
            self.hard = True
            _say(f"{signal.Signals(signum).name} again: stopping now; releasing claims and writing the run record")
            raise Interrupted(signum)
        if self.signals == 2:
            _say("already stopping: releasing claims and writing the run record (another signal kills at once)")
            return
        # a third signal: the clean-up hangs, or the user insists; die as the signal would by default
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def shield(self) -> None:
        """The run is over and cleaning up (claims, run record): from now on a second signal is
        noted, not raised."""
        self._shielded = True

    # -- state --------------------------------------------------------------------------------
    @property
    def requested(self) -> bool:
        return self.signum is not None

    def expired(self) -> bool:
        """The grace period is over (or a second signal came): in-flight books are abandoned."""
        return self.hard or (self.at is not None and time.monotonic() - self.at >= self.grace_s)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as a shell reports a process killed by it: 143 SIGTERM, 130 SIGINT."""
        return 128 + int(self.signum) if self.signum is not None else 0


def _say(line: str) -> None:
    """One line on the terminal's stderr. `sys.stderr` is the terminal even while fd 2 is pointed at
    Ray's log file (quiet.native_stderr). A handler may run while the main thread is writing to
    stderr itself; a reentrant write raises, and the line is then dropped rather than the run."""
    try:
        print(f"folioscan: {line}", file=sys.stderr, flush=True)
    except (RuntimeError, OSError, ValueError):
        pass
