"""A progress line on stderr while the job runs (tqdm; the total is unknown with a streamed listing)."""
from __future__ import annotations

import sys


class Progress:
    def __init__(self, enabled: bool = True):
        self.enabled = enabled and sys.stderr.isatty()
        self.bar = None

    def __enter__(self) -> "Progress":
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(unit="page", desc="pages", file=sys.stderr, dynamic_ncols=True)
        self.docs = 0
        return self

    def update(self, docs: int, pages: int, failed: int) -> None:
        self.docs += docs
        if self.bar is not None:
            self.bar.update(pages)
            self.bar.set_postfix(docs=self.docs, failed=failed, refresh=False)
        else:
            print(f"committed {self.docs} documents", file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
