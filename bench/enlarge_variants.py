"""How small text is enlarged before OCR: interpolation, target x-height, sharpening. One JSON object.

Every 15th old_books page (12 pages, all 6 books) resampled to 45, 75 and 100 dpi, cleaned by
the pipeline with the enlarging step skipped, then enlarged by each variant and read by
Tesseract (fast eng data, one thread) in the same process. Pages whose text is already at least
10 px high are read as they are (as the pipeline does). `cubic16` is what
folioscan/workers/prep/resolution.py does.

    python bench/enlarge_variants.py [--dpi 45,75,100] [--every 15]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_THREAD_LIMIT", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import degrade  # noqa: E402
from evalset import OLD_BOOKS, cer, manifest  # noqa: E402

from folioscan.records import PageWork  # noqa: E402
from folioscan.workers.engines.registry import TesseractOptions, build_engine  # noqa: E402
from folioscan.workers.prep import PrepOptions, prepare_page  # noqa: E402


def _resize(g: np.ndarray, factor: float, interpolation: int) -> np.ndarray:
    return cv2.resize(g, None, fx=factor, fy=factor, interpolation=interpolation)


def _sharpen(g: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.addWeighted(g, 2.0, cv2.GaussianBlur(g, (0, 0), sigma), -1.0, 0)


def _variant(target: float, most: float, interpolation: int = cv2.INTER_CUBIC, sharpen: bool = False):
    def enlarge(g: np.ndarray, x_height: float) -> np.ndarray:
        f = min(most, target / x_height)
        out = _resize(g, f, interpolation)
        return _sharpen(out, 0.5 * f) if sharpen else out
    return enlarge


VARIANTS = {
    "cubic16": _variant(16, 4),  # the pipeline's
    "lanczos16": _variant(16, 4, cv2.INTER_LANCZOS4),
    "linear16": _variant(16, 4, cv2.INTER_LINEAR),
    "cubic22": _variant(22, 6),
    "cubic16_sharp": _variant(16, 4, sharpen=True),
    "cubic22_sharp": _variant(22, 6, sharpen=True),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dpi", default="45,75,100")
    ap.add_argument("--every", type=int, default=15)
    args = ap.parse_args()
    engine = build_engine(TesseractOptions())
    rows = manifest()[:: args.every]
    report = {"benchmark": "enlarge_variants", "pages": len(rows), "engine": engine.version, "dpi": {}}
    for dpi in (int(d) for d in args.dpi.split(",")):
        cers: dict[str, list[float]] = {k: [] for k in VARIANTS}
        for r in rows:
            img = cv2.imread(os.path.join(OLD_BOOKS, "pages", r["page_name"] + ".png"), cv2.IMREAD_GRAYSCALE)
            [w] = prepare_page(PageWork("d", "u", 0, 1, image=degrade.lowres(img, dpi)), PrepOptions(skip=["upscale"]))
            for name, enlarge in VARIANTS.items():
                image = w.image if w.prep.x_height >= 10 else enlarge(w.image, w.prep.x_height)
                cers[name].append(round(cer(engine.predict_batch([image])[0].text, r["truth"]), 4))
        report["dpi"][dpi] = {k: {"mean_cer": round(statistics.mean(v), 4), "median_cer": round(statistics.median(v), 4),
                                  "pages_cer_over_3pct": sum(c > 0.03 for c in v), "per_page": v} for k, v in cers.items()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
