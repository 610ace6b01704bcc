"""Hard pages (issue 9): one JSON object with the done-when figures.

- low resolution: old_books pages as scanned (300 dpi) and resampled to 100 and 45 dpi, read
  through the pipeline with and without enlarging small text;
- curl: the same pages curled (bench/degrade.py), read with and without dewarping, and dewarped
  with the vertical bending undone only (the crowding towards the spine left, as before it was
  widened too): CER, plus how wide the text near the spine comes out against the flat part,
  exactly (cleaned-page points mapped back through the recorded transforms and the known curl)
  and as measured on the image (glyph widths);
- a near-blank spread: a real page beside a nearly empty one, grey gutter, dark border, 3 degrees;
  and a spread of two real pages scanned sideways (turned 90 and 270 degrees);
- hard cases without ground truth (Fraktur, four orientations, 90-dpi bleed-through): what was
  decided and the page confidence, i.e. whether each is read or flagged.
Mean CER and mean page confidence (P(good), page_confidence.py) per condition. One thread.

    python bench/harder_pages.py [--every 15] [--frk-tessdata /usr/share/tesseract-ocr/5/tessdata]
        [--only conditions spreads hard_cases] [--conditions curled_dewarped ...] [--curl 1.0] [--save-dir DIR]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_THREAD_LIMIT", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
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
from folioscan.workers.prep import PrepOptions, dewarp, prepare_page  # noqa: E402
from folioscan.workers.prep.geometry import ink_mask, rot90  # noqa: E402
from folioscan.workers.prep.transform import to_source  # noqa: E402

HARD = os.path.join(EVAL, "hardcases")


def read(stage: OcrStage, img: np.ndarray, **opts) -> list:
    return stage(prepare_page(PageWork("d", "u", 0, 1, image=img), PrepOptions(**opts)))


def summary(rows: list[tuple[float, float]]) -> dict:
    cers, confs = [r[0] for r in rows], [r[1] for r in rows]
    return {"mean_cer": round(statistics.mean(cers), 4), "median_cer": round(statistics.median(cers), 4),
            "mean_confidence": round(statistics.mean(confs), 3), "pages_cer_over_3pct": sum(c > 0.03 for c in cers),
            "pages_confidence_under_0.5": sum(c < 0.5 for c in confs)}


@contextlib.contextmanager
def y_only():
    """Dewarping as it was before the crowding was undone: lines straightened, no horizontal
    correction (the A/B of the horizontal map within one run)."""
    saved = dewarp.x_stretch
    dewarp.x_stretch = lambda *a, **k: None
    try:
        yield
    finally:
        dewarp.x_stretch = saved


def spine_width_ratio(part, width: int, strength: float, spine: str = "right") -> float:
    """How wide the text near the spine (10-20% of the page from it) comes out in the cleaned page,
    relative to the flat part (10-30% from the outer edge): 1 when the crowding is undone. Exact:
    cleaned-page points go back through the recorded transforms, then through the known curl."""
    h, w = part.image.shape
    xs = np.linspace(0.5, w - 0.5, 800)
    ratios = []
    for fy in (0.3, 0.5, 0.7):
        src = to_source(part.prep.transforms, np.stack([xs, np.full_like(xs, fy * h)], 1))[:, 0]
        orig = degrade.curl_source_x(src, width, strength, spine)
        per_px = np.gradient(orig, xs)  # flat-page pixels per cleaned-page pixel
        u = orig / width if spine == "right" else 1 - orig / width
        ratios.append(np.median(per_px[(u > 0.1) & (u < 0.3)]) / np.median(per_px[(u > 0.8) & (u < 0.9)]))
    return float(np.mean(ratios))


def glyph_widths(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x centre, width) of the x-height glyphs of a page image."""
    import cv2 as _cv2

    n, _, stats, centres = _cv2.connectedComponentsWithStats(ink_mask(img).astype(np.uint8), connectivity=8)
    h, w = stats[1:, 3], stats[1:, 2]
    xh = float(np.median(h[(h > 2) & (h < img.shape[0] / 10)])) if n > 30 else 0.0
    pick = (h >= 0.6 * xh) & (h <= 1.3 * xh) & (w <= 1.6 * xh)
    return centres[1:, 0][pick], w[pick].astype(np.float64)


def glyph_width_profile(img: np.ndarray, bands: int = 8) -> list[float] | None:
    """Measured on the image alone (for pages without ground truth): the trimmed mean width of
    x-height glyphs in `bands` equal slices of the text's width, over their median. Crowding shows
    as a fall towards the spine."""
    cx, w = glyph_widths(img)
    if len(cx) < 100:
        return None
    a, b = np.percentile(cx, [1, 99])
    band = np.clip(((cx - a) / max(b - a, 1.0) * bands).astype(int), 0, bands - 1)
    means = []
    for i in range(bands):
        v = np.sort(w[band == i])
        means.append(v[len(v) // 10: len(v) - len(v) // 10].mean() if len(v) >= 10 else float("nan"))
    return [round(float(m / np.nanmedian(means)), 3) for m in means]


def conditions(stage: OcrStage, rows: list[dict], only: list[str] | None = None, strength: float = 1.0) -> dict:
    curl = lambda im: degrade.curl(im, strength)  # noqa: E731
    cases = {
        "300dpi": (lambda im: im, {}),
        "100dpi_enlarged": (lambda im: degrade.lowres(im, 100), {}),
        "100dpi_as_is": (lambda im: degrade.lowres(im, 100), {"skip": ["upscale"]}),
        "45dpi_enlarged": (lambda im: degrade.lowres(im, 45), {}),
        "45dpi_as_is": (lambda im: degrade.lowres(im, 45), {"skip": ["upscale"]}),
        "curled_dewarped": (curl, {}),
        "curled_dewarped_y_only": (curl, {}),
        "curled_as_is": (curl, {"skip": ["dewarp"]}),
    }
    cases = {k: v for k, v in cases.items() if not only or k in only}
    got: dict[str, list] = {k: [] for k in cases}
    extra: dict[str, list] = {k: [] for k in cases}
    for r in rows:
        img = cv2.imread(os.path.join(OLD_BOOKS, "pages", r["page_name"] + ".png"), cv2.IMREAD_GRAYSCALE)
        for name, (make, opts) in cases.items():
            with y_only() if name.endswith("y_only") else contextlib.nullcontext():
                [part] = prepare_page(PageWork("d", "u", 0, 1, image=make(img)), PrepOptions(**opts))
            geo = spine_width_ratio(part, img.shape[1], strength) if name.startswith("curled") else None
            [res] = stage([part])
            text = res.ocr.text if res.ocr else ""
            # a page with no text, or one the engine failed on, counts as read with confidence 0
            got[name].append((cer(text, r["truth"]), (res.ocr.confidence if res.ocr else None) or 0.0))
            p = res.work.prep
            extra[name].append((p.x_height, p.upscale, p.curvature, p.dewarped, p.prep_ms, geo))
    out = {}
    for name in cases:
        out[name] = summary(got[name])
        out[name]["per_page_cer_confidence"] = [[r["page_name"], round(c, 4), round(f, 4)] for r, (c, f) in zip(rows, got[name])]
        xs = extra[name]
        out[name].update({"median_x_height": float(np.median([x[0] for x in xs])), "median_upscale": float(np.median([x[1] for x in xs])),
                          "median_curvature": float(np.median([x[2] for x in xs])), "pages_dewarped": sum(x[3] for x in xs),
                          "median_prep_ms": round(float(np.median([x[4] for x in xs])), 1)})
        if name.startswith("curled"):
            out[name]["mean_spine_width_ratio_exact"] = round(statistics.mean(x[5] for x in xs), 3)
            out[name]["per_page_spine_width_ratio_exact"] = [round(x[5], 3) for x in xs]
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


def sideways_spread(stage: OcrStage, left_row: dict, right_row: dict) -> dict:
    """Two real pages side by side (grey gutter, dark border, 2 degrees), the sheet turned 90 and
    270 degrees on the scanner: the rows, their order, and each page's CER."""
    left, right = (cv2.imread(os.path.join(OLD_BOOKS, "pages", r["page_name"] + ".png"), cv2.IMREAD_GRAYSCALE) for r in (left_row, right_row))
    h = max(left.shape[0], right.shape[0])
    pad = lambda im: np.vstack([im, np.full((h - im.shape[0], im.shape[1]), 255, np.uint8)])  # noqa: E731
    x = np.linspace(-1, 1, 90)
    gutter = np.full((h, 90), 255.0) * (1 - 0.45 * np.exp(-(x / 0.45) ** 2))[None, :]
    sheet = np.hstack([pad(left).astype(np.float64), gutter, pad(right).astype(np.float64)]).astype(np.uint8)
    scan = np.full((sheet.shape[0] + 300, sheet.shape[1] + 300), 28, np.uint8)
    scan[150:-150, 150:-150] = sheet
    m = cv2.getRotationMatrix2D((scan.shape[1] / 2, scan.shape[0] / 2), 2.0, 1.0)
    scan = cv2.warpAffine(scan, m, (scan.shape[1], scan.shape[0]), borderValue=28)
    out = {"pages": [left_row["page_name"], right_row["page_name"]]}
    for turn in (90, 270):
        res = read(stage, rot90(scan, turn))
        truths = [left_row["truth"], right_row["truth"]]
        out[f"turned_{turn}"] = {"rows": [(r.work.side, r.status, r.work.prep.orientation) for r in res],
                                 "cer": [round(cer(r.ocr.text if r.ocr else "", t), 4) for r, t in zip(res, truths)] if len(res) == 2 else None,
                                 "prep_ms": round(res[0].work.prep.prep_ms * len(res), 1)}
    return out


def hard_cases(stage: OcrStage, frk_dir: str | None, save_dir: str | None = None) -> dict:
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
        with y_only():
            [flat_y] = prepare_page(PageWork("d", "u", 0, 1, image=img), PrepOptions())
        [flat] = prepare_page(PageWork("d", "u", 0, 1, image=img), PrepOptions())
        if save_dir:
            cv2.imwrite(os.path.join(save_dir, name.replace(".jpg", "_dewarped.png")), flat.image)
            cv2.imwrite(os.path.join(save_dir, name.replace(".jpg", "_dewarped_y_only.png")), flat_y.image)
        # the spine is on the left of both pages
        reads = {"width_scan": img.shape[1], "width_dewarped": flat.image.shape[1], "width_dewarped_y_only": flat_y.image.shape[1],
                 "glyph_width_profile": {"scan": glyph_width_profile(img), "dewarped_y_only": glyph_width_profile(flat_y.image),
                                         "dewarped": glyph_width_profile(flat.image)}}
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
    ap.add_argument("--only", nargs="+", choices=["conditions", "spreads", "hard_cases"], help="run these parts only")
    ap.add_argument("--conditions", nargs="+", help="of the conditions, only these (e.g. curled_dewarped curled_dewarped_y_only)")
    ap.add_argument("--curl", type=float, default=1.0, help="strength of the synthetic curl (bench/degrade.py)")
    ap.add_argument("--save-dir", help="write the dewarped hard-case pages here, to look at")
    args = ap.parse_args()
    rows = manifest()[:: args.every]
    stage = OcrStage(TesseractOptions())
    t0 = time.perf_counter()
    parts = args.only or ["conditions", "spreads", "hard_cases"]
    report = {"benchmark": "harder_pages", "pages": len(rows), "engine": stage.engine.version, "curl_strength": args.curl}
    if "conditions" in parts:
        report["conditions"] = conditions(stage, rows, args.conditions, args.curl)
    if "spreads" in parts:
        report["near_blank_spread"] = near_blank_spread(stage, rows[1])
        report["sideways_spread"] = sideways_spread(stage, rows[1], rows[2])
    if "hard_cases" in parts:
        if args.save_dir:
            os.makedirs(args.save_dir, exist_ok=True)
        report["hard_cases"] = hard_cases(stage, args.frk_tessdata, args.save_dir)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
