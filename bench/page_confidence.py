"""Page confidence that flags bad pages: data, fit and report. Prints one JSON object.

    python bench/page_confidence.py collect [--workers 2]   # OCR old_books pages + degraded copies -> bench/results/confidence_pages.jsonl
    python bench/page_confidence.py fit                     # leave-one-book-out AUROC, reliability, coefficients

`collect` reads every old_books page as it is and once more under one random degradation
(bench/degrade.py: curl, low resolution, blur, noise, JPEG, faded ink, bleed-through; seeded),
through the pipeline's own cleaning and OCR stage, and stores what the page confidence may use
with the page's CER. A page is good when its CER is at most 3%. `fit` fits the logistic model of
folioscan/workers/page_confidence.py with each book held out in turn (its degraded copies too),
and reports the held-out AUROC of the engine's raw confidence and of the model, a reliability
table of the held-out predictions (bins of predicted P(good): mean predicted vs share good), and
the coefficients fitted on all pages (to paste into the module).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_THREAD_LIMIT", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from multiprocessing import Pool  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import degrade  # noqa: E402
from evalset import OLD_BOOKS, cer, manifest  # noqa: E402

from folioscan.workers import page_confidence as pc  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "results", "confidence_pages.jsonl")
GOOD_CER = 0.03
_stage = None


def _read(job) -> list[dict]:
    global _stage
    from folioscan.records import PageWork
    from folioscan.workers.engines.registry import TesseractOptions
    from folioscan.workers.ocr_stage import OcrStage
    from folioscan.workers.prep import PrepOptions, prepare_page

    if _stage is None:
        _stage = OcrStage(TesseractOptions(), calibrate=False)
    path, other_path, truth, book, page, seed = job
    img = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    variants = [(img, "clean")]
    if seed is not None:
        variants.append(degrade.random_degradation(img, cv2.imread(other_path, cv2.IMREAD_GRAYSCALE), np.random.default_rng(seed)))
    out = []
    for image, label in variants:
        results = _stage(prepare_page(PageWork("d", "u", 0, 1, image=image), PrepOptions()))
        text = "\n".join(r.ocr.text for r in results if r.ocr)
        r = results[0]
        out.append({"book": book, "page": page, "degradation": label, "cer": cer(text, truth), "status": r.status,
                    **pc.raw_inputs(r.ocr, r.work.prep)})
    return out


def collect(args) -> None:
    rows = manifest()
    paths = [os.path.join(OLD_BOOKS, "pages", r["page_name"] + ".png") for r in rows]
    jobs = [(paths[i], paths[(i + 7) % len(rows)], r["truth"], r["book"], r["page_name"], 1000 + i) for i, r in enumerate(rows)]
    os.makedirs(os.path.dirname(args.data), exist_ok=True)
    with Pool(args.workers) as pool, open(args.data, "w") as f:
        for recs in pool.imap_unordered(_read, jobs):
            for rec in recs:
                f.write(json.dumps(rec) + "\n")
    print(json.dumps({"collected": sum(1 for _ in open(args.data)), "data": args.data}))


def auroc(scores: np.ndarray, good: np.ndarray) -> float:
    """P(a random good page scores above a random bad page), ties counted half."""
    from scipy.stats import rankdata

    r = rankdata(scores)
    n_good, n_bad = good.sum(), (~good).sum()
    return float((r[good].sum() - n_good * (n_good + 1) / 2) / (n_good * n_bad))


def reliability(p: np.ndarray, good: np.ndarray, bins: int = 10) -> list[dict]:
    edges = np.linspace(0, 1, bins + 1)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (p >= lo) & ((p < hi) if hi < 1 else (p <= hi))
        if m.any():
            out.append({"bin": f"{lo:.1f}-{hi:.1f}", "pages": int(m.sum()), "mean_predicted": round(float(p[m].mean()), 3),
                        "share_good": round(float(good[m].mean()), 3)})
    return out


def fit(args) -> None:
    recs = [json.loads(line) for line in open(args.data)]
    recs = [r for r in recs if r["status"] != "blank"]
    X = np.array([pc.feature_vector(pc.features_from_inputs(r)) for r in recs])
    good = np.array([r["cer"] <= GOOD_CER for r in recs])
    raw = np.array([r["confidence_raw"] if r["confidence_raw"] is not None else 0.0 for r in recs])
    books = np.array([r["book"] for r in recs])
    held = np.zeros(len(recs))
    for b in sorted(set(books)):
        test = books == b
        model = pc.fit_logistic(X[~test], good[~test], l2=args.l2)
        held[test] = pc.predict(model, X[test])
    model = pc.fit_logistic(X, good, l2=args.l2)
    clean = np.array([r["degradation"] == "clean" for r in recs])
    report = {"benchmark": "page_confidence", "pages": len(recs), "good_means_cer_at_most": GOOD_CER,
              "bad_pages": int((~good).sum()), "clean_pages": int(clean.sum()), "clean_bad_pages": int((~good & clean).sum()),
              "auroc_raw_confidence": round(auroc(raw, good), 4),
              "auroc_model_leave_one_book_out": round(auroc(held, good), 4),
              "auroc_on_clean_pages": {"raw": round(auroc(raw[clean], good[clean]), 4) if (~good[clean]).any() else None,
                                       "model": round(auroc(held[clean], good[clean]), 4) if (~good[clean]).any() else None},
              "brier_leave_one_book_out": round(float(np.mean((held - good) ** 2)), 4),
              "reliability_leave_one_book_out": reliability(held, good),
              "per_book_auroc": {b: round(auroc(held[books == b], good[books == b]), 3) for b in sorted(set(books))
                                 if good[books == b].any() and (~good[books == b]).any()},
              "coefficients": {"intercept": round(model["intercept"], 4),
                               **{n: round(c, 4) for n, c in zip(pc.FEATURES, model["coef"])}},
              "means": [round(v, 4) for v in model["mean"]], "scales": [round(v, 4) for v in model["scale"]]}
    print(json.dumps(report, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("action", choices=["collect", "fit"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--l2", type=float, default=1.0)
    args = ap.parse_args()
    collect(args) if args.action == "collect" else fit(args)


if __name__ == "__main__":
    main()
