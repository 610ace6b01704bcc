"""A scheduled rerun over an output where every book is already committed: how long does skipping take?

    python bench/skip_committed.py --books 10000 --shard-docs 16

Builds the case with the real code: N tiny files named *.pdf (never opened: a committed book is
skipped before it is read; local doc ids hash each file's content, so each is read once by the
listing), their SourceDocuments from the real source listing, and an output committed by the real
DatasetWriter, one part pair per shard of `--shard-docs` books. Then times `run_job` on it (local
executor: no Ray start-up in the figure) and its phases. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build(src: str, out: str, books: int, shard_docs: int) -> int:
    from folioscan.pipeline.assemble import assemble_shard
    from folioscan.pipeline.output import DatasetWriter
    from folioscan.pipeline.sources import iter_documents
    from folioscan.pipeline.storage import LocalStore
    from folioscan.records import OcrResult, PageResult, PageWork

    os.makedirs(src)
    for i in range(books):
        with open(os.path.join(src, f"book_{i:06d}.pdf"), "wb") as f:
            f.write(b"%%PDF-1.4 placeholder %d\n%%%%EOF\n" % i)
    store = LocalStore()
    docs = list(iter_documents(store, src))
    writer = DatasetWriter(store, out, "20260101T000000Z-bench0")
    parts = 0
    for k in range(0, len(docs), shard_docs):
        shard = docs[k:k + shard_docs]
        results = [PageResult(PageWork(d.doc_id, d.uri, 0, 1), "ok", OcrResult(f"text of {d.uri}", [], 0.9),
                              "tesseract", "5") for d in shard]
        writer.commit(*assemble_shard(shard, results, writer.run_id))
        parts += 1
    return parts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--books", type=int, default=10_000)
    ap.add_argument("--shard-docs", type=int, default=16)
    args = ap.parse_args()
    from folioscan.pipeline.config import JobConfig
    from folioscan.pipeline.job import run_job
    from folioscan.pipeline.output import DatasetWriter
    from folioscan.pipeline.sources import iter_documents
    from folioscan.pipeline.storage import LocalStore

    with tempfile.TemporaryDirectory() as tmp:
        src, out = os.path.join(tmp, "src"), os.path.join(tmp, "out")
        t0 = time.perf_counter()
        parts = build(src, out, args.books, args.shard_docs)
        build_s = time.perf_counter() - t0
        # the phases, timed alone
        t0 = time.perf_counter()
        committed = DatasetWriter(LocalStore(), out, "probe").committed_doc_ids()
        ids_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        listed = sum(1 for _ in iter_documents(LocalStore(), src))
        list_s = time.perf_counter() - t0
        # the whole rerun, as a scheduled run does it
        t0 = time.perf_counter()
        summary = run_job(JobConfig(source=src, output=out, executor="local", progress=False,
                                    shard_docs=args.shard_docs))
        rerun_s = time.perf_counter() - t0
    print(json.dumps({
        "books": args.books, "parts": parts, "build_seconds": round(build_s, 2),
        "committed_ids": len(committed), "read_committed_ids_seconds": round(ids_s, 3),
        "listed_documents": listed, "list_and_hash_seconds": round(list_s, 3),
        "rerun_seconds": round(rerun_s, 3), "rerun_documents_skipped": summary.documents_skipped,
        "rerun_documents_processed": summary.documents, "books_skipped_per_s": round(summary.documents_skipped / rerun_s),
    }, indent=1))


if __name__ == "__main__":
    main()
