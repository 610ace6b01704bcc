"""Every core busy? The job on this machine's cores against one raw single-threaded Tesseract,
on the same pages (../shared/eval/old_books), in one run. Prints one JSON object.

    python bench/cores.py [--books a b] [--executor ray] [--num-cpus N] [--lang eng] [--tessdata fast|standard] [--ceiling]

Raw Tesseract: one tesserocr API (same language data and settings as the job's engine) reads
each page image of the eval set in turn, no cleaning, in this process. The job: `folioscan run`
over the eval PDFs as a subprocess, cleaning on. Both are scored against the ground truth.
`ratio` uses the job's own clock (its summary: first book handed out to last shard committed);
`ratio_wall` the subprocess wall clock, Python and Ray start-up included.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from evalset import OLD_BOOKS, cer, manifest  # noqa: E402

from folioscan.workers.engines.tessdata import DEFAULT_VARIANT, VARIANTS  # noqa: E402


def raw_tesseract(rows, lang: str, variant: str) -> dict:
    import numpy as np
    import tesserocr
    from PIL import Image

    from folioscan.workers.engines.tesseract import find_tessdata

    api = tesserocr.PyTessBaseAPI(path=find_tessdata(lang, variant), lang=lang, psm=3, oem=tesserocr.OEM.LSTM_ONLY)
    texts = []
    t0, c0 = time.perf_counter(), time.process_time()
    for r in rows:
        img = np.asarray(Image.open(os.path.join(OLD_BOOKS, "pages", r["page_name"] + ".png")).convert("L"))
        api.SetImage(Image.fromarray(img))
        texts.append(api.GetUTF8Text())
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    api.End()
    cers = [cer(t, r["truth"]) for t, r in zip(texts, rows)]
    return {"pages": len(rows), "seconds": round(seconds, 2), "pages_per_s": round(len(rows) / seconds, 3),
            "mean_cer": round(statistics.mean(cers), 4), "tesseract": tesserocr.tesseract_version().split()[1],
            "cpu_seconds": round(cpu_seconds, 2)}


def combine(a: dict, b: dict) -> dict:
    pages, seconds = a["pages"] + b["pages"], a["seconds"] + b["seconds"]
    cer_mean = (a["mean_cer"] * a["pages"] + b["mean_cer"] * b["pages"]) / pages
    return {"pages": pages, "seconds": round(seconds, 2), "pages_per_s": round(pages / seconds, 3),
            "pages_per_s_before_job": a["pages_per_s"], "pages_per_s_after_job": b["pages_per_s"],
            "mean_cer": round(cer_mean, 4), "tesseract": a["tesseract"],
            "cpu_seconds_per_page": round((a["cpu_seconds"] + b["cpu_seconds"]) / pages, 3)}


def raw_parallel(rows, lang: str, variant: str, n: int) -> dict:
    """The machine's own ceiling: n raw Tesseract processes at once, each on every n-th page,
    no cleaning and no Ray. Its pages/s over one thread's is the most any executor can reach."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(n) as pool:
        list(pool.map(_noop, range(n)))  # processes started before the clock
        t0 = time.perf_counter()
        list(pool.map(raw_tesseract, [rows[k::n] for k in range(n)], [lang] * n, [variant] * n))
        seconds = time.perf_counter() - t0
    return {"processes": n, "pages": len(rows), "seconds": round(seconds, 2), "pages_per_s": round(len(rows) / seconds, 3)}


def _noop(_):
    return None


class CpuSampler(threading.Thread):
    """CPU seconds (user + system) of a process and all its descendants, by kind of process: the
    job's own processes (driver, OCR actors, loaders, Ray's daemons), whatever else the machine
    runs. Sampled every 0.5 s; a process's last sample stands for it, so a process that lives
    under half a second is missed. The sampler's own CPU time is reported (`sampler_cpu_seconds`)."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.root, self.last, self.done, self.own = pid, {}, threading.Event(), 0.0

    def run(self) -> None:
        import psutil

        root = psutil.Process(self.root)
        t0 = time.thread_time()
        while not self.done.is_set():
            self.own = time.thread_time() - t0
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for p in procs:
                try:
                    t = p.cpu_times()
                    self.last[p.pid] = (_kind(p), t.user + t.system, " ".join(p.cmdline()[:2])[:80])
                except psutil.Error:
                    pass
            self.done.wait(0.5)

    def stop(self) -> None:
        self.done.set()
        self.join()

    def by_kind(self) -> dict:
        out: dict[str, float] = {}
        for kind, seconds, _ in self.last.values():
            out[kind] = round(out.get(kind, 0.0) + seconds, 2)
        return out


def _kind(p) -> str:
    name = " ".join(p.cmdline()[:3])
    if "OcrActor" in name:
        return "ocr_actors"
    if name.startswith("ray::") and "Agent" not in name:  # ray::_load, ray::IDLE (a loader between books)
        return "loaders_and_idle_workers"
    if "folioscan" in name:
        return "driver"
    return "ray_daemons"


def job(rows, args) -> dict:
    src, out = tempfile.mkdtemp(prefix="cores-src-"), tempfile.mkdtemp(prefix="cores-out-")
    for pdf in sorted({r["pdf"] for r in rows}):
        os.symlink(os.path.join(os.path.abspath(OLD_BOOKS), pdf), os.path.join(src, os.path.basename(pdf)))
    summary_file = os.path.join(out, "summary.json")
    cmd = [sys.executable, "-m", "folioscan", "run", src, os.path.join(out, "data"), "--executor", args.executor,
           "--quiet", "--summary-json", summary_file]
    cmd += ["--num-cpus", str(args.num_cpus)] if args.num_cpus else []
    cmd += ["--lang", args.lang] if args.lang != "eng" else []
    cmd += ["--tessdata", args.tessdata]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cpu = CpuSampler(proc.pid)
    cpu.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    cpu.stop()
    if proc.returncode not in (0, 1):
        raise SystemExit(f"job failed:\n{stderr[-3000:]}")
    summary = json.load(open(summary_file))
    pages = pq.read_table(os.path.join(out, "data", "pages")).to_pandas()
    by_key = {(os.path.basename(p["source_uri"]), int(p["page_index"])): p["text"] or "" for p in pages.to_dict("records")}
    cers = [cer(by_key.get((os.path.basename(r["pdf"]), r["page_index"]), ""), r["truth"]) for r in rows]
    return {"pages": summary["pages"], "seconds": round(summary["seconds"], 2), "wall_seconds": round(wall, 2),
            "pages_per_s": round(summary["pages"] / summary["seconds"], 3), "pages_per_s_wall": round(summary["pages"] / wall, 3),
            "mean_cer": round(statistics.mean(cers), 4), "ocr_actors": summary.get("ocr_actors"),
            "engine_loads": summary.get("engine_loads"), "stages": summary.get("stages"),
            "cpu_seconds": cpu.by_kind(), "cpu_seconds_per_page": round(sum(cpu.by_kind().values()) / summary["pages"], 3),
            "sampler_cpu_seconds": round(cpu.own, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--books", nargs="+", help="subset of books (a..f); default all 178 pages")
    ap.add_argument("--executor", default="ray", choices=["ray", "local"])
    ap.add_argument("--num-cpus", type=int, help="CPUs for the job's local Ray (default: all)")
    ap.add_argument("--lang", default="eng", help="language data for both (passed to the job as --lang)")
    ap.add_argument("--ceiling", action="store_true", help="also time one raw Tesseract process per core at once")
    ap.add_argument("--tessdata", default=DEFAULT_VARIANT, choices=VARIANTS, help="language data variant for both")
    args = ap.parse_args()
    os.environ["OMP_THREAD_LIMIT"] = "1"  # raw Tesseract single-threaded even where it is built with OpenMP
    rows = [r for r in manifest() if not args.books or r["book"] in args.books]
    # the machine is shared: half the raw baseline runs before the job and half after it
    before = raw_tesseract(rows[0::2], args.lang, args.tessdata)
    j = job(rows, args)
    after = raw_tesseract(rows[1::2], args.lang, args.tessdata)
    raw = combine(before, after)
    cores = args.num_cpus or os.cpu_count()
    ceiling = raw_parallel(rows, args.lang, args.tessdata, cores) if args.ceiling else None
    busy = sum(s["seconds"] for s in (j["stages"] or {}).values())
    print(json.dumps({
        "benchmark": "cores", "eval": "old_books", "cores": cores, "executor": args.executor, "lang": args.lang, "tessdata": args.tessdata,
        "job": j, "raw_tesseract_one_thread": raw,
        "ratio": round(j["pages_per_s"] / raw["pages_per_s"], 3),
        "ratio_wall": round(j["pages_per_s_wall"] / raw["pages_per_s"], 3),
        "target_ratio": round(0.9 * cores, 2),
        **({"raw_tesseract_parallel": ceiling, "ceiling_ratio": round(ceiling["pages_per_s"] / raw["pages_per_s"], 3),
            "job_over_ceiling": round(j["pages_per_s"] / ceiling["pages_per_s"], 3)} if ceiling else {}),
        "stage_seconds_over_job_core_seconds": round(busy / (j["seconds"] * cores), 3),
        # CPU accounting: how busy the cores were, and what a page costs the job against a bare read
        "job_cpu_over_wall_core_seconds": round(sum(j["cpu_seconds"].values()) / (j["wall_seconds"] * cores), 3),
        "job_cpu_per_page_over_raw": round(j["cpu_seconds_per_page"] / raw["cpu_seconds_per_page"], 3),
    }, indent=2))


if __name__ == "__main__":
    main()
