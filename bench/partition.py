"""Several drivers over one source: does `--partition K/N` cut claim traffic, and is `--steal` worth it?

    python bench/partition.py --books 12 --late 15

Runs N driver processes (`folioscan run --executor local --shard-docs 1`, real Tesseract on real
scanned PDFs of 2 pages each) over one source and one output, in four set-ups:
  whole      no partition: every driver lists every book and tries to claim it
  shares     --partition k/N
  late       --partition k/N, the last driver starts `--late` seconds after the others (a pod that is
             slow to schedule, a driver restarted after a crash)
  late+steal the same with --steal
and prints, per set-up, the makespan (first start to last committed book), the claims lost to
another driver (`documents_claimed_elsewhere`, each a claim attempt wasted), books stolen, and
whether every page was committed exactly once. One JSON object.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def make_source(src: str, books: int) -> None:
    from tests.helpers import PARAGRAPHS, scanned_pdf, text_page_image

    os.makedirs(src)
    for i in range(books):
        pages = [text_page_image(f"Book {i}, page {p}. " + PARAGRAPHS[(i + p) % 3], dpi=100) for p in range(2)]
        with open(os.path.join(src, f"book{i:03d}.pdf"), "wb") as f:
            f.write(scanned_pdf(pages, dpi=100))


def start(src, out, run_id, extra, tmp):
    cmd = [sys.executable, "-m", "folioscan", "run", src, out, "--executor", "local", "--shard-docs", "1", "--quiet",
           "--no-prep", "--summary-json", os.path.join(tmp, f"{run_id}.json"), *extra]
    env = {**os.environ, "FOLIOSCAN_RUN_ID": run_id, "PYTHONPATH": ROOT, "OMP_THREAD_LIMIT": "1"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def setup(src: str, tmp: str, name: str, n: int, late: float, books: int) -> dict:
    import pandas as pd
    import pyarrow.parquet as pq

    out = os.path.join(tmp, name)
    extra = {"whole": lambda k: [], "shares": lambda k: ["--partition", f"{k}/{n}"],
             "late": lambda k: ["--partition", f"{k}/{n}"],
             "late+steal": lambda k: ["--partition", f"{k}/{n}", "--steal"]}[name]
    t0 = time.time()
    procs = [start(src, out, f"{name.replace('+', '-')}{k}", extra(k), tmp) for k in range(n - 1)]
    if name.startswith("late"):
        time.sleep(late)
    procs.append(start(src, out, f"{name.replace('+', '-')}{n - 1}", extra(n - 1), tmp))
    for p in procs:
        _, err = p.communicate(timeout=1800)
        if p.returncode != 0:
            raise SystemExit(err)
    docs = pd.concat([pq.read_table(f).to_pandas() for f in glob.glob(f"{out}/documents/*.parquet")])
    pages = pd.concat([pq.read_table(f).to_pandas() for f in glob.glob(f"{out}/pages/*.parquet")])
    makespan = (docs.processed_at.max().timestamp() - t0)
    summaries = [json.load(open(os.path.join(tmp, f"{name.replace('+', '-')}{k}.json"))) for k in range(n)]
    return {"makespan_s": round(makespan, 1),
            "claims_lost": sum(s["documents_claimed_elsewhere"] for s in summaries),
            "books_per_driver": [s["documents"] for s in summaries],
            "stolen": sum(s["documents_stolen"] for s in summaries),
            "exactly_once": bool(len(docs) == books and docs.doc_id.is_unique and len(pages) == 2 * books
                                 and (pages.groupby(["doc_id", "page_index"]).size() == 1).all())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--books", type=int, default=12)
    ap.add_argument("--drivers", type=int, default=3)
    ap.add_argument("--late", type=float, default=15.0)
    ap.add_argument("--setups", default="whole,shares,late,late+steal")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "src")
        make_source(src, args.books)
        result = {"books": args.books, "pages_per_book": 2, "drivers": args.drivers, "late_s": args.late,
                  "cpus": os.cpu_count()}
        for name in args.setups.split(","):
            result[name] = setup(src, tmp, name, args.drivers, args.late, args.books)
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
