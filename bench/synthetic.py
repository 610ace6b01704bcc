"""A committed output built with the real code, for benchmarks of what runs over one (skipping, reporting).

N placeholder *.pdf files (never opened: a committed book is skipped before it is read), their
SourceDocuments from the real listing, and shards committed by the real DatasetWriter.
"""
from __future__ import annotations

from typing import Callable


def committed_output(store, src: str, out: str, books: int, shard_docs: int, pages_of: Callable) -> int:
    """Write the sources and the committed output; `pages_of(doc)` gives each book's PageResults.
    Returns the number of parts written."""
    from folioscan.pipeline.assemble import assemble_shard
    from folioscan.pipeline.output import DatasetWriter
    from folioscan.pipeline.sources import iter_documents
    from folioscan.pipeline.storage import join

    for i in range(books):
        store.write(join(src, f"book_{i:06d}.pdf"), b"%%PDF-1.4 placeholder %d\n%%%%EOF\n" % i)
    docs = list(iter_documents(store, src))
    writer = DatasetWriter(store, out, "20260101T000000Z-bench0")
    parts = 0
    for k in range(0, len(docs), shard_docs):
        shard = docs[k:k + shard_docs]
        writer.commit(*assemble_shard(shard, [r for d in shard for r in pages_of(d)], writer.run_id))
        parts += 1
    return parts
