"""A scheduled rerun over an output where every book is already committed: how long does skipping take?

    python bench/skip_committed.py --books 10000 --shard-docs 16
    python bench/skip_committed.py --books 10000 --s3     # source and output in S3 (moto's server on 127.0.0.1)

Builds the case with the real code: N tiny files named *.pdf (never opened: a committed book is
skipped before it is read; local doc ids hash each file's content, so each is read once by the
listing), their SourceDocuments from the real source listing, and an output committed by the real
DatasetWriter, one part pair per shard of `--shard-docs` books. Then times `run_job` on it (local
executor: no Ray start-up in the figure) and its phases. With --s3 the same through the production
S3 client against a local S3 endpoint (no network latency: a lower bound for a real store).
Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.synthetic import committed_output  # noqa: E402


def build(store, src: str, out: str, books: int, shard_docs: int) -> int:
    from folioscan.records import OcrResult, PageResult, PageWork

    return committed_output(store, src, out, books, shard_docs, lambda d: [
        PageResult(PageWork(d.doc_id, d.uri, 0, 1), "ok", OcrResult(f"text of {d.uri}", [], 0.9), "tesseract", "5")])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--books", type=int, default=10_000)
    ap.add_argument("--shard-docs", type=int, default=16)
    ap.add_argument("--s3", action="store_true", help="source and output in S3 (a local moto server)")
    args = ap.parse_args()
    from folioscan.pipeline.config import JobConfig
    from folioscan.pipeline.job import run_job
    from folioscan.pipeline.output import DatasetWriter
    from folioscan.pipeline.sources import iter_documents
    from folioscan.pipeline.storage import LocalStore, S3Store

    with tempfile.TemporaryDirectory() as tmp:
        endpoint, server = None, None
        if args.s3:
            import boto3
            from moto.server import ThreadedMotoServer

            for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                os.environ.setdefault(k, "bench")
            os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
            import logging

            logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the server logs every request
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            server.start()
            endpoint = "http://127.0.0.1:%d" % server._server.server_port
            boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
            store, src, out = S3Store(endpoint), "s3://bench/src", "s3://bench/out"
        else:
            store, src, out = LocalStore(), os.path.join(tmp, "src"), os.path.join(tmp, "out")
        t0 = time.perf_counter()
        parts = build(store, src, out, args.books, args.shard_docs)
        build_s = time.perf_counter() - t0
        # the phases, timed alone
        t0 = time.perf_counter()
        committed = DatasetWriter(store, out, "probe").committed_doc_ids()
        ids_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        listed = sum(1 for _ in iter_documents(store, src + ("/" if args.s3 else "")))
        list_s = time.perf_counter() - t0
        # the whole rerun, as a scheduled run does it
        t0 = time.perf_counter()
        summary = run_job(JobConfig(source=src + ("/" if args.s3 else ""), output=out, executor="local",
                                    progress=False, shard_docs=args.shard_docs, endpoint_url=endpoint))
        rerun_s = time.perf_counter() - t0
        if server:
            server.stop()
    print(json.dumps({
        "store": "s3 (moto, 127.0.0.1)" if args.s3 else "local", "books": args.books, "parts": parts, "build_seconds": round(build_s, 2),
        "committed_ids": len(committed), "read_committed_ids_seconds": round(ids_s, 3),
        "listed_documents": listed, "list_seconds": round(list_s, 3),
        "rerun_seconds": round(rerun_s, 3), "rerun_documents_skipped": summary.documents_skipped,
        "rerun_documents_processed": summary.documents, "books_skipped_per_s": round(summary.documents_skipped / rerun_s),
    }, indent=1))


if __name__ == "__main__":
    main()
