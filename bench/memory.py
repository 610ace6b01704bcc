"""Bounded memory: peak RSS of a job over one long book against one short book. Prints one JSON object.

    python bench/memory.py [--pages 2000 20] [--engine synthetic|tesseract] [--executor ray] [--long-side 0]

Each book is a scanned-style PDF of full-size 300-dpi pages in which every page has text: the
scans of old_books book d (`--book d`, 30 pages) repeated in order (each scan stored once in the
PDF, so a 2,000-page PDF stays small on disk). Every page is extracted at full size, cleaned,
queued, read by the engine and written like any other. `--engine synthetic` (the default) returns
about 300 words with boxes per page at once (workers/engines/synthetic.py), so 2,000 pages fit in
minutes on a shared 2-core machine while the results the driver has to carry are those of a real
text page; `--engine tesseract` reads them for real (about 1-2 pages/s here: use fewer pages).
`--text-every N` puts a blank sheet between the scans (the benchmark's layout before issue 18:
N=10 is 90% blank pages, which hides the growth with book length).

Peak RSS and PSS are sampled every 0.5 s over the whole run, summed over the job's process tree:
the driver and every process under it (local Ray's daemons, loaders and OCR actors); the driver
process's own peaks are printed beside (`driver_peak_rss_mb`, `driver_peak_pss_mb`).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from evalset import OLD_BOOKS, Sampler  # noqa: E402


class PeakMemory(Sampler):
    """Peak over time of the sums of RSS and of PSS over a process and all its children, sampled.
    RSS counts a shared page (Ray's object store is shared memory) once in every process that has
    touched it; PSS splits it between them, so its sum is the memory actually in use."""

    def __init__(self, pid: int, every: float = 0.5):
        import psutil

        self.proc, self.every, self.rss, self.pss = psutil.Process(pid), every, 0, 0
        self.by_role: dict[str, list[int]] = {}  # role -> [peak RSS, peak PSS] of its processes summed
        self.driver = [0, 0]  # the process `pid` alone: [peak RSS, peak PSS]
        self.t0, self.timeline = time.perf_counter(), []  # (seconds, RSS of the tree) every 30 s

    def sample(self) -> None:
        import psutil

        rss = pss = 0
        roles: dict[str, list[int]] = {}
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                info = p.memory_full_info()
                rss, pss = rss + info.rss, pss + info.pss
                r = roles.setdefault("driver" if p.pid == self.proc.pid else _role(p), [0, 0])
                r[0], r[1] = r[0] + info.rss, r[1] + info.pss
            except psutil.Error:
                pass
        self.rss, self.pss = max(self.rss, rss), max(self.pss, pss)
        self.driver = [max(self.driver[0], roles.get("driver", [0, 0])[0]), max(self.driver[1], roles.get("driver", [0, 0])[1])]
        t = time.perf_counter() - self.t0
        if not self.timeline or t - self.timeline[-1][0] >= 30:
            self.timeline.append((round(t), round(rss / 2**20)))
        for role, (r_rss, r_pss) in roles.items():
            peak = self.by_role.setdefault(role, [0, 0])
            peak[0], peak[1] = max(peak[0], r_rss), max(peak[1], r_pss)


def _role(p) -> str:
    """What a process is, for the per-role peaks: Ray names its workers by their task or actor."""
    name = " ".join(p.cmdline()[:3])
    for role in ("OcrActor", "_load", "raylet", "gcs_server", "folioscan", "dashboard", "ray::IDLE"):
        if role in name:
            return role
    return "other"


def _png(im) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def book_pdf(path: str, pages: int, long_side: int, text_every: int, book: str) -> int:
    """Page i shows the scans of old_books `book` in turn (each stored once); with text_every > 1 only
    every text_every-th page does, the others are blank sheets of the same size."""
    import pymupdf
    from PIL import Image

    names = sorted(n for n in os.listdir(os.path.join(OLD_BOOKS, "pages")) if n.startswith(book) and n[len(book):-4].isdigit())
    images = [Image.open(os.path.join(OLD_BOOKS, "pages", n)).convert("L") for n in names]
    for im in images:
        if long_side:
            im.thumbnail((long_side, long_side))
    blank = Image.new("L", images[0].size, 255)
    doc = pymupdf.open()
    xrefs: dict[int, int] = {}
    for i in range(pages):
        k = (i // text_every) % len(images) if i % text_every == 0 else -1
        im = images[k] if k >= 0 else blank
        page = doc.new_page(width=im.width * 72 / 300, height=im.height * 72 / 300)
        xrefs[k] = page.insert_image(page.rect, stream=_png(im) if k not in xrefs else None, xref=xrefs.get(k, 0))
    doc.save(path)
    return sum(im.width * im.height for im in images) // len(images)


def run(pages: int, args) -> dict:
    src, out = tempfile.mkdtemp(prefix="mem-src-"), tempfile.mkdtemp(prefix="mem-out-")
    pixels = book_pdf(os.path.join(src, f"book_{pages}.pdf"), pages, args.long_side, args.text_every, args.book)
    summary_file = os.path.join(out, "summary.json")
    cmd = [sys.executable, "-m", "folioscan", "run", src, os.path.join(out, "data"), "--executor", args.executor,
           "--engine", args.engine, "--quiet", "--summary-json", summary_file]
    t0 = time.perf_counter()
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with PeakMemory(job.pid) as mem:  # the job's tree: the driver and everything under it, not this process
        _, err = job.communicate()
    if job.returncode != 0:
        raise SystemExit(f"job failed ({job.returncode}):\n{err[-3000:]}")
    summary = json.load(open(summary_file))
    pdf_mb = round(os.path.getsize(os.path.join(src, f"book_{pages}.pdf")) / 1e6, 2)
    shutil.rmtree(src), shutil.rmtree(out)
    return {"pages": summary["pages"], "pages_ok": summary["pages"] - summary["pages_failed"] - summary["pages_blank"],
            "page_pixels": pixels, "pdf_mb": pdf_mb,
            "seconds": round(time.perf_counter() - t0, 1), "pages_per_s": summary["pages_per_s"],
            "peak_rss_mb": round(mem.rss / 2**20, 1), "peak_pss_mb": round(mem.pss / 2**20, 1),
            "driver_peak_rss_mb": round(mem.driver[0] / 2**20, 1), "driver_peak_pss_mb": round(mem.driver[1] / 2**20, 1),
            "peak_mb_by_role_rss_pss": {k: [round(v / 2**20) for v in rp] for k, rp in sorted(mem.by_role.items())},
            "tree_rss_mb_every_30s": mem.timeline}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", nargs=2, type=int, default=[2000, 20], metavar=("LONG", "SHORT"))
    ap.add_argument("--long-side", type=int, default=0, help="downscale the page image to this many px (0: native 300 dpi)")
    ap.add_argument("--text-every", type=int, default=1, help="1: every page is a scan with text; n: every n-th, the others blank sheets")
    ap.add_argument("--book", default="d", help="the old_books book whose page scans are repeated")
    ap.add_argument("--engine", default="synthetic", choices=["synthetic", "tesseract"])
    ap.add_argument("--executor", default="ray", choices=["ray", "local"])
    args = ap.parse_args()
    long, short = (run(n, args) for n in args.pages)
    ratio = round(long["peak_rss_mb"] / short["peak_rss_mb"], 3)
    print(json.dumps({"benchmark": "memory", "engine": args.engine, "executor": args.executor, "cpus": os.cpu_count(),
                      "text_every": args.text_every, "book": args.book, "long_book": long, "short_book": short,
                      "peak_rss_ratio_long_over_short": ratio,
                      "peak_pss_ratio_long_over_short": round(long["peak_pss_mb"] / short["peak_pss_mb"], 3),
                      "driver_peak_rss_ratio_long_over_short": round(long["driver_peak_rss_mb"] / short["driver_peak_rss_mb"], 3),
                      "target_rss_ratio": 1.2, "target_met": ratio <= 1.2}, indent=2))


if __name__ == "__main__":
    main()
