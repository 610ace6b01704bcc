"""What making a long book's text costs the driver at commit: peak Python memory (tracemalloc) and CPU.

    python bench/book_text_memory.py [--pages 2000]

A book of `--pages` synthetic pages (300 words with boxes on an old_books scan, as bench/memory.py's
synthetic runs) is turned into PageFacts as the driver keeps them; then, after a warm-up (language
models and lexicons load once per process): the peak of `book_text` over the whole book, and of
`repetition_score` over its text; last, `repetition_score` against the counting form it replaced
(a tuple and a counter entry per word n-gram) on the old_books ground truth repeated to about 4 MB.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
import time
import tracemalloc
from collections import Counter

sys.path.insert(0, os.path.dirname(__file__))
from evalset import OLD_BOOKS  # noqa: E402

from folioscan.pipeline.assemble import _book_text  # noqa: E402
from folioscan.pipeline.pagerows import TextFacts  # noqa: E402
from folioscan.records import PageResult, PageWork  # noqa: E402
from folioscan.text.signals import repetition_score  # noqa: E402
from folioscan.workers.engines.synthetic import SyntheticEngine  # noqa: E402


def counting_form(text: str, n: int = 5) -> float:
    """repetition_score as it was before issue 18."""
    ws = [w.lower() for w in re.findall(r"\S+", text or "")]
    if len(ws) < 2 * n:
        return 0.0
    grams = [tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)]
    counts = Counter(grams)
    covered = [False] * len(ws)
    for i, g in enumerate(grams):
        if counts[g] > 1:
            covered[i:i + n] = [True] * n
    return round(sum(covered) / len(ws), 4)


def peak(fn) -> tuple[object, float, float]:
    """fn's result, its peak of traced memory over what was held before (MB), its CPU seconds."""
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    t0 = time.process_time()
    out = fn()
    cpu = time.process_time() - t0
    top = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, round((top - base) / 2**20, 1), round(cpu, 2)


def main() -> None:
    import numpy as np
    from PIL import Image

    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=2000)
    args = ap.parse_args()
    image = np.array(Image.open(os.path.join(OLD_BOOKS, "pages", "d011.png")).convert("L"))
    engine = SyntheticEngine()
    facts = []
    for i in range(args.pages):
        [ocr] = engine.predict_batch([image[i % 7:]])
        work = PageWork("d", "/src/d.pdf", i, args.pages, width=image.shape[1], height=image.shape[0])
        facts.append(TextFacts.of(PageResult(work, "ok", ocr, "synthetic", engine.version)))
    _book_text(facts[:20])  # warm-up
    book, book_mb, book_cpu = peak(lambda: _book_text(facts))
    _, rep_mb, rep_cpu = peak(lambda: repetition_score(book.text))
    truth = "\n".join(open(f, encoding="utf-8").read() for f in sorted(glob.glob(os.path.join(OLD_BOOKS, "gt", "*.txt"))))
    big = "\n".join([truth] * max(1, round(4e6 / max(len(truth), 1))))
    new, new_mb, new_cpu = peak(lambda: repetition_score(big))
    old, old_mb, old_cpu = peak(lambda: counting_form(big))
    print(json.dumps({"benchmark": "book_text_memory", "pages": args.pages, "book_text_mb": round(len(book.text) / 2**20, 1),
                      "book_text": {"peak_mb": book_mb, "cpu_s": book_cpu},
                      "repetition_score_of_the_book_text": {"peak_mb": rep_mb, "cpu_s": rep_cpu},
                      "old_books_truth_repeated_mb": round(len(big) / 2**20, 1),
                      "repetition_score": {"peak_mb": new_mb, "cpu_s": new_cpu, "score": new},
                      "counting_form_before": {"peak_mb": old_mb, "cpu_s": old_cpu, "score": old}}, indent=2))


if __name__ == "__main__":
    main()
