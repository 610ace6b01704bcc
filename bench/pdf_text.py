"""How the searchable PDF reads back: poppler's pdftotext on the exported PDF against the OCR text
folioscan recorded, per book of the eval set. Prints one JSON object per book.

    python bench/pdf_text.py [--books b,d] [--images] [--pdfa] [--work DIR] [--out FILE]

Each book of ../shared/eval/old_books/pdf/ goes through a real job (Tesseract, cleaning on, local
executor), then the PDF export; `--images` also runs each book's page images
(old_books/pages/<book>*.png) as an image-folder book. The dataset of each book is kept under
--work (default /tmp/folioscan-pdf-text) and reused when it is there, so the export can be measured
again without the OCR: the text layer is all that changes between two runs.

Per book, over its OCR'd pages:
- `default_cer`: pdftotext in its default (reading-order) mode, page by page, against the page
  text (whitespace normalised, end-of-line hyphens joined: tests/helpers.cer); `raw_cer`: the same
  with `pdftotext -raw` (content-stream order); mean of the pages and the worst page;
- `default_lines`/`raw_lines`: non-empty lines pdftotext wrote, against `ocr_lines`, the OCR's lines;
- `words_covered`: share of OCR words (with a box) for which a `pdftotext -bbox` word of the same
  text covers at least half of the word's box on the page (the word lies on its ink);
  `words_iou_0_5`: the stricter share whose boxes' IoU is at least 0.5.
- `pdf_ms_per_page`, `pdf_bytes`: writing the searchable PDF, its size; with `--pdfa`, the PDF/A-2b
  copy's Ghostscript time and size and `pdfa_default_cer`, pdftotext's default mode on that copy.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from bench.evalset import OLD_BOOKS  # noqa: E402


def measure(pdf_path: str, pages: list[dict]) -> dict:
    import pymupdf

    from folioscan.workers.prep import transform as tf
    from tests.helpers import cer, pdftotext, pdftotext_words, words_on_ink

    doc = pymupdf.open(pdf_path)
    d_cers, r_cers = [], []
    d_lines = r_lines = ocr_lines = words = covered = iou = 0
    for row in pages:
        if row["status"] != "ok" or not (row["text"] or "").strip():
            continue
        n = row["page_index"] + 1
        page = doc[row["page_index"]]
        default, raw = pdftotext(pdf_path, n), pdftotext(pdf_path, n, "-raw")
        d_cers.append(cer(default, row["text"]))
        r_cers.append(cer(raw, row["text"]))
        d_lines += sum(1 for l in default.splitlines() if l.strip())
        r_lines += sum(1 for l in raw.splitlines() if l.strip())
        ocr_lines += sum(1 for l in row["lines"] if l["text"].strip())
        m = row["pdf_transform"] or (72 / (row["dpi"] or 300.0), 0, 0, 0, 72 / (row["dpi"] or 300.0), 0)

        def shown(box, m=m, page=page):
            r = pymupdf.Rect(tf.apply_matrix(m, box)) * page.rotation_matrix
            return r.x0, r.y0, r.x1, r.y1

        nw, cov, good = words_on_ink(pdftotext_words(pdf_path, n), row, shown)
        words, covered, iou = words + nw, covered + cov, iou + good
    k = max(len(d_cers), 1)
    return {"pages": len(d_cers), "default_cer": round(sum(d_cers) / k, 5), "default_cer_max": round(max(d_cers, default=0), 5),
            "raw_cer": round(sum(r_cers) / k, 5), "raw_cer_max": round(max(r_cers, default=0), 5),
            "ocr_lines": ocr_lines, "default_lines": d_lines, "raw_lines": r_lines, "words": words,
            "words_covered": round(covered / max(words, 1), 4), "words_iou_0_5": round(iou / max(words, 1), 4)}


def run_book(name: str, source: str, work: str, pdfa: bool = False) -> dict:
    from folioscan.export import ExportContext, format_function, iter_books
    from folioscan.pipeline.config import JobConfig
    from folioscan.pipeline.job import run_job
    from folioscan.pipeline.storage import LocalStore

    output = os.path.join(work, name)
    result: dict = {"book": name}
    if not os.path.isdir(os.path.join(output, "documents")):
        t0 = time.perf_counter()
        run_job(JobConfig(source=source, output=output, executor="local", progress=False))
        result["ocr_s"] = round(time.perf_counter() - t0, 1)
    [book] = list(iter_books(LocalStore(), output))
    t0 = time.perf_counter()
    [(_, data)] = list(format_function("pdf")(book, ExportContext(output)))
    result["pdf_ms_per_page"] = round((time.perf_counter() - t0) * 1000 / max(len(book.pages), 1), 1)
    result["pdf_bytes"] = len(data)
    with tempfile.NamedTemporaryFile(suffix=".pdf") as f:
        f.write(data)
        f.flush()
        result.update(measure(f.name, book.pages))
    if pdfa:
        from folioscan.export.pdfa import to_pdfa

        t0 = time.perf_counter()
        archival = to_pdfa(data)
        result["pdfa_ms_per_page"] = round((time.perf_counter() - t0) * 1000 / max(len(book.pages), 1), 1)
        result["pdfa_bytes"] = len(archival)
        with tempfile.NamedTemporaryFile(suffix=".pdf") as f:
            f.write(archival)
            f.flush()
            result["pdfa_default_cer"] = measure(f.name, book.pages)["default_cer"]
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--books", default="a,b,c,d,e,f")
    ap.add_argument("--images", action="store_true", help="also each book's page images as an image-folder book")
    ap.add_argument("--pdfa", action="store_true", help="also the PDF/A-2b copy (needs Ghostscript): its time, size, and read-back")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "folioscan-pdf-text"))
    ap.add_argument("--out", help="also append the JSON lines to this file")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    jobs = []
    for b in args.books.split(","):
        pdf = os.path.join(OLD_BOOKS, "pdf", f"book_{b}.pdf")
        if os.path.exists(pdf):
            jobs.append((f"book_{b}", pdf))
        images = sorted(glob.glob(os.path.join(OLD_BOOKS, "pages", f"{b}*.png")))
        if args.images and images:
            folder = os.path.join(args.work, "sources", f"images_{b}")
            os.makedirs(folder, exist_ok=True)
            for p in images:
                link = os.path.join(folder, os.path.basename(p))
                if not os.path.exists(link):
                    os.symlink(os.path.abspath(p), link)
            jobs.append((f"images_{b}", folder))
    if not jobs:
        sys.exit(f"no books under {OLD_BOOKS} (the shared eval set is not here)")
    for name, source in jobs:
        line = json.dumps(run_book(name, source, args.work, args.pdfa))
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()
