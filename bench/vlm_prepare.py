"""VLM image preparation on the CPU: ms/page for each model and budget, with 1 and 2 preparation
threads, and without the prefit (the scan handed to the processor at full size, as before).
Prints one JSON object. Tiny random models (the processor is the real one; the weights are unused).

    PYTHONPATH=. python bench/vlm_prepare.py [--pages 32] [--images ../shared/eval/old_books/pages]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main() -> None:
    from PIL import Image

    from folioscan.workers.engines.registry import VlmOptions, build_engine
    from folioscan.workers.engines.vlm.models import spec
    from folioscan.workers.engines.vlm.random_init import save_random_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--images", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "eval", "old_books", "pages"))
    ap.add_argument("--pages", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    files = sorted(glob.glob(os.path.join(args.images, "*.png")))[:args.pages]
    if not files:
        raise SystemExit(f"no PNG pages in {args.images}")
    ims = [np.asarray(Image.open(f).convert("L")) for f in files]
    out = {"benchmark": "vlm_prepare", "pages": len(ims), "page_shape": list(ims[0].shape), "batch": args.batch,
           "cpus": os.cpu_count(), "ms_per_page": {}}
    tmp = tempfile.mkdtemp(prefix="vlm-prepare-")
    for kind in ("deepseek-ocr-2", "got-ocr2"):
        backend = build_engine(VlmOptions(kind=kind, model=save_random_model(kind, os.path.join(tmp, kind)), device="cpu")).backend
        for name in ("base", "tiled-2"):
            budget = spec(kind).budget(name)
            for threads, prefit in ((1, True), (2, True), (1, False)):
                backend.prep_threads = threads
                original = backend.prefit
                if not prefit:
                    backend.prefit = lambda im, b: im
                backend.prepare(ims[:2], budget)  # warm: processor copies, imports
                t0 = time.perf_counter()
                for k in range(0, len(ims), args.batch):
                    backend.prepare(ims[k:k + args.batch], budget)
                ms = (time.perf_counter() - t0) / len(ims) * 1000
                backend.prefit = original
                key = f"{kind} {name} threads={threads}" + ("" if prefit else " no-prefit")
                out["ms_per_page"][key] = round(ms, 1)
                print(json.dumps({key: round(ms, 1)}), file=sys.stderr, flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
