"""Word boxes for VLM-read pages (`--boxes tesseract`), measured without a GPU on old_books.

The VLM is played by the `truth` engine (its text is the page's ground truth), so what is measured
is the placement alone: how many ground-truth words land on a measured word box, on their line's
box only, or nowhere; and whether a word's box is the one Tesseract gave that same word.

Each page goes through the production code: the page stage's cleaning (`prepare_page`) and box read
(`workers/boxes.read_boxes`: Tesseract, fast eng data, psm 3), then the OCR stage with the truth
engine and `boxes: tesseract` (`workers/boxes.place_words` -> `engines/align.py`). For the per-word
figures the same pure function (`align.align`) is called once more on the same inputs (it is
deterministic; the counts are checked to agree with the stage's).

"The box Tesseract gave the same word" is defined independently of the aligner: Tesseract's words
in reading order, a line-end word ending in a hyphen joined with the next line's first word (one
token with both boxes), and the ground truth's words, both normalised (`align.normalise`: NFKC,
plain quotes and dashes, no case, no punctuation at the ends), are matched by difflib's
SequenceMatcher on EXACT equality only (monotone, no similarity). A ground-truth word placed on a
word box whose exact counterpart exists is right when each of its boxes has IoU >= 0.5 with the
counterpart's (a hyphen split: both halves). A word placed on its line's box only is right when at
least half of its counterpart's box lies inside that line box. Words Tesseract misread have no
exact counterpart and cannot be checked this way; they are counted separately.

CPU cost: process CPU time (time.process_time, this process is single-threaded, OMP_THREAD_LIMIT=1)
of the Tesseract read and of the OCR stage's alignment, per page; the stage's own wall-clock
figures (box_alignment.tesseract_ms, align_ms) are reported too.

    python bench/vlm_boxes.py [--limit N] [--out bench/vlm_boxes.json]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_THREAD_LIMIT", "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import difflib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import cv2  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from evalset import OLD_BOOKS, manifest  # noqa: E402

from folioscan.records import PageWork  # noqa: E402
from folioscan.workers import boxes  # noqa: E402
from folioscan.workers.engines import align  # noqa: E402
from folioscan.workers.engines.registry import TruthOptions  # noqa: E402
from folioscan.workers.ocr_stage import OcrStage  # noqa: E402
from folioscan.workers.prep import PrepOptions, prepare_page  # noqa: E402

IOU = 0.5


def iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def inside(a, line) -> float:
    """Share of box `a` inside box `line`."""
    ix = max(0, min(a[2], line[2]) - max(a[0], line[0]))
    iy = max(0, min(a[3], line[3]) - max(a[1], line[1]))
    area = (a[2] - a[0]) * (a[3] - a[1])
    return ix * iy / area if area > 0 else 0.0


def reference(truth_words: list[str], tess_lines) -> dict[int, list]:
    """GT word index -> Tesseract's box(es) of the same word, by exact normalised match (see above)."""
    tokens: list[tuple[str, list]] = []
    flat = [(w, k) for k, l in enumerate(tess_lines) for w in l.words if w.text.strip()]
    i = 0
    while i < len(flat):
        w, k = flat[i]
        if w.text.endswith(align.HYPHENS) and len(w.text) > 1 and i + 1 < len(flat) and flat[i + 1][1] != k:
            nxt = flat[i + 1][0]
            tokens.append((align.normalise(w.text[:-1]) + align.normalise(nxt.text), [tuple(w.box), tuple(nxt.box)]))
            i += 2
        else:
            tokens.append((align.normalise(w.text), [tuple(w.box)]))
            i += 1
    a = [align.normalise(t) for t in truth_words]
    sm = difflib.SequenceMatcher(None, a, [t for t, _ in tokens], autojunk=False)
    out = {}
    for blk in sm.get_matching_blocks():
        for d in range(blk.size):
            out[blk.a + d] = tokens[blk.b + d][1]
    return out


def page_figures(row: dict, stage: OcrStage, options: TruthOptions) -> dict:
    image = cv2.imread(os.path.join(OLD_BOOKS, "pages", row["page_name"] + ".png"), cv2.IMREAD_GRAYSCALE)
    work = PageWork(row["book"], row["pdf"], row["page_index"], 1, image=image)
    parts = prepare_page(work, PrepOptions())
    if len(parts) != 1:
        return {"page": row["page_name"], "skipped": f"split into {len(parts)} pages"}
    [work] = parts
    c0 = time.process_time()
    boxes.read_boxes(work, options)
    tess_cpu = (time.process_time() - c0) * 1000
    tess = work.box_read.result
    tess_lines = copy.deepcopy(tess.lines)
    c0 = time.process_time()
    [result] = stage([work])
    align_cpu = (time.process_time() - c0) * 1000  # the OCR stage's whole call: truth lookup + alignment
    ba = result.ocr.box_alignment
    truth_lines = [t for t in result.ocr.text.split("\n") if t.strip()]
    placed = align.align(truth_lines, align.tess_words(tess_lines))
    counts = placed.counts()
    assert (counts["word"], counts["line"], counts["none"]) == (ba.words, ba.lines, ba.none), (row, counts, ba)
    words = [w.text for w in placed.words]
    ref = reference(words, tess_lines)
    checked = right = line_checked = line_right = 0
    for i, w in enumerate(placed.words):
        if i not in ref:
            continue
        if w.kind == align.WORD:
            checked += 1
            ours = [p.box for p in w.parts]
            right += len(ours) == len(ref[i]) and all(iou(a, b) >= IOU for a, b in zip(ours, ref[i]))
        elif w.kind == align.LINE:  # its line's box holds (at least half of) Tesseract's box of the word
            line_checked += 1
            line_right += inside(ref[i][0], placed.lines[w.line].box) >= 0.5
    return {"page": row["page_name"], "book": row["book"], "gt_words": len(words), "word_box": counts["word"],
            "line_box": counts["line"], "none": counts["none"], "reference": len(ref),
            "reference_on_word_box": sum(1 for i in ref if placed.words[i].kind == align.WORD),
            "checked": checked, "iou_ok": right, "line_checked": line_checked, "line_ok": line_right, "error": ba.error,
            "tesseract_cpu_ms": tess_cpu, "align_cpu_ms": align_cpu,
            "tesseract_wall_ms": ba.tesseract_ms, "align_wall_ms": ba.align_ms, "tess_words": len(align.tess_words(tess_lines))}


def _ms(values: list[float]) -> dict:
    return {"mean": round(statistics.mean(values), 1), "median": round(statistics.median(values), 1),
            "max": round(max(values), 1)} if values else {}


def summarise(pages: list[dict]) -> dict:
    done = [p for p in pages if "skipped" not in p]
    gt = sum(p["gt_words"] for p in done)
    on_word = sum(p["word_box"] for p in done)
    ref = sum(p["reference"] for p in done)
    checked = sum(p["checked"] for p in done)
    return {
        "pages": len(done), "pages_skipped": len(pages) - len(done), "pages_box_errors": sum(bool(p["error"]) for p in done),
        "gt_words": gt,
        "share_on_word_box": round(on_word / gt, 4) if gt else None,
        "share_on_line_box": round(sum(p["line_box"] for p in done) / gt, 4) if gt else None,
        "share_no_box": round(sum(p["none"] for p in done) / gt, 4) if gt else None,
        "gt_words_with_exact_tesseract_counterpart": ref,
        "of_those_placed_on_a_word_box": round(sum(p["reference_on_word_box"] for p in done) / ref, 4) if ref else None,
        "word_boxes_checked": checked,
        "of_word_boxes_checked_iou_ge_0_5": round(sum(p["iou_ok"] for p in done) / checked, 4) if checked else None,
        "word_boxes_unverifiable_no_exact_counterpart": on_word - checked,
        "line_box_words_checked": sum(p["line_checked"] for p in done),
        "of_line_box_words_checked_in_their_line_box": (round(sum(p["line_ok"] for p in done) / sum(p["line_checked"] for p in done), 4)
                                                       if sum(p["line_checked"] for p in done) else None),
        "tesseract_cpu_ms_per_page": _ms([p["tesseract_cpu_ms"] for p in done]),
        "align_cpu_ms_per_page": _ms([p["align_cpu_ms"] for p in done]),
        "tesseract_wall_ms_per_page": _ms([p["tesseract_wall_ms"] for p in done]),
        "align_wall_ms_per_page": _ms([p["align_wall_ms"] for p in done]),
        "words_per_page": _ms([float(p["gt_words"]) for p in done]),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, help="pages, spread evenly over the manifest (default: all 178)")
    ap.add_argument("--out", help="also write the JSON here, with every page's figures")
    args = ap.parse_args()
    rows = manifest()
    if args.limit and args.limit < len(rows):
        step = len(rows) / args.limit
        rows = [rows[int(k * step)] for k in range(args.limit)]
    options = TruthOptions(manifest=os.path.join(OLD_BOOKS, "manifest.csv"), boxes="tesseract")
    stage = OcrStage(options)
    t0 = time.perf_counter()
    pages = []
    for row in rows:
        pages.append(page_figures(row, stage, options))
        print(json.dumps(pages[-1]), file=sys.stderr, flush=True)
    by_book = {b: summarise([p for p in pages if p.get("book") == b]) for b in sorted({r["book"] for r in rows})}
    out = {"bench": "vlm_boxes", "command": "python bench/vlm_boxes.py" + (f" --limit {args.limit}" if args.limit else ""),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)", "engine": "truth (ground truth text) + tesseract fast eng",
           "seconds": round(time.perf_counter() - t0, 1), **summarise(pages),
           "by_book": {b: {k: s[k] for k in ("pages", "gt_words", "share_on_word_box", "share_on_line_box", "share_no_box",
                                             "of_word_boxes_checked_iou_ge_0_5")} for b, s in by_book.items()}}
    print(json.dumps(out, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({**out, "per_page": pages}, f, indent=1)


if __name__ == "__main__":
    main()
