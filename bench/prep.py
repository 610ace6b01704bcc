"""Page-cleaning benchmark on ../shared/eval/old_books. Prints one JSON object.

1. CPU cost: ms per page (one core) of each step and of the whole prep, on the eval pages.
2. Quality: CER of an engine with and without cleaning, on the clean pages and on degraded
   copies (known skew, dark border + thumb, two-page spread, illumination gradient, 90-degree turn).

    python bench/prep.py [--engine tesseract] [--every 6] [--workers 2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from multiprocessing import Pool

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from evalset import OLD_BOOKS, cer, manifest, normalize  # noqa: E402

from folioscan.records import PageWork  # noqa: E402
from folioscan.workers.prep import dewarp, geometry, pipeline  # noqa: E402
from folioscan.workers.prep.crop import apply_crop  # noqa: E402
from folioscan.workers.prep.deskew import estimate_skew  # noqa: E402
from folioscan.workers.prep.illumination import flatten  # noqa: E402
from folioscan.workers.prep.orientation import detect_orientation  # noqa: E402
from folioscan.workers.prep.segment import segment  # noqa: E402
from folioscan.workers.prep.spread import find_gutter  # noqa: E402


def degrade(img: np.ndarray, kind: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = img.shape
    if kind == "skew":
        return geometry.rotate(img, float(rng.choice([-1, 1]) * rng.uniform(2, 8)))
    if kind == "border":
        out = np.full((h + 240, w + 200), 20, np.uint8)
        out[120:120 + h, 100:100 + w] = img
        out[h // 2: h // 2 + 200, 60:180] = 35  # a thumb
        return out
    if kind == "spread":
        return np.hstack([img, np.full((h, 60), 255, np.uint8), img])
    if kind == "gradient":
        return (img.astype(np.float32) * np.linspace(0.35, 1.0, w)[None, :]).astype(np.uint8)
    if kind == "rot90":
        return geometry.rot90(img, 90)
    return img


def time_steps(images: list[np.ndarray]) -> dict:
    steps = {
        "analysis_copy": lambda g: geometry.analysis_copy(g),
        "crop": lambda g: apply_crop(g, *geometry.analysis_copy(g)),
        "orientation": lambda g: detect_orientation(geometry.analysis_copy(g)[0]),
        "spread": lambda g: find_gutter(geometry.analysis_copy(g)[0]),
        "illumination": lambda g: flatten(g, geometry.analysis_copy(g)[0]),
        "deskew_estimate": lambda g: estimate_skew(geometry.analysis_copy(g)[0]),
        "rotate_full_res": lambda g: geometry.rotate(g, 1.0),
        "segment": lambda g: segment(geometry.analysis_copy(g)[0]),
        "dewarp_measure": lambda g: dewarp.measure(geometry.analysis_copy(g)[0]),
        "whole_prep": lambda g: pipeline.prepare_page(PageWork("d", "u", 0, 1, image=g), pipeline.PrepOptions()),
        "whole_prep_without_dewarp": lambda g: pipeline.prepare_page(PageWork("d", "u", 0, 1, image=g),
                                                                     pipeline.PrepOptions(skip=["dewarp"])),
    }
    out = {}
    for name, fn in steps.items():
        t0 = time.perf_counter()
        for g in images:
            fn(g)
        out[name] = round((time.perf_counter() - t0) * 1000 / len(images), 2)
    return out


def density_check(images: list[np.ndarray], rows: list[dict]) -> dict:
    """How close the segmentation's character estimate (which picks the VLM budget) is to the truth."""
    from folioscan.workers.engines.vlm.budgets import BUDGETS, choose_budget

    ratios, picks = [], {}
    for img, row in zip(images, rows):
        [w] = pipeline.prepare_page(PageWork("d", "u", 0, 1, image=img), pipeline.PrepOptions())[:1]
        ratios.append(w.prep.est_chars / max(len(normalize(row["truth"])), 1))
        name = BUDGETS["deepseek-ocr-2"][choose_budget("deepseek-ocr-2", w.prep.est_chars)].name
        picks[name] = picks.get(name, 0) + 1
    r = np.array(ratios)
    return {"est_over_true_chars_median": round(float(np.median(r)), 3),
            "p10": round(float(np.percentile(r, 10)), 3), "p90": round(float(np.percentile(r, 90)), 3),
            "share_within_25pct": round(float(np.mean(np.abs(r - 1) <= 0.25)), 3),
            "adaptive_deepseek_ocr_2_budgets": picks}


_engine = None


def _ocr_job(args):
    global _engine
    from folioscan.workers.engines.registry import RapidOcrOptions, TesseractOptions
    from folioscan.workers.ocr_stage import OcrStage

    img_path, truth, kind, seed, engine_name, output = args
    if _engine is None:  # the pipeline's OCR stage: with prep, its 180-degree re-read is part of cleaning
        _engine = OcrStage(TesseractOptions() if engine_name == "tesseract" else RapidOcrOptions())
    img = degrade(cv2.imread(img_path, cv2.IMREAD_GRAYSCALE), kind, seed)
    raw = _engine.engine.predict_batch([img])[0].text
    parts = pipeline.prepare_page(PageWork("d", "u", 0, 1, image=img), pipeline.PrepOptions(output=output))
    cleaned = "\n".join(r.ocr.text for r in _engine(parts) if r.ocr)
    if kind == "spread":  # the spread holds the page twice: compare with the page text twice
        truth = truth + " " + truth
    return kind, cer(raw, truth), cer(cleaned, truth)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", default="tesseract")
    ap.add_argument("--every", type=int, default=6, help="use every Nth eval page for the OCR quality part")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--kinds", nargs="+", default=["clean", "skew", "border", "spread", "gradient", "rot90"])
    ap.add_argument("--output", default="gray", choices=["gray", "binary"], help="what cleaning hands the engine")
    ap.add_argument("--no-ocr", action="store_true", help="CPU cost only")
    args = ap.parse_args()
    rows = manifest()
    paths = [os.path.join(OLD_BOOKS, "pages", r["page_name"] + ".png") for r in rows]
    images = [cv2.imread(p, cv2.IMREAD_GRAYSCALE) for p in paths]
    report = {"benchmark": "prep", "pages_timed": len(images), "page_size": list(images[0].shape),
              "ms_per_page_one_core": time_steps(images)}
    report["prep_pages_per_s_per_core"] = round(1000 / report["ms_per_page_one_core"]["whole_prep"], 1)
    if args.no_ocr:
        print(json.dumps(report, indent=2))
        return
    report["text_density_estimate"] = density_check(images, rows)
    jobs = [(paths[i], rows[i]["truth"], k, i, args.engine, args.output) for k in args.kinds for i in range(0, len(rows), args.every)]
    with Pool(args.workers) as pool:
        results = pool.map(_ocr_job, jobs)
    quality = {}
    for kind in args.kinds:
        raw = [r[1] for r in results if r[0] == kind]
        cleaned = [r[2] for r in results if r[0] == kind]
        quality[kind] = {"pages": len(raw), "mean_cer_without_prep": round(statistics.mean(raw), 4),
                         "mean_cer_with_prep": round(statistics.mean(cleaned), 4),
                         "median_cer_without_prep": round(statistics.median(raw), 4),
                         "median_cer_with_prep": round(statistics.median(cleaned), 4)}
    report["quality_" + args.engine] = quality
    report["prep_output"] = args.output
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
