"""Page confidence that flags bad pages: data, fit and report. Prints one JSON object.

    python bench/page_confidence.py collect [--workers 2] [--tessdata standard]  # OCR -> bench/results/confidence_pages[_standard].jsonl
    python bench/page_confidence.py collect-rendered [--workers 2]              # rendered pages -> bench/results/confidence_rendered.jsonl
    python bench/page_confidence.py fit [--tessdata standard] [--l2 1.0] [--no-rendered]  # held-out AUROC, reliability, coefficients
    python bench/page_confidence.py routing                                      # what routing low-confidence pages to a second engine buys

`collect` reads every old_books page as it is, once more under one random degradation
(bench/degrade.py: curl, low resolution, blur, noise, JPEG, faded ink, bleed-through; seeded) and
at two low resolutions (LOWRES_DPI, in turn), through the pipeline's own cleaning and OCR stage,
and stores what the page confidence may use with the OCR text. `fit` computes each page's CER
against the ground truth (bench/evalset.cer: a page is good when its CER is at most 3%), fits the
logistic model of folioscan/workers/page_confidence.py with each book held out in turn (its
degraded copies too), and reports the held-out AUROC of the engine's raw confidence and of the
model (on everything, on the scans alone, and on the scans without the pages whose ground truth
differs from the print, bench/gt_audit.json), Brier score, a reliability table of the held-out
predictions, the low-resolution pages called good while bad, and the coefficients fitted on all
pages (to paste into the module). `collect-rendered` reads clean pages unlike old_books (numbers,
symbols, German; serif, sans, monospace; 8-14 pt at 300 dpi), each also at low resolution and
blurred; `fit` holds them out as one more book and lists their held-out predictions apart (every
other figure is on old_books alone).
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
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests.helpers renders the unfamiliar pages
import degrade  # noqa: E402
from evalset import OLD_BOOKS, cer, manifest  # noqa: E402

from folioscan.text.accuracy import auroc, reliability  # noqa: E402
from folioscan.workers import page_confidence as pc  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "results", "confidence_pages.jsonl")
# clean pages unlike old_books (tests/helpers.unfamiliar_page: numbers, symbols, German, prose in
# serif, sans and monospace, 8-14 pt at 300 dpi), each again under one seeded degradation; one more
# "book" of the leave-one-book-out fit (issue 19 item 4)
RENDERED = os.path.join(os.path.dirname(__file__), "results", "confidence_rendered.jsonl")
RENDERED_KINDS = ("prose", "numbers", "symbols", "german")
RENDERED_FONTS = ("serif", "sans", "mono")
RENDERED_PT = (8, 11, 14)
AUDIT = os.path.join(os.path.dirname(__file__), "gt_audit.json")
GOOD_CER = 0.03
_stage = None
_VARIANT = "fast"
LOWRES_DPI = (40, 45, 50, 55, 60, 70)  # each page again at two of these, in turn: the low-resolution cases of issue 9


def _init(variant: str) -> None:
    global _VARIANT
    _VARIANT = variant


def _read(job) -> list[dict]:
    global _stage
    from folioscan.records import PageWork
    from folioscan.workers.engines.registry import TesseractOptions
    from folioscan.workers.ocr_stage import OcrStage
    from folioscan.workers.prep import PrepOptions, prepare_page

    if _stage is None:
        _stage = OcrStage(TesseractOptions(variant=_VARIANT), calibrate=False)
    path, other_path, truth, book, page, seed, lowres_dpis = job
    img = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    variants = [(img, "clean")]
    if seed is not None:
        variants.append(degrade.random_degradation(img, cv2.imread(other_path, cv2.IMREAD_GRAYSCALE), np.random.default_rng(seed)))
    for dpi in lowres_dpis:
        variants.append((degrade.lowres(img, dpi), f"lowres:{dpi}"))
    out = []
    for image, label in variants:
        results = _stage(prepare_page(PageWork("d", "u", 0, 1, image=image), PrepOptions()))
        text = "\n".join(r.ocr.text for r in results if r.ocr)
        r = results[0]
        out.append({"book": book, "page": page, "degradation": label, "cer": cer(text, truth), "status": r.status,
                    "engine_version": _stage.engine.version, **pc.raw_inputs(r.ocr, r.work.prep),
                    # kept for trying candidate features; the model does not use them
                    "line_words": [[[w.text, round(w.confidence, 4)] for w in l.words] for l in (r.ocr.lines if r.ocr else [])],
                    "est_chars": r.work.prep.est_chars, "n_lines": r.work.prep.n_lines})
    return out


def _read_rendered(job) -> list[dict]:
    global _stage
    from folioscan.records import PageWork
    from folioscan.workers.engines.registry import TesseractOptions
    from folioscan.workers.ocr_stage import OcrStage
    from folioscan.workers.prep import PrepOptions, prepare_page
    from tests.helpers import unfamiliar_page

    if _stage is None:
        _stage = OcrStage(TesseractOptions(variant=_VARIANT), calibrate=False)
    kind, font, pt, seed = job
    img, truth = unfamiliar_page(kind, font, pt, seed=seed)
    rng = np.random.default_rng(seed)
    low = (degrade.lowres(img, int(rng.choice([40, 45, 50, 60]))), "lowres")
    blurred = (degrade.blur(img, float(rng.uniform(2.0, 4.0))), "blur")
    out = []
    for image, label in [(img, "clean"), low, blurred]:
        results = _stage(prepare_page(PageWork("d", "u", 0, 1, image=image), PrepOptions()))
        text = "\n".join(r.ocr.text for r in results if r.ocr)
        r = results[0]
        out.append({"book": "rendered", "page": f"{kind}-{font}-{pt}-{seed}", "degradation": label, "truth": truth,
                    "cer": cer(text, truth), "status": r.status, "engine_version": _stage.engine.version,
                    **pc.raw_inputs(r.ocr, r.work.prep)})
    return out


def collect_rendered(args) -> None:
    jobs = [(k, f, pt, 100 + i) for i, (k, f, pt) in enumerate((k, f, pt) for k in RENDERED_KINDS for f in RENDERED_FONTS
                                                               for pt in RENDERED_PT)]
    with Pool(args.workers, initializer=_init, initargs=(args.tessdata,)) as pool, open(RENDERED, "w") as f:
        for recs in pool.imap_unordered(_read_rendered, jobs):
            for rec in recs:
                f.write(json.dumps(rec) + "\n")
    print(json.dumps({"collected": sum(1 for _ in open(RENDERED)), "data": RENDERED}))


def collect(args) -> None:
    rows = manifest()
    paths = [os.path.join(OLD_BOOKS, "pages", r["page_name"] + ".png") for r in rows]
    n = len(LOWRES_DPI)
    jobs = [(paths[i], paths[(i + 7) % len(rows)], r["truth"], r["book"], r["page_name"], 1000 + i,
             [LOWRES_DPI[(i + k * n // 2) % n] for k in range(args.lowres_copies)]) for i, r in enumerate(rows)]
    os.makedirs(os.path.dirname(args.data), exist_ok=True)
    with Pool(args.workers, initializer=_init, initargs=(args.tessdata,)) as pool, open(args.data, "w") as f:
        for recs in pool.imap_unordered(_read, jobs):
            for rec in recs:
                f.write(json.dumps(rec) + "\n")
    print(json.dumps({"collected": sum(1 for _ in open(args.data)), "data": args.data}))


def _held_out(X: np.ndarray, good: np.ndarray, books: np.ndarray, l2: float) -> np.ndarray:
    held = np.zeros(len(X))
    for b in sorted(set(books)):
        test = books == b
        held[test] = pc.predict(pc.fit_logistic(X[~test], good[~test], l2=l2), X[test])
    return held


def _auroc_or_none(p: np.ndarray, good: np.ndarray):
    value = auroc(p, good)
    return None if value is None else round(value, 4)


def _load(path: str, truth: dict) -> tuple[list[dict], np.ndarray, np.ndarray]:
    recs = [json.loads(line) for line in open(path)]
    recs = [r for r in recs if r["status"] != "blank"]
    for r in recs:
        t = r.get("truth") or truth[r["page"]]  # rendered pages carry their text
        r["cer"] = cer(r["text"], t)
        r["cer_fold_case"] = cer(r["text"], t, fold_case=True)
        r["cer_unpaired_quotes"] = cer(r["text"], t, pair_quotes=False)
    X = np.array([pc.feature_vector(pc.features_from_inputs(r)) for r in recs])
    return recs, X, np.array([r["cer"] <= GOOD_CER for r in recs])


def _fitted_elsewhere(args, truth: dict, X: np.ndarray, good: np.ndarray, books: np.ndarray, clean: np.ndarray) -> dict:
    """Standard-data pages scored by a model fitted on the fast-data pages of the other books: does
    the one coefficient table serve both variants?"""
    _, Xf, gf = _load(DATA, truth)
    bf = np.array([json.loads(line)["book"] for line in open(DATA) if json.loads(line)["status"] != "blank"])
    held = np.zeros(len(X))
    for b in sorted(set(books)):
        held[books == b] = pc.predict(pc.fit_logistic(Xf[bf != b], gf[bf != b], l2=args.l2), X[books == b])
    return {"auroc": {"scans_and_degradations": _auroc_or_none(held, good), "scans": _auroc_or_none(held[clean], good[clean])},
            "brier": round(float(np.mean((held - good) ** 2)), 4), "reliability": reliability(held, good)}


def fit(args) -> None:
    """Labels come from the stored OCR text and the ground truth (bench/evalset.cer), so a change
    of normalisation needs no new OCR. Besides the labels as measured, AUROC is reported with the
    small capitals compared without case (fold_case) and with the pages whose ground truth differs
    from the print (bench/gt_audit.json, checked by eye) left out."""
    truth = {r["page_name"]: r["truth"] for r in manifest()}
    audit = json.load(open(AUDIT))["pages"]
    recs, X, good = _load(args.data, truth)
    rendered = None
    if args.rendered and os.path.exists(RENDERED):
        # the rendered pages are one more held-out "book"; every figure below is on old_books alone,
        # the rendered pages' own held-out predictions are listed apart
        r_recs, r_X, r_good = _load(RENDERED, truth)
        all_X, all_good = np.vstack([X, r_X]), np.concatenate([good, r_good])
        all_books = np.array([r["book"] for r in recs + r_recs])
        all_held = _held_out(all_X, all_good, all_books, args.l2)
        model_all = pc.fit_logistic(all_X, all_good, l2=args.l2)
        in_code_r = pc.predict(pc.MODEL, r_X) if len(pc.MODEL["coef"]) == r_X.shape[1] else None
        rendered = {"pages": len(r_recs), "bad": int((~r_good).sum()),
                    "auroc_leave_out": _auroc_or_none(all_held[len(recs):], r_good),
                    "clean_pages": [[r["page"], round(r["cer"], 4), round(float(p), 3)] + ([round(float(q), 3)] if in_code_r is not None else [])
                                    for r, p, q in zip(r_recs, all_held[len(recs):], in_code_r if in_code_r is not None else all_held[len(recs):])
                                    if r["degradation"] == "clean"],
                    "degraded_over_5pct_cer_at_least_0.5": [[r["page"], r["degradation"], round(r["cer"], 4), round(float(p), 3)]
                                                           for r, p in zip(r_recs, all_held[len(recs):]) if r["degradation"] != "clean" and r["cer"] > 0.05 and p >= 0.5]}
    good_fold = np.array([r["cer_fold_case"] <= GOOD_CER for r in recs])
    good_unpaired = np.array([r["cer_unpaired_quotes"] <= GOOD_CER for r in recs])
    raw = np.array([r["confidence_raw"] if r["confidence_raw"] is not None else 0.0 for r in recs])
    books = np.array([r["book"] for r in recs])
    clean = np.array([r["degradation"] == "clean" for r in recs])
    mismatch = clean & np.array([audit.get(r["page"], {}).get("use") == "exclude" for r in recs])
    held = _held_out(X, good, books, args.l2) if rendered is None else all_held[:len(recs)]
    model = pc.fit_logistic(X, good, l2=args.l2) if rendered is None else model_all
    kept = clean & ~mismatch
    in_code = pc.predict(pc.MODEL, X) if len(pc.MODEL["coef"]) == X.shape[1] else None  # None: features changed, refit

    def aurocs(p):
        return {"scans_and_degradations": _auroc_or_none(p, good),
                "scans": _auroc_or_none(p[clean], good[clean]),
                "scans_normalised_as_before_the_audit": _auroc_or_none(p[clean], good_unpaired[clean]),
                "scans_gt_mismatch_excluded": _auroc_or_none(p[kept], good[kept]),
                "scans_fold_case": _auroc_or_none(p[clean], good_fold[clean]),
                "scans_fold_case_gt_mismatch_excluded": _auroc_or_none(p[kept], good_fold[kept])}

    lowres = {}
    for r, p, g in zip(recs, held, good):
        if r["degradation"].startswith("lowres:"):
            d = lowres.setdefault(int(r["degradation"].split(":")[1]), {"pages": 0, "bad": 0, "bad_confidence_at_least_0.5": []})
            d["pages"] += 1
            d["bad"] += int(not g)
            if not g and p >= 0.5:
                d["bad_confidence_at_least_0.5"].append([r["page"], round(r["cer"], 4), round(float(p), 3)])
    report = {"benchmark": "page_confidence", "data": os.path.basename(args.data), "pages": len(recs),
              "good_means_cer_at_most": GOOD_CER, "l2": args.l2, "features": list(pc.FEATURES),
              "bad_pages": int((~good).sum()), "clean_pages": int(clean.sum()), "clean_bad_pages": int((~good & clean).sum()),
              "clean_bad_pages_fold_case": int((~good_fold & clean).sum()), "gt_mismatch_pages_excluded": int(mismatch.sum()),
              "auroc_raw_confidence": aurocs(raw),
              "auroc_model_leave_one_book_out": aurocs(held),
              # the coefficients in the module as they are (fitted on fast data): how they fare on these pages
              "model_in_code": {"auroc": aurocs(in_code), "brier": round(float(np.mean((in_code - good) ** 2)), 4),
                                "reliability": reliability(in_code, good)} if in_code is not None else None,
              "brier_leave_one_book_out": {"all": round(float(np.mean((held - good) ** 2)), 4),
                                           "scans": round(float(np.mean((held[clean] - good[clean]) ** 2)), 4)},
              "reliability_leave_one_book_out": reliability(held, good),
              "fast_data_model_leave_one_book_out": _fitted_elsewhere(args, truth, X, good, books, clean) if args.data != DATA else None,
              "rendered_pages_leave_out": rendered,
              "per_book_auroc": {b: _auroc_or_none(held[books == b], good[books == b]) for b in sorted(set(books))},
              "lowres_leave_one_book_out": dict(sorted(lowres.items())),
              "bad_scans": sorted([[r["page"], round(r["cer"], 4), round(float(p), 3), audit.get(r["page"], {}).get("verdict")]
                                   for r, p, g, c in zip(recs, held, good, clean) if c and not g], key=lambda x: x[2]),
              "model": {"intercept": round(model["intercept"], 4), "coef": [round(c, 4) for c in model["coef"]],
                        "mean": [round(v, 4) for v in model["mean"]], "scale": [round(v, 4) for v in model["scale"]]}}
    print(json.dumps(report, indent=2))


THRESHOLDS = (0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98)


def routing(args) -> None:
    """What routing pages under a confidence threshold to a second engine buys (issue 19): per
    threshold, the share of pages routed, Tesseract's CER on the pages kept, and the CER of the whole
    set if the second engine read every routed page perfectly (an oracle: the best routing can reach).
    Confidence is the model's held-out prediction (each book scored by a model fitted without it,
    the rendered pages in the fit as one more book, as `fit` does), so no page is scored in-sample."""
    truth = {r["page_name"]: r["truth"] for r in manifest()}
    recs, X, good = _load(args.data, truth)
    books = np.array([r["book"] for r in recs])
    if args.rendered and os.path.exists(RENDERED):
        r_recs, r_X, r_good = _load(RENDERED, truth)
        held = _held_out(np.vstack([X, r_X]), np.concatenate([good, r_good]),
                         np.concatenate([books, [r["book"] for r in r_recs]]), args.l2)[:len(recs)]
    else:
        held = _held_out(X, good, books, args.l2)
    cer_ = np.array([r["cer"] for r in recs])
    clean = np.array([r["degradation"] == "clean" for r in recs])

    def curve(m):
        c, p = cer_[m], held[m]
        rows = [{"threshold": 0.0, "routed_share": 0.0, "kept_cer_mean": round(float(c.mean()), 5),
                 "oracle_cer_mean": round(float(c.mean()), 5), "bad_share_kept": round(float((c > GOOD_CER).mean()), 4)}]
        for t in THRESHOLDS:
            kept = p >= t
            rows.append({"threshold": t, "routed_share": round(float(1 - kept.mean()), 4),
                         "kept_cer_mean": round(float(c[kept].mean()), 5) if kept.any() else None,
                         "oracle_cer_mean": round(float(np.where(kept, c, 0.0).mean()), 5),
                         "bad_share_kept": round(float((c[kept] > GOOD_CER).mean()), 4) if kept.any() else None})
        return {"pages": int(m.sum()), "bad_pages": int((c > GOOD_CER).sum()), "curve": rows}

    print(json.dumps({"benchmark": "routing_cost_quality", "data": os.path.basename(args.data),
                      "confidence": "held out by book", "good_means_cer_at_most": GOOD_CER,
                      "scans_and_degradations": curve(np.ones(len(recs), bool)), "scans": curve(clean)}, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("action", choices=["collect", "collect-rendered", "fit", "routing"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--data", default=None, help=f"default {DATA} (fast data), confidence_pages_standard.jsonl for standard")
    ap.add_argument("--tessdata", choices=["fast", "standard"], default="fast", help="Tesseract language data variant read with")
    ap.add_argument("--lowres-copies", type=int, default=2, help="collect: low-resolution copies of each page (dpi from LOWRES_DPI)")
    ap.add_argument("--l2", type=float, default=1.0)
    ap.add_argument("--no-rendered", dest="rendered", action="store_false",
                    help=f"fit: leave out the rendered pages ({os.path.basename(RENDERED)}, from collect-rendered)")
    args = ap.parse_args()
    args.data = args.data or (DATA if args.tessdata == "fast" else DATA.replace(".jsonl", f"_{args.tessdata}.jsonl"))
    {"collect": collect, "collect-rendered": collect_rendered, "fit": fit, "routing": routing}[args.action](args)


if __name__ == "__main__":
    main()
