"""Bounded memory: peak RSS of a job over one long book against one short book. Prints one JSON object.

    python bench/memory.py [--pages 2000 20] [--long-side 1000] [--executor ray]

Each book is a scanned-style PDF of full-size 300-dpi pages (2621 x 1850 px by default): every
`--text-every`-th page embeds a real old_books page scan, the others a blank sheet of the same
size (two image objects shared by all pages, so a 2,000-page PDF stays small on disk). Every
page is extracted at full size, cleaned, queued and handed to an OCR actor like any other; only
Tesseract's read is skipped for the blank ones, so 2,000 pages fit in minutes on a shared
2-core machine while the image traffic the benchmark is about stays whole.
Peak RSS and PSS are sampled every 0.5 s over the driver and all its child processes (local
Ray's daemons and workers included).
"""
from __future__ import annotations

import argparse
import io
import json
import os
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

    def sample(self) -> None:
        import psutil

        rss = pss = 0
        roles: dict[str, list[int]] = {}
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                info = p.memory_full_info()
                rss, pss = rss + info.rss, pss + info.pss
                r = roles.setdefault(_role(p), [0, 0])
                r[0], r[1] = r[0] + info.rss, r[1] + info.pss
            except psutil.Error:
                pass
        self.rss, self.pss = max(self.rss, rss), max(self.pss, pss)
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


def book_pdf(path: str, pages: int, long_side: int, text_every: int) -> int:
    """Page i is the real scan when i % text_every == 0, else a blank sheet of the same size."""
    import pymupdf
    from PIL import Image

    im = Image.open(os.path.join(OLD_BOOKS, "pages", "a013.png")).convert("L")
    if long_side:
        im.thumbnail((long_side, long_side))
    streams = [_png(im), _png(Image.new("L", im.size, 255))]
    doc = pymupdf.open()
    xrefs = [0, 0]
    for i in range(pages):
        k = 0 if i % text_every == 0 else 1
        page = doc.new_page(width=im.width * 72 / 300, height=im.height * 72 / 300)
        xrefs[k] = page.insert_image(page.rect, stream=streams[k] if not xrefs[k] else None, xref=xrefs[k])
    doc.save(path)
    return im.width * im.height


def run(pages: int, args) -> dict:
    src, out = tempfile.mkdtemp(prefix="mem-src-"), tempfile.mkdtemp(prefix="mem-out-")
    pixels = book_pdf(os.path.join(src, f"book_{pages}.pdf"), pages, args.long_side, args.text_every)
    summary_file = os.path.join(out, "summary.json")
    cmd = [sys.executable, "-m", "folioscan", "run", src, os.path.join(out, "data"), "--executor", args.executor,
           "--quiet", "--summary-json", summary_file]
    t0 = time.perf_counter()
    with PeakMemory(os.getpid()) as mem:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"job failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = json.load(open(summary_file))
    return {"pages": summary["pages"], "page_pixels": pixels, "pdf_mb": round(os.path.getsize(os.path.join(src, f"book_{pages}.pdf")) / 1e6, 2),
            "seconds": round(time.perf_counter() - t0, 1), "pages_per_s": summary["pages_per_s"], "peak_rss_mb": round(mem.rss / 2**20, 1), "peak_pss_mb": round(mem.pss / 2**20, 1),
            "peak_mb_by_role_rss_pss": {k: [round(v / 2**20) for v in rp] for k, rp in sorted(mem.by_role.items())}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", nargs=2, type=int, default=[2000, 20], metavar=("LONG", "SHORT"))
    ap.add_argument("--long-side", type=int, default=0, help="downscale the page image to this many px (0: native 300 dpi)")
    ap.add_argument("--text-every", type=int, default=10, help="every n-th page is the real scan, the others blank sheets")
    ap.add_argument("--executor", default="ray", choices=["ray", "local"])
    args = ap.parse_args()
    long, short = (run(n, args) for n in args.pages)
    print(json.dumps({"benchmark": "memory", "executor": args.executor, "cpus": os.cpu_count(), "long_book": long,
                      "short_book": short, "peak_rss_ratio_long_over_short": round(long["peak_rss_mb"] / short["peak_rss_mb"], 3),
                      "peak_pss_ratio_long_over_short": round(long["peak_pss_mb"] / short["peak_pss_mb"], 3)},
                     indent=2))


if __name__ == "__main__":
    main()
