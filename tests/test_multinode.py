"""A real two-node Ray cluster on 127.0.0.1 (separate head and worker processes, one CPU each): the
job runs on it with --ray-address, the worker node's raylet is killed (kill -9) mid-run, and
every page still comes out exactly once."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import assert_every_page_once, committed_parts, pythonpath_with_repo, three_page_books
from tests.ray_cluster import LocalCluster


@pytest.mark.slow
@pytest.mark.ray
def test_job_survives_losing_a_node_and_writes_every_page_once(tmp_path, page_images):
    src = tmp_path / "src"
    three_page_books(src, page_images)
    out, summary_file = str(tmp_path / "out"), tmp_path / "summary.json"
    # the GCS health-checks each raylet every 1 s instead of Ray's default 3 s: the killed node is
    # declared dead after the same number of failed checks, sooner
    cluster = LocalCluster({"PYTHONPATH": pythonpath_with_repo(os.environ.get("PYTHONPATH")), "RAY_health_check_period_ms": "1000"})
    try:
        cluster.start_head(num_cpus=1)
        worker = cluster.add_node(num_cpus=1)
        cmd = [sys.executable, "-m", "folioscan", "run", str(src), out, "--ray-address", cluster.address,
               "--shard-docs", "1", "--quiet", "--summary-json", str(summary_file)]
        job = subprocess.Popen(cmd, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 180
        while committed_parts(out) < 2 and job.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert job.poll() is None and committed_parts(out) < 10, "the node must be lost while the job runs"
        os.kill(cluster.raylet_pid(worker), signal.SIGKILL)
        log, _ = job.communicate(timeout=300)
        assert job.returncode == 0, log[-3000:]
    finally:
        cluster.stop()
    summary = json.loads(summary_file.read_text())
    assert summary["book_retries"] >= 1, summary  # the kill hit books in flight, and they were re-run
    assert_every_page_once(out)
