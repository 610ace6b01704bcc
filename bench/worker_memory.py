"""Peak memory per Ray process role while the real job runs (what deploy/'s resource requests come from).

    python bench/worker_memory.py --books 2 --num-cpus 2

Runs `run_job` with the Ray executor on old_books PDFs and samples every process under this one:
OCR actors (`ray::MapWorker...`), loader/cleaner tasks (other `ray::` workers), Ray's daemons and the
driver. RSS counts shared object-store pages in every process that maps them; USS (memory only that
process holds) does not, so both are reported. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.evalset import OLD_BOOKS  # noqa: E402


def role(cmdline: list[str], pid: int) -> str:
    head = " ".join(cmdline[:2]) if cmdline else ""
    if pid == os.getpid():
        return "driver"
    if head.startswith("ray::MapWorker"):
        return "ocr_actor"
    if head.startswith("ray::"):
        return "loader_or_idle_worker"
    for name in ("raylet", "gcs_server", "plasma", "dashboard", "log_monitor", "runtime_env", "monitor"):
        if name in head:
            return f"ray_daemon:{name}"
    return "other"


class Sampler(threading.Thread):
    def __init__(self, every: float = 0.5):
        super().__init__(daemon=True)
        self.every, self.stop = every, False
        self.peak = defaultdict(lambda: {"rss": 0, "uss": 0, "role": ""})

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self.stop:
            for p in [me, *me.children(recursive=True)]:
                try:
                    info = p.memory_full_info()
                    rec = self.peak[p.pid]
                    if rec["role"] in ("", "other", "loader_or_idle_worker"):  # a worker names itself late
                        rec["role"] = role(p.cmdline(), p.pid)  # and a pooled one may become an actor
                        rec["cmd"] = " ".join(p.cmdline()[:3])[:80]
                    rec["rss"], rec["uss"] = max(rec["rss"], info.rss), max(rec["uss"], info.uss)
                except psutil.Error:
                    pass
            time.sleep(self.every)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--books", type=int, default=2)
    ap.add_argument("--num-cpus", type=int, default=2)
    args = ap.parse_args()
    from folioscan.pipeline.config import JobConfig
    from folioscan.pipeline.job import run_job

    pdfs = sorted(os.listdir(os.path.join(OLD_BOOKS, "pdf")))[: args.books]
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "src")
        os.makedirs(src)
        for name in pdfs:
            os.symlink(os.path.join(OLD_BOOKS, "pdf", name), os.path.join(src, name))
        sampler = Sampler()
        sampler.start()
        t0 = time.perf_counter()
        summary = run_job(JobConfig(source=src, output=os.path.join(tmp, "out"), executor="ray",
                                    num_cpus=args.num_cpus, progress=False))
        seconds = time.perf_counter() - t0
        sampler.stop = True
        sampler.join()
        import ray

        ray.shutdown()
    roles = defaultdict(lambda: {"processes": 0, "max_peak_rss_mb": 0.0, "max_peak_uss_mb": 0.0})
    for rec in sampler.peak.values():
        r = roles[rec["role"]]
        if rec["role"] == "other":
            r.setdefault("commands", []).append(rec.get("cmd", ""))
        r["processes"] += 1
        r["max_peak_rss_mb"] = round(max(r["max_peak_rss_mb"], rec["rss"] / 2**20), 1)
        r["max_peak_uss_mb"] = round(max(r["max_peak_uss_mb"], rec["uss"] / 2**20), 1)
    print(json.dumps({"books": pdfs, "pages": summary.pages, "seconds": round(seconds, 1),
                      "num_cpus": args.num_cpus, "roles": dict(sorted(roles.items())),
                      "sum_of_peak_uss_mb": round(sum(r["uss"] for r in sampler.peak.values()) / 2**20, 1)}, indent=1))


if __name__ == "__main__":
    main()
