"""End-to-end CPU benchmark on ../shared/eval/old_books: pages/s, peak RSS and CER per engine.

Runs the real job (`folioscan run`, Ray or in-process) over the eval PDFs, then scores the
`pages` table against the ground truth. Prints one JSON object.

    python bench/cpu_engines.py [--engines tesseract rapidocr] [--executor ray] [--books a b] [--no-prep]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(__file__))
from evalset import OLD_BOOKS, PeakRss, cer, manifest, wer  # noqa: E402


def run_engine(engine: str, args, src: str) -> dict:
    out = tempfile.mkdtemp(prefix=f"bench-{engine}-")
    cmd = [sys.executable, "-m", "folioscan", "run", src, out, "--engine", engine, "--executor", args.executor, "--quiet"]
    cmd += ["--no-prep"] if args.no_prep else []
    t0 = time.perf_counter()
    with PeakRss(os.getpid()) as rss:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{engine} run failed:\n{proc.stderr[-3000:]}")
    pages = pq.read_table(os.path.join(out, "pages")).to_pandas()
    return {"out": out, "seconds": seconds, "peak_rss_mb": rss.peak_mb, "pages": pages}


def score(pages, rows) -> dict:
    by_key = {(os.path.basename(r["source_uri"]), int(r["page_index"])): r for r in pages.to_dict("records")}
    cers, wers, confs = [], [], []
    for m in rows:
        page = by_key.get((os.path.basename(m["pdf"]), m["page_index"]))
        text = (page or {}).get("text") or ""
        cers.append(cer(text, m["truth"]))
        wers.append(wer(text, m["truth"]))
        confs.append((page or {}).get("confidence"))
    paired = [(c, e) for c, e in zip(confs, cers) if c is not None]
    corr = statistics.correlation([c for c, _ in paired], [e for _, e in paired]) if len(paired) > 2 else None
    return {"pages_scored": len(cers), "mean_cer": round(statistics.mean(cers), 4), "median_cer": round(statistics.median(cers), 4),
            "mean_wer": round(statistics.mean(wers), 4), "confidence_vs_cer_pearson": round(corr, 3) if corr else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engines", nargs="+", default=["tesseract", "rapidocr"])
    ap.add_argument("--executor", default="ray", choices=["ray", "local"])
    ap.add_argument("--books", nargs="+", help="subset of books (a..f); default all 178 pages")
    ap.add_argument("--no-prep", action="store_true")
    args = ap.parse_args()
    rows = [r for r in manifest() if not args.books or r["book"] in args.books]
    src = tempfile.mkdtemp(prefix="bench-src-")
    for pdf in sorted({r["pdf"] for r in rows}):
        os.symlink(os.path.join(os.path.abspath(OLD_BOOKS), pdf), os.path.join(src, os.path.basename(pdf)))
    report = {"benchmark": "cpu_engines", "eval": "old_books", "executor": args.executor, "prep": not args.no_prep,
              "cpus": os.cpu_count(), "engines": {}}
    for engine in args.engines:
        r = run_engine(engine, args, src)
        report["engines"][engine] = {"pages": len(r["pages"]), "seconds": round(r["seconds"], 1),
                                     "pages_per_s": round(len(r["pages"]) / r["seconds"], 3),
                                     "peak_rss_mb": r["peak_rss_mb"], **score(r["pages"], rows)}
    names = list(report["engines"])
    if len(names) > 1:
        base = report["engines"][names[0]]
        report["ratios_vs_" + names[0]] = {n: {"speed": round(report["engines"][n]["pages_per_s"] / base["pages_per_s"], 3),
                                              "mean_cer": round(report["engines"][n]["mean_cer"] / max(base["mean_cer"], 1e-9), 3)}
                                          for n in names[1:]}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
