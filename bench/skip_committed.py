"""A scheduled rerun over an output where every book is already committed: how long until the first
new book is started, and how much memory the driver holds?

    python bench/skip_committed.py --books 10000 --shard-docs 16                  # local folders, real writer
    python bench/skip_committed.py --books 1000000 --s3                           # S3 (moto), compacted index
    python bench/skip_committed.py --books 200000 --s3 --layout legacy            # the same, no index (today's layout)
    python bench/skip_committed.py --books 10000 --s3 --full                      # the whole rerun, not just its start

Local: N tiny files named *.pdf (never opened: a committed book is skipped before it is read; local doc
ids hash each file's content, so each is read once by the listing), an output committed by the real
DatasetWriter, one part pair per shard of `--shard-docs` books, and `--new` books added to the source.
--s3: a moto server in a process of its own, filled straight into moto's store (bench/moto_fixture.py:
a million PUTs over HTTP would take an hour here), reached through the production S3 client (no
network latency: a lower bound for a real store). `--layout compacted`: the committed index
(pipeline/compacted.py) covers all but the last `--legacy-parts` parts; `legacy`: documents parts only.

Then `run_job` (local executor: no Ray start-up in the figure) from its call until the first new book
is handed to the executor (`first_new_book_seconds`); without --full the run is then stopped as
SIGTERM stops it. `driver_peak_rss_mb`: this process's peak RSS (ru_maxrss) at that moment and at the
end; the moto server's memory is not in it. The driver's CPU seconds to the first new book and the
machine's load average are printed beside the wall time (this machine is shared). Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if "--code" in sys.argv:  # another checkout's folioscan (the code before the compacted index, to compare)
    sys.path.insert(0, os.path.abspath(sys.argv[sys.argv.index("--code") + 1]))

from bench.synthetic import committed_output  # noqa: E402


def build(store, src: str, out: str, books: int, shard_docs: int) -> int:
    from folioscan.records import OcrResult, PageResult, PageWork

    return committed_output(store, src, out, books, shard_docs, lambda d: [
        PageResult(PageWork(d.doc_id, d.uri, 0, 1), "ok", OcrResult(f"text of {d.uri}", [], 0.9), "tesseract", "5")])


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def moto_fixture(args) -> tuple[subprocess.Popen, dict]:
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.Popen([sys.executable, os.path.join(here, "moto_fixture.py"), "--books", str(args.books),
                             "--new", str(args.new), "--shard-docs", str(args.shard_docs), "--layout", args.layout,
                             "--legacy-parts", str(args.legacy_parts)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"moto fixture failed (exit {proc.wait()})")
    return proc, json.loads(line)


def timed_rerun(cfg, full: bool) -> dict:
    """run_job, timed to its first new book started; stopped there (SIGTERM, as a scheduler stops it)
    unless `full`."""
    from folioscan.pipeline import job

    seen: dict = {}
    make = job.make_executor

    def make_executor(cfg, stages):
        executor = make(cfg, stages)
        submit = executor.submit

        def first_submit(doc):
            if "first" not in seen:
                seen["first"], seen["rss"], seen["uri"] = time.perf_counter(), peak_rss_mb(), doc.uri
                seen["cpu"], seen["load"] = cpu_seconds() - cpu0, os.getloadavg()[0]
                if not full:
                    os.kill(os.getpid(), signal.SIGTERM)
            return submit(doc)

        executor.submit = first_submit
        return executor

    job.make_executor = make_executor
    cpu0 = cpu_seconds()
    try:
        t0 = time.perf_counter()
        summary = job.run_job(cfg)
        seconds = time.perf_counter() - t0
    finally:
        job.make_executor = make
    return {"first_new_book_seconds": round(seen["first"] - t0, 2) if seen else None, "first_new_book": seen.get("uri"),
            "driver_peak_rss_mb_at_first_new_book": seen.get("rss"),
            "driver_cpu_seconds_at_first_new_book": round(seen["cpu"], 2) if seen else None,
            "machine_load_average_at_first_new_book": seen.get("load"), "rerun_seconds": round(seconds, 2),
            "rerun_status": summary.status, "rerun_documents_skipped": summary.documents_skipped,
            "rerun_documents_processed": summary.documents, "committed_index": getattr(summary, "committed_index", None)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--books", type=int, default=10_000)
    ap.add_argument("--new", type=int, default=10, help="books added to the source after the committed run")
    ap.add_argument("--shard-docs", type=int, default=16)
    ap.add_argument("--s3", action="store_true", help="source and output in S3 (a moto server in its own process)")
    ap.add_argument("--layout", choices=("compacted", "legacy"), default="compacted", help="--s3: the output's layout")
    ap.add_argument("--legacy-parts", type=int, default=100, help="--s3 compacted: parts left uncovered by the index")
    ap.add_argument("--full", action="store_true", help="run the whole rerun, not just until the first new book")
    ap.add_argument("--code", help="a checkout whose folioscan runs the rerun (e.g. the main branch before the index)")
    args = ap.parse_args()
    from folioscan.pipeline.config import JobConfig
    from folioscan.pipeline.storage import LocalStore

    info: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        proc = None
        if args.s3:
            for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                os.environ.setdefault(k, "bench")
            os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
            proc, info = moto_fixture(args)
            endpoint = f"http://127.0.0.1:{info['port']}"
            src, out = "s3://bench-src/src/", "s3://bench-out/out"
        else:
            from bench.moto_fixture import new_positions

            store, endpoint = LocalStore(), None
            src, out = os.path.join(tmp, "src"), os.path.join(tmp, "out")
            t0 = time.perf_counter()
            info["parts"] = build(store, src, out, args.books, args.shard_docs)
            for i in new_positions(args.books, args.new):
                store.write(os.path.join(src, f"book_{i:06d}n.pdf"), b"%%PDF-1.4 new %d\n%%%%EOF\n" % i)
            info["build_seconds"] = round(time.perf_counter() - t0, 2)
        rss_before = peak_rss_mb()
        try:
            rerun = timed_rerun(JobConfig(source=src, output=out, executor="local", progress=False, grace_s=30,
                                          shard_docs=args.shard_docs, endpoint_url=endpoint), args.full)
        finally:
            if proc is not None:  # a million objects take moto minutes to free: ended, not waited for
                proc.kill()
                proc.wait()
    print(json.dumps({
        "store": "s3 (moto in its own process, 127.0.0.1)" if args.s3 else "local", "layout": args.layout if args.s3 else "real writer",
        "code": os.path.dirname(os.path.dirname(__import__("folioscan").__file__)),
        "books": args.books, "new_books": args.new, "fixture": info, "driver_peak_rss_mb_before_rerun": rss_before,
        **rerun, "driver_peak_rss_mb": peak_rss_mb(),
    }, indent=1))


if __name__ == "__main__":
    main()
