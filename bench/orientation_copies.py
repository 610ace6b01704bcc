"""Up/down from the analysis copy against the enlarged copy: where may orientation skip enlarging?
Prints one JSON object.

Every second old_books page and every page of the PDF hard cases, in all four quarter turns, cropped
as the pipeline crops them. For each: the turn `detect_orientation` decides (the analysis copy when
its balance is clear, the enlarged copy otherwise), the turn the analysis copy alone gives and
its up/down balance, and the turn the enlarged copy alone gives (the larger copy is made whenever
the lines are under `MIN_LINE_PX`, as before `DECISIVE` existed). `orientation.DECISIVE` is safe
when every disagreement between the two copies has a balance under it.

    python bench/orientation_copies.py
"""
from __future__ import annotations

import json
import os
import sys

import cv2

sys.path.insert(0, os.path.dirname(__file__))
from evalset import EVAL, OLD_BOOKS  # noqa: E402

from folioscan.records import SourceDocument, SourceObject  # noqa: E402
from folioscan.workers.load import LoadOptions, load_pages  # noqa: E402
from folioscan.workers.prep import crop, geometry, orientation  # noqa: E402


def copy_turns(small, full) -> tuple[int, float, int, int]:
    """(turn, balance, lines) from the analysis copy alone, and the turn from the enlarged copy."""
    mask, angle_h, sharp_h, angle_v, sharp_v = orientation.line_axes(small)
    base, tilt = (0, angle_h) if sharp_h >= sharp_v else (90, angle_v)
    balance, lines, height = orientation._upright_balance(small, mask, base, tilt)
    enlarged = balance
    if 0 < height < orientation.MIN_LINE_PX and full.shape[0] > small.shape[0]:
        factor = min(full.shape[0] / small.shape[0], orientation.MIN_LINE_PX / height)
        source = cv2.resize(full, (round(small.shape[1] * factor), round(small.shape[0] * factor)), interpolation=cv2.INTER_AREA)
        enlarged, _, _ = orientation._upright_balance(source, None, base, tilt)
    turn = lambda b: base if b >= 0 else (base + 180) % 360  # noqa: E731
    return turn(balance), balance, lines, turn(enlarged)


def main() -> None:
    cv2.setNumThreads(1)
    hard = os.path.join(EVAL, "hardcases")
    sources = [os.path.join(OLD_BOOKS, "pdf", f"book_{b}.pdf") for b in "abcdef"]
    sources += sorted(os.path.join(hard, f) for f in os.listdir(hard) if f.endswith(".pdf"))
    rows = []
    for path in sources:
        doc = SourceDocument(path, path, "pdf", (SourceObject(path, os.path.getsize(path), "-"),), "-")
        for work in load_pages(doc, lambda uri: open(uri, "rb").read(), LoadOptions()):
            if work.image is None or (path.startswith(OLD_BOOKS) and work.page_index % 2):
                continue
            for turn in (0, 90, 180, 270):
                full = geometry.rot90(work.image, turn)
                small, scale = geometry.analysis_copy(full)
                full, small, _ = crop.apply_crop(full, small, scale)
                decided, _ = orientation.detect_orientation(small, full)
                alone, balance, lines, enlarged = copy_turns(small, full)
                rows.append({"page": f"{os.path.basename(path)}:{work.page_index}", "turned": turn, "decided": decided,
                             "analysis_copy": alone, "enlarged_copy": enlarged, "balance": round(balance, 3), "lines": lines})
    disagree = [r for r in rows if r["analysis_copy"] != r["enlarged_copy"]]
    clear = [r for r in rows if abs(r["balance"]) >= orientation.DECISIVE and r["lines"] >= 6]
    print(json.dumps({"benchmark": "orientation_copies", "page_turns": len(rows), "decisive": orientation.DECISIVE,
                      "decided_from_the_analysis_copy": len(clear), "copies_disagree": len(disagree),
                      "decided_differs_from_enlarged_copy": sum(r["decided"] != r["enlarged_copy"] for r in rows),
                      "largest_balance_where_they_disagree": max((abs(r["balance"]) for r in disagree), default=None),
                      "disagreeing": disagree}, indent=2))


if __name__ == "__main__":
    main()
