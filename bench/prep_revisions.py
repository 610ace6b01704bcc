"""Cleaning of this tree against another revision's: time per page and whether anything it decides
or outputs changed. Prints one JSON object.

Every old_books page loaded from its PDF as the job loads it, plus the three other quarter turns of
every sixth page (274 page turns), cleaned with the default options on one thread. Each tree runs
in its own process (the base revision from a temporary `git worktree`, whole package), the two
alternating `--repeat` times so machine load hits both alike. Per page turn: every PrepInfo
decision and measurement and an MD5 of each output image; the JSON counts the page turns on which
each field differs.

    python bench/prep_revisions.py --base 2acaaf2 [--repeat 2]
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))

FIELDS = ("side", "orientation", "orientation_confidence", "deskew_angle", "curvature", "dewarped", "x_height",
          "est_chars", "n_lines", "is_blank", "upscale", "crop_box")


def clean_all() -> dict:
    """Runs inside the tree under test (its `folioscan` first on sys.path)."""
    import cv2

    from evalset import OLD_BOOKS
    from folioscan.records import SourceDocument, SourceObject
    from folioscan.workers.load import LoadOptions, load_pages
    from folioscan.workers.prep import PrepOptions, prepare_page
    from folioscan.workers.prep.geometry import rot90

    cv2.setNumThreads(1)
    pages, seconds = {}, 0.0
    for book in "abcdef":
        path = os.path.join(OLD_BOOKS, "pdf", f"book_{book}.pdf")
        doc = SourceDocument(book, path, "pdf", (SourceObject(path, os.path.getsize(path), "-"),), "-")
        for work in load_pages(doc, lambda uri: open(uri, "rb").read(), LoadOptions()):
            for turn in (0, 90, 180, 270) if work.page_index % 6 == 0 else (0,):
                turned = copy.copy(work)
                turned.prep, turned.image = copy.deepcopy(work.prep), rot90(work.image, turn)
                t0 = time.perf_counter()
                parts = prepare_page(turned, PrepOptions())
                seconds += time.perf_counter() - t0
                pages[f"{book}{work.page_index}r{turn}"] = [
                    {**{f: _plain(getattr(p.prep, f, None) if f != "side" else p.side) for f in FIELDS},
                     "image_md5": hashlib.md5(p.image.tobytes()).hexdigest(), "shape": list(p.image.shape)} for p in parts]
    return {"ms_per_page": round(seconds * 1000 / len(pages), 1), "page_turns": len(pages), "pages": pages}


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


def run_tree(tree: str) -> dict:
    code = (f"import sys, json; sys.path[:0] = [{tree!r}, {os.path.dirname(os.path.abspath(__file__))!r}]; "
            "import prep_revisions; print(json.dumps(prep_revisions.clean_all()))")
    env = {**os.environ, "PYTHONPATH": tree, "OMP_THREAD_LIMIT": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tree)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True, help="git revision to compare with")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    base_dir = tempfile.mkdtemp(prefix="prep-base-")
    subprocess.run(["git", "-C", here, "worktree", "add", "-q", "--detach", base_dir, args.base], check=True)
    try:
        runs = {"base": [], "this": []}
        for _ in range(args.repeat):
            runs["base"].append(run_tree(base_dir))
            runs["this"].append(run_tree(here))
    finally:
        subprocess.run(["git", "-C", here, "worktree", "remove", "--force", base_dir], check=False)
    old, new = runs["base"][0]["pages"], runs["this"][0]["pages"]
    differs = {f: 0 for f in (*FIELDS, "image_md5", "shape", "parts")}
    for key in old:
        if len(old[key]) != len(new[key]):
            differs["parts"] += 1
            continue
        for field in differs:
            if field != "parts" and any(a.get(field) != b.get(field) for a, b in zip(old[key], new[key])):
                differs[field] += 1
    print(json.dumps({
        "benchmark": "prep_revisions", "base": args.base, "page_turns": len(old),
        "ms_per_page": {side: [r["ms_per_page"] for r in rs] for side, rs in runs.items()},
        "this_over_base": round(sum(r["ms_per_page"] for r in runs["this"]) / sum(r["ms_per_page"] for r in runs["base"]), 3),
        "page_turns_differing_by_field": differs,
    }, indent=2))


if __name__ == "__main__":
    main()
