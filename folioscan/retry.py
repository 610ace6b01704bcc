"""Retry a unit of work (one object read, one page's OCR call) when it fails transiently:
exponential backoff with full jitter, so throttled workers do not come back in lockstep."""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from folioscan.failures import TRANSIENT, classify

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4  # tries, the first included
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0

    def delay(self, retry: int) -> float:
        return random.uniform(0, min(self.max_delay_s, self.base_delay_s * 2 ** retry))


def call_with_retry(fn: Callable[[], T], policy: RetryPolicy, what: str = "") -> tuple[T, int]:
    """(result, tries). A permanent failure is raised at once; a transient one after the last try.
    The exception raised carries the tries made as `attempts_made`."""
    for attempt in range(1, policy.attempts + 1):
        try:
            return fn(), attempt
        except Exception as e:
            if attempt >= policy.attempts or classify(e) != TRANSIENT:
                e.attempts_made = attempt
                raise
            pause = policy.delay(attempt - 1)
            log.info("%s: transient failure (%s: %s), try %d of %d in %.2f s",
                     what, type(e).__name__, e, attempt + 1, policy.attempts, pause)
            time.sleep(pause)
    raise AssertionError("unreachable")


def attempts_of(exc: BaseException) -> int:
    return getattr(exc, "attempts_made", 1)
