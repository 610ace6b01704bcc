"""`folioscan report` over a large output: seconds and peak memory.

    python bench/report_scale.py --books 10000 --pages-per-book 20

Builds the output with the real writer (as bench/skip_committed.py does, with N pages per book and
page text of realistic length), then times `write_report` and samples this process's RSS. The
sources are placeholders, so the 12 thumbnails come out as "not renderable" (that path is timed
too). Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.evalset import PeakRss  # noqa: E402
from bench.synthetic import committed_output  # noqa: E402

TEXT = ("It was the best of times, it was the worst of times, it was the age of wisdom. " * 24)[:1800]


def build(src: str, out: str, books: int, pages: int, shard_docs: int) -> int:
    import random

    from folioscan.pipeline.storage import LocalStore
    from folioscan.records import OcrResult, PageResult, PageWork

    rng = random.Random(0)

    def pages_of(d):
        results = []
        for p in range(pages):
            work = PageWork(d.doc_id, d.uri, p, pages, load_ms=30.0)
            work.prep.prep_ms = 40.0
            results.append(PageResult(work, "ok", OcrResult(TEXT, [], rng.betavariate(20, 2)), "tesseract", "5",
                                      ocr_ms=600.0))
        return results

    return committed_output(LocalStore(), src, out, books, shard_docs, pages_of)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--books", type=int, default=10_000)
    ap.add_argument("--pages-per-book", type=int, default=20)
    ap.add_argument("--shard-docs", type=int, default=16)
    args = ap.parse_args()
    from folioscan.report import write_report

    with tempfile.TemporaryDirectory() as tmp:
        src, out = os.path.join(tmp, "src"), os.path.join(tmp, "out")
        t0 = time.perf_counter()
        parts = build(src, out, args.books, args.pages_per_book, args.shard_docs)
        build_s = time.perf_counter() - t0
        with PeakRss() as before:
            time.sleep(0.5)
        with PeakRss(every=0.05) as rss:
            t0 = time.perf_counter()
            write_report(out, os.path.join(tmp, "report.html"))
            seconds = time.perf_counter() - t0
        size = os.path.getsize(os.path.join(tmp, "report.html"))
    pages = args.books * args.pages_per_book
    print(json.dumps({"books": args.books, "pages": pages, "parts": parts, "build_seconds": round(build_s, 1),
                      "report_seconds": round(seconds, 2), "pages_per_s": round(pages / seconds),
                      "rss_before_mb": before.peak_mb, "peak_rss_during_mb": rss.peak_mb,
                      "report_kb": round(size / 1024)}, indent=1))


if __name__ == "__main__":
    main()
