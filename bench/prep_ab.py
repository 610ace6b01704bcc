"""What the sideways-spread search and the horizontal dewarp cost, against a baseline in the same
process. Prints one JSON object.

- ordinary pages (old_books as scanned): `prepare_page` of this tree against the same function
  from `--base` (that revision's prep/pipeline.py, loaded beside this one; every other module is
  this tree's, so the difference is the pipeline's own: the sideways-spread search);
- curled pages (bench/degrade.py): dewarping with the crowding undone against the vertical
  bending only (the horizontal map switched off in the same process);
- sideways spreads (a page and the next of its book, grey gutter, turned 90 or 270 degrees): how
  many come out as two pages in reading order, and what finding and splitting them costs;
  ordinary pages taken for spreads are counted too.
Runs alternate between the two sides page by page, so machine load hits both alike. One thread.

    python bench/prep_ab.py [--base 2acaaf2] [--every 4] [--repeat 2]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_THREAD_LIMIT", "1")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import degrade  # noqa: E402
from evalset import OLD_BOOKS, manifest  # noqa: E402
from harder_pages import y_only  # noqa: E402

from folioscan.records import PageWork  # noqa: E402
from folioscan.workers.prep import PrepOptions, prepare_page  # noqa: E402
from folioscan.workers.prep.geometry import rot90  # noqa: E402
from folioscan.workers.prep.transform import to_source  # noqa: E402

cv2.setNumThreads(1)


def base_prepare(rev: str):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    src = subprocess.run(["git", "show", f"{rev}:folioscan/workers/prep/pipeline.py"], cwd=root,
                         capture_output=True, text=True, check=True).stdout
    spec = importlib.util.spec_from_loader("pipeline_base", loader=None)
    mod = importlib.util.module_from_spec(spec)
    exec(compile(src, f"{rev}:pipeline.py", "exec"), mod.__dict__)
    return mod.prepare_page


def timed(fn, img) -> tuple[float, list]:
    t0 = time.perf_counter()
    parts = fn(PageWork("d", "u", 0, 1, image=img))
    return (time.perf_counter() - t0) * 1000, parts


def sideways(left: np.ndarray, right: np.ndarray, turn: int) -> np.ndarray:
    """Two facing pages with a grey gutter between them, the sheet turned `turn` degrees clockwise."""
    h = max(left.shape[0], right.shape[0])
    pad = lambda im: np.vstack([im, np.full((h - im.shape[0], im.shape[1]), 255, np.uint8)])  # noqa: E731
    return rot90(np.hstack([pad(left), np.full((h, 60), 200, np.uint8), pad(right)]), turn)


def in_order(parts: list, scan: np.ndarray, turn: int) -> bool:
    """Two pages, the left one first: its centre maps back to the half of the scan the left page
    was turned into (the top for 90 degrees, the bottom for 270)."""
    if len(parts) != 2 or parts[0].side != "left":
        return False
    p = parts[0]
    y = to_source(p.prep.transforms, [[p.image.shape[1] / 2, p.image.shape[0] / 2]])[0][1]
    return bool(y < scan.shape[0] / 2) == (turn == 90)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="2acaaf2", help="git revision whose prep/pipeline.py is the baseline")
    ap.add_argument("--every", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    everything = manifest()
    rows = everything[:: args.every]
    old_prepare = base_prepare(args.base)  # given this tree's options (the same fields)
    new = lambda w: prepare_page(w, PrepOptions())  # noqa: E731
    old = lambda w: old_prepare(w, PrepOptions())  # noqa: E731
    load = lambda r: cv2.imread(os.path.join(OLD_BOOKS, "pages", r["page_name"] + ".png"), cv2.IMREAD_GRAYSCALE)  # noqa: E731
    ms = {k: [] for k in ("plain_new", "plain_base", "curled_xy", "curled_y_only", "sideways_new", "sideways_base")}
    split = {"plain_new": 0, "plain_base": 0, "sideways_new": 0, "sideways_base": 0}
    for i, r in enumerate(rows):
        img = load(r)
        curled = degrade.curl(img, 1.0, spine="right" if i % 2 else "left")
        j = everything.index(r)
        nxt = everything[j + 1] if j + 1 < len(everything) and everything[j + 1]["book"] == r["book"] else everything[j - 1]
        turn = 90 if i % 2 else 270
        spread = sideways(img, load(nxt), turn)
        for rep in range(args.repeat):
            for name, fn, im in (("plain_new", new, img), ("plain_base", old, img), ("sideways_new", new, spread),
                                 ("sideways_base", old, spread), ("curled_xy", new, curled)):
                t, parts = timed(fn, im)
                ms[name].append(t)
                if rep == 0 and name in split:
                    split[name] += in_order(parts, spread, turn) if name.startswith("sideways") else len(parts) > 1
            with y_only():
                ms["curled_y_only"].append(timed(new, curled)[0])
    med = {k: round(statistics.median(v), 1) for k, v in ms.items()}
    print(json.dumps({"benchmark": "prep_ab", "base": args.base, "pages": len(rows), "repeat": args.repeat,
                      "median_ms_per_call": med,
                      "plain_new_over_base": round(med["plain_new"] / med["plain_base"], 3),
                      "curled_xy_over_y_only": round(med["curled_xy"] / med["curled_y_only"], 3),
                      "sideways_new_over_base": round(med["sideways_new"] / med["sideways_base"], 3),
                      "plain_pages_split": {"new": split["plain_new"], "base": split["plain_base"]},
                      "sideways_spreads_split_in_order": {"new": split["sideways_new"], "base": split["sideways_base"]}}, indent=2))


if __name__ == "__main__":
    main()
