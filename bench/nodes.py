"""Pages/s of the job on a Ray cluster of one node and of two nodes (one CPU each), both on
127.0.0.1 (tests/ray_cluster.py), over the same old_books PDFs. Prints one JSON object.

    python bench/nodes.py [--books a]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, REPO)
from evalset import OLD_BOOKS, manifest  # noqa: E402
from tests.ray_cluster import LocalCluster  # noqa: E402


def job(cluster: LocalCluster, src: str) -> dict:
    out = tempfile.mkdtemp(prefix="nodes-out-")
    summary_file = os.path.join(out, "summary.json")
    cmd = [sys.executable, "-m", "folioscan", "run", src, os.path.join(out, "data"), "--ray-address", cluster.address,
           "--quiet", "--summary-json", summary_file]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=cluster.env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"job failed:\n{proc.stderr[-3000:]}")
    s = json.load(open(summary_file))
    return {"pages": s["pages"], "seconds": round(s["seconds"], 2), "pages_per_s": s["pages_per_s"],
            "pages_per_s_wall": round(s["pages"] / wall, 3), "ocr_actors": s["ocr_actors"], "engine_loads": s["engine_loads"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--books", nargs="+", default=["a"])
    args = ap.parse_args()
    src = tempfile.mkdtemp(prefix="nodes-src-")
    for pdf in sorted({r["pdf"] for r in manifest() if r["book"] in args.books}):
        os.symlink(os.path.join(os.path.abspath(OLD_BOOKS), pdf), os.path.join(src, os.path.basename(pdf)))
    cluster = LocalCluster({"PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))})
    try:
        cluster.start_head(num_cpus=1)
        one = job(cluster, src)
        cluster.add_node(num_cpus=1)
        two = job(cluster, src)
    finally:
        cluster.stop()
    print(json.dumps({"benchmark": "nodes", "books": args.books, "cpus_per_node": 1, "one_node": one, "two_nodes": two,
                      "speedup": round(two["pages_per_s"] / one["pages_per_s"], 3)}, indent=2))


if __name__ == "__main__":
    main()
