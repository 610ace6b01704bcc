"""Does VLM confidence predict errors? Reads ../shared/eval/old_books with a REAL model at each budget
and reports CER per budget and the correlation of several confidence statistics with CER.
Needs real weights (a local directory) and, in practice, a GPU. Prints one JSON object.

    python bench/vlm_calibration.py --model-kind deepseek-ocr-2 --model /models/DeepSeek-OCR-2 --every 2
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys

import cv2

sys.path.insert(0, os.path.dirname(__file__))
from evalset import OLD_BOOKS, cer, manifest  # noqa: E402


def pearson(xs: list[float], ys: list[float]) -> float | None:
    try:
        return round(statistics.correlation(xs, ys), 3)
    except statistics.StatisticsError:  # fewer than two points, or a constant input
        return None


def main() -> None:
    from folioscan.workers.engines.registry import VlmOptions
    from folioscan.workers.engines.vlm.budgets import BUDGETS, max_new_tokens
    from folioscan.workers.engines.vlm.transformers_backend import TransformersBackend

    ap = argparse.ArgumentParser()
    ap.add_argument("--model-kind", default="deepseek-ocr-2", choices=list(BUDGETS))
    ap.add_argument("--model", required=True)
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, help="default: from the budget")
    args = ap.parse_args()
    backend = TransformersBackend(VlmOptions(kind=args.model_kind, model=args.model))
    rows = manifest()[:: args.every]
    images = [cv2.imread(os.path.join(OLD_BOOKS, "pages", r["page_name"] + ".png"), cv2.IMREAD_GRAYSCALE) for r in rows]
    report = {"benchmark": "vlm_calibration", "model": args.model, "pages": len(rows), "budgets": {}}
    for budget in BUDGETS[args.model_kind]:
        stats = []
        for i in range(0, len(images), args.batch_size):
            prepared = backend.prepare(images[i:i + args.batch_size], budget)
            gens = backend.generate(prepared, [args.max_new_tokens or max_new_tokens(v, 10.0) for v in prepared.vision_tokens])
            for g, r in zip(gens, rows[i:i + args.batch_size]):
                text = backend.batch_decode([g.token_ids])[0]
                lps = g.logprobs or [0.0]
                stats.append({"cer": cer(text, r["truth"]), "geo_mean": math.exp(statistics.mean(lps)),
                              "min": math.exp(min(lps)), "p05": math.exp(sorted(lps)[len(lps) // 20])})
        cers = [s["cer"] for s in stats]
        report["budgets"][budget.name] = {
            "mean_cer": round(statistics.mean(cers), 4), "median_cer": round(statistics.median(cers), 4),
            "pearson_with_cer": {k: pearson([s[k] for s in stats], cers) for k in ("geo_mean", "min", "p05")},
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
