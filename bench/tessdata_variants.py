"""Tesseract language data, fast against standard, on ../shared/eval/old_books. Prints one JSON object.

Both engines live in this process and read every page in turn (fast, then standard), one thread
each (OMP_THREAD_LIMIT=1), so the machine's noise hits both alike. Pages are the eval PNGs as
they are (clean, upright): this measures the language data, not the cleaning.

    python bench/tessdata_variants.py [--every 1] [--lang eng]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_THREAD_LIMIT", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import cv2  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from evalset import OLD_BOOKS, cer, manifest  # noqa: E402

from folioscan.workers.engines.tessdata import VARIANTS  # noqa: E402
from folioscan.workers.engines.tesseract import TesseractEngine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--lang", default="eng")
    args = ap.parse_args()
    rows = manifest()[:: args.every]
    engines = {v: TesseractEngine(args.lang, variant=v) for v in VARIANTS}
    per = {v: {"cer": [], "s": [], "conf": []} for v in VARIANTS}
    for r in rows:
        img = cv2.imread(os.path.join(OLD_BOOKS, "pages", r["page_name"] + ".png"), cv2.IMREAD_GRAYSCALE)
        for v, eng in engines.items():
            t0 = time.perf_counter()
            out = eng.predict_batch([img])[0]
            per[v]["s"].append(time.perf_counter() - t0)
            per[v]["cer"].append(cer(out.text, r["truth"]))
            per[v]["conf"].append(out.confidence or 0.0)
    report = {"benchmark": "tessdata_variants", "eval": "old_books", "pages": len(rows), "lang": args.lang,
              "threads": os.environ["OMP_THREAD_LIMIT"], "variants": {}}
    for v, d in per.items():
        report["variants"][v] = {"version": engines[v].version, "mean_cer": round(statistics.mean(d["cer"]), 4),
                                 "median_cer": round(statistics.median(d["cer"]), 4),
                                 "pages_per_s": round(len(rows) / sum(d["s"]), 3),
                                 "mean_confidence": round(statistics.mean(d["conf"]), 4)}
        report["variants"][v]["pages_over_3pct_cer"] = sum(c > 0.03 for c in d["cer"])
    f, s = report["variants"]["fast"], report["variants"]["standard"]
    report["fast_vs_standard"] = {"speed": round(f["pages_per_s"] / s["pages_per_s"], 3),
                                  "mean_cer": round(f["mean_cer"] / max(s["mean_cer"], 1e-9), 3),
                                  "pages_fast_better": sum(a < b for a, b in zip(per["fast"]["cer"], per["standard"]["cer"])),
                                  "pages_standard_better": sum(a > b for a, b in zip(per["fast"]["cer"], per["standard"]["cer"]))}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
