"""A committed library in a moto S3 server of its own process, built straight into moto's store, for
bench/skip_committed.py --s3 (the driver's memory is then its own, not the server's).

    python bench/moto_fixture.py --books 1000000 --new 10 --layout compacted

Prints one JSON line ({"port", "build_seconds", ...}) once the server is up, and serves until its
stdin closes. What it holds, in two buckets:
- `s3://bench-src/src/`: `--books` placeholder PDFs `book_NNNNNNN.pdf` (never opened: a committed
  book is skipped before it is read) and `--new` more, `book_NNNNNNNn.pdf`, the first right after
  the 500th committed book (so on the listing's first page), the others spread evenly.
- `s3://bench-out/out/documents/`: one real documents part per `--shard-docs` committed books, in
  the DOCUMENTS schema, named as DatasetWriter names them; their rows are one real shard's rows
  (assemble_shard) with each book's doc_id, source_uri and fingerprint, as the real listing makes them.
  Pages parts are placeholders of the same names (a restart lists them, never reads them).
- `--layout compacted`: `out/_index/` holds a base (pipeline/compacted.py, the real encoder) covering
  every documents part but the last `--legacy-parts`, which stay uncovered (read directly, like parts a
  killed run left without a delta). `--layout legacy`: no index (today's layout).
Objects go into moto's backend directly: a million PUTs over HTTP would take an hour here.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RUN = "20260101T000000Z-bench0"


def new_positions(books: int, new: int) -> list[int]:
    """After which committed book each new book is listed."""
    step = max(1, books // max(new, 1))
    return [min(books - 1, 500 + j * step) for j in range(new)] if books else []


def fill(backend, books: int, new: int, shard_docs: int, layout: str, legacy_parts: int) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from folioscan.pipeline.assemble import assemble_shard
    from folioscan.pipeline.sources import pdf_document
    from folioscan.records import OcrResult, PageResult, PageWork, SourceObject
    from folioscan.schemas import DOCUMENTS

    for b in ("bench-src", "bench-out"):
        backend.create_bucket(b, "us-east-1")
    ids, uris, fps = [], [], []
    after = set(new_positions(books, new))
    for i in range(books):
        key = f"src/book_{i:07d}.pdf"
        body = b"%%PDF-1.4 placeholder %d\n%%%%EOF\n" % i
        backend.put_object("bench-src", key, body)
        doc = pdf_document(SourceObject(f"s3://bench-src/{key}", len(body), "etag:" + hashlib.md5(body).hexdigest()))
        ids.append(doc.doc_id), uris.append(doc.uri), fps.append(doc.fingerprint)
        if i in after:
            backend.put_object("bench-src", f"src/book_{i:07d}n.pdf", b"%%PDF-1.4 new %d\n%%%%EOF\n" % i)
    # one real shard's documents rows, as the template of every part
    first = [pdf_document(SourceObject(u, 40, f)) for u, f in zip(uris[:shard_docs], fps[:shard_docs])]
    results = [PageResult(PageWork(d.doc_id, d.uri, 0, 1), "ok", OcrResult(f"text of {d.uri}", [], 0.9), "tesseract", "5")
               for d in first]
    template = pq.read_table(io.BytesIO(DOCUMENTS.to_parquet_bytes(assemble_shard(first, results, RUN)[1])))
    cols = {name: template.schema.get_field_index(name) for name in ("doc_id", "source_uri", "fingerprint")}
    parts = []
    for k in range(0, books, shard_docs):
        n = min(shard_docs, books - k)
        t = template.slice(0, n)
        for name, values in (("doc_id", ids), ("source_uri", uris), ("fingerprint", fps)):
            t = t.set_column(cols[name], template.schema.field(name), pa.array(values[k:k + n], pa.string()))
        buf = io.BytesIO()
        pq.write_table(t, buf, compression="zstd")
        name = f"part-{RUN}-{len(parts):05d}.parquet"
        backend.put_object("bench-out", f"out/documents/{name}", buf.getvalue())
        backend.put_object("bench-out", f"out/pages/{name}", b"PAR1 placeholder")  # listed by recovery, never read
        parts.append(name)
    out = {"books": books, "new": new, "parts": len(parts), "layout": layout}
    if layout == "compacted":
        out["index"] = write_index(backend, ids, uris, parts, shard_docs, legacy_parts,
                                   template.column("processed_at")[0].as_py().timestamp())
    return out


def write_index(backend, ids, uris, parts, shard_docs, legacy_parts, at) -> dict:
    import numpy as np

    from folioscan.pipeline import compacted

    covered = max(0, len(parts) - legacy_parts)
    n = min(len(ids), covered * shard_docs)
    keys = np.frombuffer(bytes.fromhex("".join(ids[:n])), ">u8").reshape(-1, 2).astype("u8")
    ukeys = np.frombuffer(b"".join(hashlib.sha256(u.encode()).digest()[:16] for u in uris[:n]), ">u8").reshape(-1, 2).astype("u8")
    cols = {"doc_hi": keys[:, 0], "doc_lo": keys[:, 1], "uri_hi": ukeys[:, 0], "uri_lo": ukeys[:, 1],
            "part": (np.arange(n) // shard_docs).astype("u4"), "at": np.full(n, at), "attempts": np.ones(n, "u2"),
            "status": np.zeros(n, "u1"), "kind": np.zeros(n, "u1"), "dup_hi": np.zeros(n, "u8"), "dup_lo": np.zeros(n, "u8")}
    chunk, _ = compacted.resolve(compacted.Chunk(cols, parts[:covered], ["ok"], [None]))

    class BackendStore:  # compacted.write_base's writes, into moto's store
        def write(self, uri, data):
            backend.put_object("bench-out", uri.split("bench-out/", 1)[1], data)

        def delete_many(self, uris):
            pass

    loaded = compacted.Loaded([], set(), {}, [], [], [])
    name = compacted.write_base(BackendStore(), "s3://bench-out/out/_index", "bench", chunk, loaded)
    return {"base": name, "books": n, "parts_covered": covered, "parts_uncovered": len(parts) - covered,
            "base_bytes": len(compacted.encode(chunk))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--books", type=int, default=10_000)
    ap.add_argument("--new", type=int, default=10)
    ap.add_argument("--shard-docs", type=int, default=16)
    ap.add_argument("--layout", choices=("compacted", "legacy"), default="compacted")
    ap.add_argument("--legacy-parts", type=int, default=100)
    args = ap.parse_args()
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(k, "bench")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    t0 = time.perf_counter()
    info = fill(s3_backends[DEFAULT_ACCOUNT_ID]["aws"], args.books, args.new, args.shard_docs, args.layout,
                args.legacy_parts)
    info.update(port=server._server.server_port, build_seconds=round(time.perf_counter() - t0, 1))
    print(json.dumps(info), flush=True)
    sys.stdin.read()  # serve until the bench closes our stdin
    server.stop()


if __name__ == "__main__":
    main()
