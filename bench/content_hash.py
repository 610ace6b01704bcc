"""What does hashing the source bytes (`content_sha256`, duplicates) cost next to loading them?

    python bench/content_hash.py            # old_books PDFs from ../shared/eval when present

For each PDF: the SHA-256 of its bytes (the buffer the loader already holds: no second read, for
S3 as for local files) against loading its pages (`load_pages`, no cleaning, no OCR). Also the raw
SHA-256 rate on a 64 MiB buffer. Best of `--repeat` runs each. One JSON object.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    from folioscan.pipeline.sources import pdf_document
    from folioscan.pipeline.storage import LocalStore
    from folioscan.workers.load import LoadOptions, load_pages

    ap = argparse.ArgumentParser()
    ap.add_argument("--pdfs", default=os.path.join(ROOT, "..", "shared", "eval", "old_books", "pdf"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    buf = os.urandom(64 << 20)
    out = {"sha256_MB_per_s": round(64 * 1.048576 / best(lambda: hashlib.sha256(buf).digest(), args.repeat), 1), "books": []}
    store = LocalStore()
    for path in sorted(glob.glob(os.path.join(args.pdfs, "*.pdf"))):
        data = open(path, "rb").read()
        doc = pdf_document(next(store.list(path)))
        n = 0

        def load():
            nonlocal n
            n = sum(1 for _ in load_pages(doc, lambda uri: data, LoadOptions()))

        hash_s, load_s = best(lambda: hashlib.sha256(data).digest(), args.repeat), best(load, args.repeat)
        out["books"].append({"book": os.path.basename(path), "MB": round(len(data) / 1e6, 2), "pages": n,
                             "hash_ms": round(hash_s * 1000, 2), "load_ms": round(load_s * 1000, 1),
                             "hash_over_load": round(hash_s / load_s, 5)})
    if out["books"]:
        out["total_hash_ms"] = round(sum(b["hash_ms"] for b in out["books"]), 1)
        out["total_load_ms"] = round(sum(b["load_ms"] for b in out["books"]), 1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
