"""Hard pages (issue 9): one JSON object with the done-when figures.

- low resolution: old_books pages as scanned (300 dpi) and resampled to 100 and 45 dpi, read
  through the pipeline with and without enlarging small text;
- curl: the same pages curled (bench/degrade.py), read with and without dewarping;
- a near-blank spread: a real page beside a nearly empty one, grey gutter, dark border, 3 degrees;
- hard cases without ground truth (Fraktur, four orientations, 90-dpi bleed-through): what was
  decided and the page confidence, i.e. whether each is read or flagged.
Mean CER and mean page confidence (P(good), page_confidence.py) per condition. One thread.

    python bench/harder_pages.py [--every 15] [--frk-tessdata /usr/share/tesseract-ocr/5/tessdata]
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
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import degrade  # noqa: E402
from evalset import EVAL, OLD_BOOKS, cer, manifest  # noqa: E402

from folioscan.records import PageWork  # noqa: E402
from folioscan.workers.engines.registry import TesseractOptions  # noqa: E402
from folioscan.workers.ocr_stage import OcrStage  # noqa: E402
from folioscan.workers.prep import PrepOptions, prepare_page  # noqa: E402

HARD = os.path.join(EVAL, "hardcases")


def read(stage: OcrStage, img: np.ndarray, **opts) -> list:
    return stage(prepare_page(PageWork("d", "u", 0, 1, image=img), PrepOptions(**opts)))


def summary(rows: list[tuple[float, float]]) -> dict:
    cers, confs = [r[0] for r in rows], [r[1] for r in rows]
    return {"mean_cer": round(statistics.mean(cers), 4), "median_cer": round(statistics.median(cers), 4),
            "mean_confidence": round(statistics.mean(confs), 3), "pages_cer_over_3pct": sum(c > 0.03 for c in cers),
            "pages_confidence_under_0.5": sum(c < 0.5 for c in confs)}


def conditions(stage: OcrStage, rows: list[dict]) -> dict:
    cases = {
        "300dpi": (lambda im: im, {}),
        "100dpi_enlarged": (lambda im: degrade.lowres(im, 100), {}),
        "100dpi_as_is": (lambda im: degrade.lowres(im, 100), {"skip": ["upscale"]}),
        "45dpi_enlarged": (lambda im: degrade.lowres(im, 45), {}),
        "45dpi_as_is": (lambda im: degrade.lowres(im, 45), {"skip": ["upscale"]}),
        "curled_dewarped": (lambda im: degrade.curl(im, 1.0), {}),
        "curled_as_is": (lambda im: degrade.curl(im, 1.0), {"skip": ["dewarp"]}),
    }
    got: dict[str, list] = {k: [] for k in cases}
    extra: dict[str, list] = {k: [] for k in cases}
    for r in rows:
        img = cv2.imread(os.path.join(OLD_BOOKS, "pages", r["page_name"] + ".png"), cv2.IMREAD_GRAYSCALE)
        for name, (make, opts) in cases.items():
            [res] = read(stage, make(img), **opts)
            text = res.ocr.text if res.ocr else ""
            # a page with no text, or one the engine failed on, counts as read with confidence 0
            got[name].append((cer(text, r["truth"]), (res.ocr.confidence if res.ocr else None) or 0.0))
            extra[name].append((res.work.prep.x_height, res.work.prep.upscale, res.work.prep.curvature, res.work.prep.dewarped))
    out = {}
    for name in cases:
        out[name] = summary(got[name])
        out[name]["per_page_cer_confidence"] = [[r["page_name"], round(c, 4), round(f, 4)] for r, (c, f) in zip(rows, got[name])]
        xs = extra[name]
        out[name].update({"median_x_height": float(np.median([x[0] for x in xs])), "median_upscale": float(np.median([x[1] for x in xs])),
                          "median_curvature": float(np.median([x[2] for x in xs])), "pages_dewarped": sum(x[3] for x in xs)})
    return out


def near_blank_spread(stage: OcrStage, row: dict) -> dict:
    right = cv2.imread(os.path.join(OLD_BOOKS, "pages", row["page_name"] + ".png"), cv2.IMREAD_GRAYSCALE)
    h, w = right.shape
    left = np.full((h, w), 255, np.uint8)
    cv2.putText(left, "ii", (w // 2, h - 150), cv2.FONT_HERSHEY_SIMPLEX, 1.2, 0, 3)  # only a folio
    x = np.linspace(-1, 1, 90)
    gutter = np.full((h, 90), 255.0) * (1 - 0.45 * np.exp(-(x / 0.45) ** 2))[None, :]
    sheet = np.hstack([left.astype(np.float64), gutter, right.astype(np.float64)]).astype(np.uint8)
    scan = np.full((sheet.shape[0] + 300, sheet.shape[1] + 300), 28, np.uint8)
    scan[150:-150, 150:-150] = sheet
    m = cv2.getRotationMatrix2D((scan.shape[1] / 2, scan.shape[0] / 2), 3.0, 1.0)
    scan = cv2.warpAffine(scan, m, (scan.shape[1], scan.shape[0]), borderValue=28)
    res = read(stage, scan)
    return {"page": row["page_name"], "rows": [(r.work.side, r.status) for r in res],
            "right_page_cer": round(cer(res[-1].ocr.text if res[-1].ocr else "", row["truth"]), 4),
            "right_page_cer_unsplit_scan": round(cer(stage.engine.predict_batch([right])[0].text, row["truth"]), 4),
            "orientation_confidence": [r.work.prep.orientation_confidence for r in res]}


def hard_cases(stage: OcrStage, frk_dir: str | None) -> dict:
    import pymupdf

    out = {}
    for name in ("mixed_orientation_4rot_ocrmypdf.pdf", "bleedthrough_noise_lowres_pedante_90dpi.pdf"):
        doc = pymupdf.open(os.path.join(HARD, name))
        pages = []
        for p in doc:
            # rendered as displayed: the four-orientation file turns each page by its drawing matrix
            pix = p.get_pixmap(dpi=200 if "4rot" in name else 90, colorspace=pymupdf.csGRAY)
            img = np.frombuffer(pix.samples, np.uint8).reshape(pix.height, pix.stride)[:, : pix.width].copy()
            for r in read(stage, img):
                pages.append({"orientation": r.work.prep.orientation, "orientation_confidence": r.work.prep.orientation_confidence,
                              "x_height": r.work.prep.x_height, "upscale": r.work.prep.upscale,
                              "status": r.status, "confidence": r.ocr and r.ocr.confidence, "confidence_raw": r.ocr and r.ocr.confidence_raw,
                              "text_start": (r.ocr.text if r.ocr else "")[:60]})
        out[name] = pages
    for name in ("curved_fraktur_german_1555.jpg", "curved_catalogue_french_cat007.jpg"):
        img = cv2.imread(os.path.join(HARD, name), cv2.IMREAD_GRAYSCALE)
        reads = {}
        engines = [("eng", stage)]
        if "fraktur" in name:
            engines.append(("deu", OcrStage(TesseractOptions(lang="deu"))))
            if frk_dir:
                engines.append(("frk", OcrStage(TesseractOptions(lang="frk", tessdata=frk_dir))))
        for lang, st in engines:
            [r] = read(st, img)
            reads[lang] = {"curvature": r.work.prep.curvature, "dewarped": r.work.prep.dewarped,
                           "status": r.status, "confidence": r.ocr and r.ocr.confidence, "confidence_raw": r.ocr and r.ocr.confidence_raw,
                           "text_start": (r.ocr.text if r.ocr else "")[:80]}
        out[name] = reads
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--every", type=int, default=15)
    ap.add_argument("--frk-tessdata", help="folder with frk.traineddata (Debian's tesseract-ocr-frk)")
    args = ap.parse_args()
    rows = manifest()[:: args.every]
    stage = OcrStage(TesseractOptions())
    t0 = time.perf_counter()
    report = {"benchmark": "harder_pages", "pages": len(rows), "engine": stage.engine.version,
              "conditions": conditions(stage, rows), "near_blank_spread": near_blank_spread(stage, rows[1]),
              "hard_cases": hard_cases(stage, args.frk_tessdata)}
    report["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
