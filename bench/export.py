"""Archive exports on a real book: time and bytes per page for ALTO, hOCR, the searchable PDF, the page
images and the IIIF manifest (links under a base URL, as published), the PDF's size overhead per page,
and that its text and word boxes agree with the OCR; the book's METS (time, size, schema errors, pages
with an ORDERLABEL, logical divs). Prints one JSON object.

    python bench/export.py [--book b] [--output DIR]   # old_books/pdf/book_<b>.pdf, Tesseract, local executor

The size baseline is the source PDF saved with the same options as the export (garbage collection,
deflate) in the same process, so the overhead is the text layer and nothing else.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from bench.evalset import OLD_BOOKS  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--book", default="b")
    ap.add_argument("--output", help="an existing dataset of the book (skips the OCR run)")
    args = ap.parse_args()
    import pymupdf

    from folioscan.export import ExportContext, format_function, iter_books
    from folioscan.export.alto import validate
    from folioscan.pipeline.config import JobConfig
    from folioscan.pipeline.job import run_job
    from folioscan.pipeline.storage import LocalStore
    from folioscan.workers.prep import transform as tf
    from tests.helpers import cer

    source = os.path.join(OLD_BOOKS, "pdf", f"book_{args.book}.pdf")
    work = tempfile.mkdtemp(prefix="folioscan-export-bench-")
    output = args.output
    ocr_s = None
    if not output:
        output = os.path.join(work, "out")
        t0 = time.perf_counter()
        run_job(JobConfig(source=source, output=output, executor="local", progress=False))
        ocr_s = time.perf_counter() - t0
    [book] = list(iter_books(LocalStore(), output))
    ctx = ExportContext(output, base_url="https://example.org/ocr/")
    n = len(book.pages)
    result = {"book": os.path.basename(source), "pages": n, "words": sum(len(l["words"]) for p in book.pages for l in p["lines"])}
    if ocr_s:
        result["ocr_s_per_page"] = round(ocr_s / n, 3)
    files = {}
    for fmt in ("alto", "hocr", "pdf", "images", "iiif"):
        t0 = time.perf_counter()
        files[fmt] = list(format_function(fmt)(book, ctx))
        result[f"{fmt}_ms_per_page"] = round((time.perf_counter() - t0) * 1000 / n, 1)
        result[f"{fmt}_bytes_per_page"] = round(sum(len(d) for _, d in files[fmt]) / n)
    result["alto_invalid_pages"] = sum(bool(validate(d)) for _, d in files["alto"])
    result.update(_mets(book, ctx))
    [manifest] = [d for rel, d in files["iiif"] if rel.endswith("/manifest.json")]
    result["iiif_manifest_bytes_per_page"] = round(len(manifest) / n)
    result["iiif_annotations_per_page"] = round(sum(len(json.loads(d)["items"]) for rel, d in files["iiif"] if "/annotations/" in rel) / n, 1)
    original = open(source, "rb").read()
    resaved = pymupdf.open(stream=original).tobytes(garbage=3, deflate=True)
    pdf = files["pdf"][0][1]
    result.update(source_bytes=len(original), source_resaved_bytes=len(resaved), searchable_bytes=len(pdf),
                  text_layer_bytes_per_page=round((len(pdf) - len(resaved)) / n),
                  text_layer_share=round((len(pdf) - len(resaved)) / len(resaved), 4))
    doc = pymupdf.open(stream=pdf)
    cers, hits, words = [], 0, 0
    for row in book.pages:
        if row["status"] != "ok":
            continue
        page = doc[row["page_index"]]
        cers.append(cer(page.get_text("text"), row["text"]))
        extracted = page.get_text("words")
        for line in row["lines"]:
            for w in line["words"]:
                words += 1
                box = tf.apply_matrix(row["pdf_transform"], w["box_source"])
                hits += any(e[4] == w["text"] and _iou(e[:4], box) >= 0.5 for e in extracted)
    result.update(pdf_text_cer_mean=round(sum(cers) / max(len(cers), 1), 5), pdf_text_cer_max=round(max(cers, default=0), 5),
                  pdf_words_iou_ge_0_5=round(hits / max(words, 1), 4))
    print(json.dumps(result))


def _mets(book, ctx) -> dict:
    from lxml import etree

    from folioscan.export import mets

    t0 = time.perf_counter()
    [(_, xml)] = list(mets.write_book(book, ctx))
    ms = (time.perf_counter() - t0) * 1000
    root = etree.fromstring(xml)
    ns = {"m": mets.METS}
    pages = root.findall("m:structMap[@TYPE='PHYSICAL']/m:div/m:div", ns)
    return {"mets_ms_per_page": round(ms / max(len(book.pages), 1), 2), "mets_bytes": len(xml),
            "mets_schema_errors": len(mets.validate(xml)), "mets_pages": len(pages),
            "mets_pages_with_orderlabel": sum(p.get("ORDERLABEL") is not None for p in pages),
            "mets_logical_divs": [d.get("TYPE") for d in root.findall("m:structMap[@TYPE='LOGICAL']/m:div/m:div", ns)]}


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union if union > 0 else 0.0


if __name__ == "__main__":
    main()
