"""What the driver costs: CPU per page and per book, the most pages/s one driver commits, and the
S3 requests per book, with the synthetic engine (no OCR cost; `delay_s` stands in for a GPU).

    python bench/driver.py                       # everything below, a few minutes on 2 cores
    python bench/driver.py --quick               # smaller runs (a smoke test of the bench)
    python bench/driver.py --json out.json       # also write the figures as JSON
    python bench/driver.py --breakdown           # only: the driver's work per page, part by part, in-process

Source and output are in S3: moto's server on 127.0.0.1 in a process of its own
(`bench/s3_count.py`), which counts the requests it serves by kind and area. The sources are
real PDFs (one small scanned-style raster per page, each page different); cleaning is off
(`--prep` turns it on) so the loaders take little of the machine's two cores from the driver.

Driver CPU is this process's own (getrusage RUSAGE_SELF: user + system, every thread: boto3, the
lease heartbeat, Ray's core worker in the driver; not Ray's workers, which are other processes),
for whole `run_job` calls over three sources: one one-page book (the fixed cost of a run), one
long book (P pages) and B one-page books. Per page = (long - fixed) / (P - 1); per one-page book =
(short - fixed) / (B - 1); per-book overhead = per one-page book - per page. With the local
executor the driver process also loads and reads the pages (and the synthetic engine's work is
in its figures): an upper bound on the driver's own work there.

Pages/s: M books of 10 pages through the Ray executor with N actors (1, 2, 4), each engine call
sleeping `--delay-s` (4 pages a call: 0.04 s is 100 pages/s per actor). The driver is the ceiling
when adding actors stops adding pages/s while the driver's CPU use nears one core.

Targets (issue 18): driver CPU <= 1 ms per page, per-book overhead <= 20 ms.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TARGET_MS_PER_PAGE = 1.0
TARGET_MS_PER_BOOK = 20.0
BATCH_SIZE = None  # --batch-size: pages per engine call (the job default when None)


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class CountingS3:
    def __init__(self):
        here = os.path.dirname(os.path.abspath(__file__))
        self.proc = subprocess.Popen([sys.executable, os.path.join(here, "s3_count.py")], stdout=subprocess.PIPE, text=True)
        port = int(self.proc.stdout.readline())
        self.endpoint = f"http://127.0.0.1:{port}"

    def counts(self, reset: bool = False) -> dict[str, int]:
        req = urllib.request.Request(self.endpoint + "/__counts" + ("/reset" if reset else ""), method="POST" if reset else "GET")
        with urllib.request.urlopen(req) as resp:
            return json.loads(resp.read())

    def set_latency(self, ms: float) -> None:
        """Every later request waits `ms` at the server (bench/s3_count.py): a real store's round trip."""
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/__latency/{ms:g}", method="POST")).read()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def page_png(i: int, size=(612, 792)) -> bytes:
    """A small page raster: text-like bars, different on every page."""
    import numpy as np
    from PIL import Image

    w, h = size
    img = np.full((h, w), 255, np.uint8)
    rng = np.random.default_rng(i)
    for row, y in enumerate(range(60, h - 60, 24)):
        x = 60
        while x < w - 80:
            n = int(rng.integers(12, 60))
            img[y:y + 10, x:x + n] = 30
            x += n + 8
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def pdf_of(pngs: list[bytes]) -> bytes:
    import pymupdf

    doc = pymupdf.open()
    for png in pngs:
        page = doc.new_page(width=612, height=792)
        page.insert_image(page.rect, stream=png)
    return doc.tobytes()


def build_sources(s3, pages: int, books: int, medium_books: int) -> dict[str, str]:
    import boto3

    client = boto3.client("s3", endpoint_url=s3.endpoint)
    client.create_bucket(Bucket="bench")
    pngs = [page_png(i) for i in range(max(pages, books, 10))]
    put = lambda key, data: client.put_object(Bucket="bench", Key=key, Body=data)  # noqa: E731
    put("src/one/book.pdf", pdf_of(pngs[:1]))
    put("src/long/book.pdf", pdf_of(pngs[:pages]))
    for i in range(books):
        put(f"src/short/book_{i:05d}.pdf", pdf_of([pngs[i]]))
    for i in range(medium_books):
        put(f"src/medium/book_{i:05d}.pdf", pdf_of([pngs[(i + k) % len(pngs)] for k in range(10)]))
    return {"one": "s3://bench/src/one/", "long": "s3://bench/src/long/", "short": "s3://bench/src/short/",
            "medium": "s3://bench/src/medium/"}


DEDUPE = True  # --keep-duplicates: the run without duplicate detection (its S3 requests and driver time)


def run(s3, source: str, label: str, executor: str, *, actors: int = 1, delay_s: float = 0.0, prep: bool = False,
        num_cpus: int = 2, profile=None) -> dict:
    from folioscan.pipeline.config import JobConfig
    from folioscan.pipeline.job import run_job

    cfg = JobConfig(source=source, output=f"s3://bench/out/{label}/", endpoint_url=s3.endpoint, executor=executor,
                    ocr_workers=actors, num_cpus=num_cpus, progress=False,
                    engine={"kind": "synthetic", "delay_s": delay_s}, prep={"enabled": prep}, dedupe=DEDUPE,
                    batch_size=BATCH_SIZE)
    s3.counts(reset=True)
    c0, t0 = cpu_s(), time.perf_counter()
    if profile is not None:
        profile.enable()
    summary = run_job(cfg)
    if profile is not None:
        profile.disable()
    cpu, wall = cpu_s() - c0, time.perf_counter() - t0
    counts = s3.counts()
    assert summary.status == "finished" and summary.pages_failed == 0 and summary.documents_failed == 0, summary.line()
    worker_s = sum(summary.stages[s]["seconds"] for s in ("load", "clean", "ocr"))
    return {"label": label, "executor": executor, "actors": actors, "delay_s": delay_s, "books": summary.documents,
            "pages": summary.pages, "driver_cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
            "run_seconds": round(summary.seconds, 3), "stage_worker_s": round(worker_s, 3), "s3": counts}


def per_unit(fixed: dict, long: dict, short: dict) -> dict:
    per_page = (long["driver_cpu_s"] - fixed["driver_cpu_s"]) / (long["pages"] - fixed["pages"])
    per_book = (short["driver_cpu_s"] - fixed["driver_cpu_s"]) / (short["books"] - fixed["books"])
    return {"ms_per_page": round(per_page * 1000, 3), "ms_per_one_page_book": round(per_book * 1000, 2),
            "ms_book_overhead": round((per_book - per_page) * 1000, 2)}


def requests_per_book(short: dict) -> dict:
    by_kind: dict[str, float] = {}
    by_area: dict[str, float] = {}
    for key, n in short["s3"].items():
        kind, area = key.split(" ", 1)
        by_kind[kind] = by_kind.get(kind, 0) + n
        by_area[area] = by_area.get(area, 0) + n
    books = short["books"]
    return {"total": round(sum(short["s3"].values()) / books, 2),
            "by_kind": {k: round(v / books, 2) for k, v in sorted(by_kind.items())},
            "by_area": {k: round(v / books, 2) for k, v in sorted(by_area.items())},
            "raw": dict(sorted(short["s3"].items()))}


def steady_pages_per_s(s3, label: str) -> float:
    """Pages committed after the run's first commit, over the time from it to the last (the
    documents rows' processed_at): the rate once the actors are up, start-up left out."""
    import boto3
    import pyarrow.parquet as pq

    client = boto3.client("s3", endpoint_url=s3.endpoint)
    prefix = f"out/{label}/documents/"
    commits = []
    for obj in client.list_objects_v2(Bucket="bench", Prefix=prefix).get("Contents", []):
        t = pq.read_table(io.BytesIO(client.get_object(Bucket="bench", Key=obj["Key"])["Body"].read()),
                          columns=["processed_at", "pages_out"])
        commits.append((t.column("processed_at")[0].as_py().timestamp(), sum(t.column("pages_out").to_pylist())))
    commits.sort()
    if len(commits) < 2 or commits[-1][0] == commits[0][0]:
        return float("nan")
    return round(sum(p for _, p in commits[1:]) / (commits[-1][0] - commits[0][0]), 1)


def breakdown(pages: int = 200) -> dict:
    """CPU ms per page of each part of the work on a book's results, timed in this process (best of
    5), by where it runs since the driver was relieved (issue 18): in the OCR actor (the pages rows,
    facts and TextFacts: `page_part`), in a task (the book text: `text_columns`), and in the driver
    (unpickling an actor's answers, appending them to the spill, the documents row, the Parquet parts
    from the spill, the summary). Calls of 4 pages; 612 x 792 page images, the synthetic engine's 300 words."""
    import pickle

    import numpy as np

    from folioscan.pipeline import assemble, pagerows
    from folioscan.pipeline.spill import Spill
    from folioscan.pipeline.summary import PAGE_COLUMNS, JobSummary
    from folioscan.records import PageWork, SourceDocument, SourceObject
    from folioscan.schemas import DOCUMENTS
    from folioscan.workers.engines.registry import SyntheticOptions
    from folioscan.workers.ocr_stage import OcrStage

    stage = OcrStage(SyntheticOptions())
    obj = SourceObject("s3://bench/book.pdf", 1, "etag:1")
    doc = SourceDocument("d" * 32, obj.uri, "pdf", (obj,), obj.fingerprint)
    calls = []
    for k in range(0, pages, 4):
        works = []
        for i in range(k, min(k + 4, pages)):
            img = np.full((792, 612), 255, np.uint8)
            img[i % 700:i % 700 + 20, 100:300] = 0
            works.append(PageWork(doc.doc_id, doc.uri, i, pages, image=img, source_width=612, source_height=792))
        calls.append(stage(works))
    parts = [pagerows.page_part(doc.doc_id, rs, "bench") for rs in calls]
    answers = [pickle.dumps(([p], {})) for p, _ in parts]  # what the driver gets of each call
    texts = [t for _, ts in parts for t in ts]
    columns = assemble.text_columns(texts)

    def driver():
        spill = Spill()
        try:
            book = pagerows.BookPages(spill.file(pagerows.PAGE_ROW.schema), "bench")
            for k, blob in enumerate(answers):
                [part], _ = pickle.loads(blob)
                book.extend(part, ("ref", k))
            book.columns = columns
            rows, docs = assemble.assemble_books([doc], {doc.doc_id: book}, "bench")
            rows.parquet_bytes(), DOCUMENTS.to_parquet_bytes(docs)
            JobSummary("bench").add(rows.tables(PAGE_COLUMNS), docs)
        finally:
            spill.close()

    def ms(fn):
        best = float("inf")
        for _ in range(5):
            c0 = time.process_time()
            fn()
            best = min(best, time.process_time() - c0)
        return round(best * 1000 / pages, 3)

    out = {"in the OCR actor: rows, facts, TextFacts (page_part)": ms(lambda: [pagerows.page_part(doc.doc_id, rs, "bench") for rs in calls]),
           "in a task: book text and signals (text_columns)": ms(lambda: assemble.text_columns(texts)),
           "in the driver: unpickling the answers": ms(lambda: [pickle.loads(b) for b in answers]),
           "in the driver: all of it (answers, spill, documents row, Parquet parts, summary)": ms(driver)}
    return {"pages": pages, "answer_bytes_per_page": sum(map(len, answers)) // pages, "cpu_ms_per_page": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pages", type=int, default=600, help="pages of the long book")
    ap.add_argument("--books", type=int, default=300, help="one-page books")
    ap.add_argument("--medium-books", type=int, default=120, help="10-page books of the pages/s runs")
    ap.add_argument("--actors", type=int, nargs="*", default=[1, 2, 4], help="pages/s runs with these numbers of actors (none: no pages/s runs)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each source per executor; the figures are the medians")
    ap.add_argument("--delay-s", type=float, default=0.04, help="seconds per engine call of the pages/s runs")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="pages per engine call (default: the job's, 4 as for Tesseract; a VLM's default is 32)")
    ap.add_argument("--keep-duplicates", action="store_true", help="runs without duplicate detection (as `run --keep-duplicates`)")
    ap.add_argument("--executors", nargs="+", default=["ray", "local"], choices=["ray", "local"])
    ap.add_argument("--prep", action="store_true", help="clean pages (off by default: the loaders' CPU is not measured)")
    ap.add_argument("--quick", action="store_true", help="60-page book, 30 one-page books, 40 10-page books")
    ap.add_argument("--profile", help="cProfile the driver over the Ray runs of the long and short sources; stats to this file")
    ap.add_argument("--s3-latency-ms", type=float, default=0.0,
                    help="each S3 request waits this long at the server once the sources are built (a real store's round trip)")
    ap.add_argument("--json", help="write every figure here")
    ap.add_argument("--breakdown", action="store_true", help="only the in-process breakdown of the driver's work per page")
    args = ap.parse_args()
    global DEDUPE, BATCH_SIZE
    DEDUPE, BATCH_SIZE = not args.keep_duplicates, args.batch_size
    if args.breakdown:
        print(json.dumps(breakdown(), indent=1))
        return
    if args.quick:
        args.pages, args.books, args.medium_books = 60, 30, 40
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(k, "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    import logging

    logging.basicConfig(level=logging.WARNING)
    s3 = CountingS3()
    profile = None
    if args.profile:
        import cProfile

        profile = cProfile.Profile(time.process_time)  # CPU time: waiting in ray.wait is not the driver's work
    out: dict = {"machine": f"{os.cpu_count()} cores", "python": sys.version.split()[0], "args": vars(args), "runs": []}
    try:
        t0 = time.perf_counter()
        sources = build_sources(s3, args.pages, args.books, args.medium_books)
        print(f"sources built in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        if args.s3_latency_ms:
            s3.set_latency(args.s3_latency_ms)
        num_cpus = max(args.actors, default=1) + 2  # actors sleep in the engine: logical CPUs, not cores
        if "ray" in args.executors:
            import ray

            from folioscan.pipeline.quiet import ray_init_kwargs

            ray.init(num_cpus=num_cpus, object_store_memory=512 * 2**20, **ray_init_kwargs())
        for executor in args.executors:
            run(s3, sources["one"], f"{executor}-warmup", executor, prep=args.prep, num_cpus=num_cpus)  # imports, first calls
            reps = []
            for rep in range(args.repeat):
                runs = {}
                for name in ("one", "long", "short"):
                    runs[name] = run(s3, sources[name], f"{executor}-{name}-{rep}", executor, prep=args.prep,
                                     num_cpus=num_cpus, profile=profile if executor == "ray" and name != "one" else None)
                    out["runs"].append(runs[name])
                    print(json.dumps({k: v for k, v in runs[name].items() if k != "s3"}), file=sys.stderr)
                reps.append({**per_unit(runs["one"], runs["long"], runs["short"]),
                             "wall_s_per_one_page_book": round(runs["short"]["wall_s"] / runs["short"]["books"], 3)})
            out[executor] = {k: statistics.median(r[k] for r in reps) for k in reps[0]}
            out[executor]["repeats"] = reps
            out[executor]["s3_requests_per_book"] = requests_per_book(runs["short"])
        if "ray" in args.executors and args.actors:
            out["pages_per_s"] = []
            for n in args.actors:
                r = run(s3, sources["medium"], f"ray-medium-{n}", "ray", actors=n, delay_s=args.delay_s, prep=args.prep,
                        num_cpus=num_cpus)
                out["runs"].append(r)
                print(json.dumps({k: v for k, v in r.items() if k != "s3"}), file=sys.stderr)
                steady = steady_pages_per_s(s3, f"ray-medium-{n}")
                out["pages_per_s"].append({
                    "actors": n, "engine_ceiling_pages_per_s": round(n * 4 / args.delay_s, 1),
                    "pages_per_s_run": round(r["pages"] / r["run_seconds"], 1), "pages_per_s_steady": steady,
                    "driver_cpu_share": round(r["driver_cpu_s"] / r["wall_s"], 2),
                    "driver_ms_per_page": round(r["driver_cpu_s"] * 1000 / r["pages"], 3)})
    finally:
        s3.stop()
    if profile is not None:
        profile.dump_stats(args.profile)
    report(out)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


def report(out: dict) -> None:
    def mark(value, target):
        return "met" if value <= target else "NOT MET"

    print(f"machine: {out['machine']}, Python {out['python']}")
    for executor in ("ray", "local"):
        if executor not in out:
            continue
        r = out[executor]
        print(f"\n{executor} executor" + (" (loading and the synthetic engine run in the driver process too)" if executor == "local" else ""))
        if len(r["repeats"]) > 1:
            print(f"  medians of {len(r['repeats'])} repeats; per page / per book overhead each time: "
                  + ", ".join(f"{x['ms_per_page']} / {x['ms_book_overhead']}" for x in r["repeats"]))
        print(f"  driver CPU per page            {r['ms_per_page']:8.3f} ms   target <= {TARGET_MS_PER_PAGE} ms: "
              f"{mark(r['ms_per_page'], TARGET_MS_PER_PAGE)}")
        print(f"  driver CPU per one-page book   {r['ms_per_one_page_book']:8.2f} ms")
        print(f"  per-book overhead              {r['ms_book_overhead']:8.2f} ms   target <= {TARGET_MS_PER_BOOK} ms: "
              f"{mark(r['ms_book_overhead'], TARGET_MS_PER_BOOK)}")
        print(f"  wall per one-page book         {r['wall_s_per_one_page_book']:8.3f} s   (the run's start included)")
        s = r["s3_requests_per_book"]
        print(f"  S3 requests per one-page book  {s['total']:8.2f}      by kind: "
              + ", ".join(f"{k} {v}" for k, v in s["by_kind"].items()))
        print("                                           by area: " + ", ".join(f"{k} {v}" for k, v in s["by_area"].items()))
    if out.get("pages_per_s"):
        print("\nray executor, 10-page books, synthetic engine sleeping per call of 4 pages")
        print("  actors  engine ceiling  pages/s (whole run)  pages/s (first to last commit)  driver CPU share  driver ms/page")
        for p in out["pages_per_s"]:
            print(f"  {p['actors']:6d}  {p['engine_ceiling_pages_per_s']:14.1f}  {p['pages_per_s_run']:19.1f}  "
                  f"{p['pages_per_s_steady']:29.1f}  "
                  f"{p['driver_cpu_share']:16.2f}  {p['driver_ms_per_page']:14.3f}")


if __name__ == "__main__":
    main()
