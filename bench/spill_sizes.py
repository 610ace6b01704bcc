"""What a page costs the driver with and without the spill (pipeline/spill.py), with the synthetic engine.

    python bench/spill_sizes.py [--pages 200] [--words 300]

Per page: its PageResult in memory (what the driver held until the book committed, before issue 18),
its PageFacts (what the driver holds now), its TextFacts (what book text is made from: in the object
store with the Ray executor, in the driver with the local one), its row in the book's spill file
(Arrow IPC, uncompressed) and in the pages part (Parquet, zstd). Python memory by tracemalloc. The page image is an
old_books scan (book d); the synthetic engine lays `--words` words with boxes over it.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import tracemalloc

sys.path.insert(0, os.path.dirname(__file__))
from evalset import OLD_BOOKS  # noqa: E402

from folioscan.pipeline.assemble import assemble_books  # noqa: E402
from folioscan.pipeline.pagerows import PAGE_ROW, BookPages, PageFacts, TextFacts  # noqa: E402
from folioscan.pipeline.spill import Spill  # noqa: E402
from folioscan.records import PageResult, PageWork, SourceDocument  # noqa: E402
from folioscan.workers.engines.synthetic import SyntheticEngine  # noqa: E402


def main() -> None:
    import numpy as np
    from PIL import Image

    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=200)
    ap.add_argument("--words", type=int, default=300)
    args = ap.parse_args()
    n = args.pages
    image = np.array(Image.open(os.path.join(OLD_BOOKS, "pages", "d011.png")).convert("L"))
    engine = SyntheticEngine(words=args.words)

    def result(i: int) -> PageResult:
        [ocr] = engine.predict_batch([image[i % 7:]])  # a different crop, a different page of words
        return PageResult(PageWork("d", "/src/d.pdf", i, n, width=image.shape[1], height=image.shape[0]),
                          "ok", ocr, "synthetic", engine.version)

    tracemalloc.start()
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    results = [result(i) for i in range(n)]
    gc.collect()
    held = tracemalloc.get_traced_memory()[0]
    facts = [PageFacts.of(r) for r in results]
    gc.collect()
    kept = tracemalloc.get_traced_memory()[0]
    texts = [TextFacts.of(r) for r in results]
    gc.collect()
    texts_kept = tracemalloc.get_traced_memory()[0]
    del results
    tracemalloc.stop()
    del facts, texts
    spill = Spill(tempfile.mkdtemp())
    try:
        book = BookPages(spill.file(PAGE_ROW.schema), "bench")
        for i in range(n):
            book.append(result(i))
        book.rows.close()
        spilled = os.path.getsize(book.rows.path)
        rows, _ = assemble_books([SourceDocument("d", "/src/d.pdf", "pdf", (), "x")], {"d": book}, "bench")
        part = len(rows.parquet_bytes())
    finally:
        spill.close()
    kb = lambda b: round(b / n / 1024, 1)  # noqa: E731
    print(json.dumps({"benchmark": "spill_sizes", "pages": n, "words_per_page": args.words,
                      "page_result_in_memory_kb": kb(held - before), "page_facts_in_memory_kb": kb(kept - held),
                      "text_facts_kb": kb(texts_kept - kept),  # in the object store on Ray, in the driver with the local executor
                      "spill_file_kb": kb(spilled), "pages_part_parquet_kb": kb(part)}, indent=2))


if __name__ == "__main__":
    main()
