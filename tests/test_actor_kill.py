"""kill -9 of an OCR actor mid-run on a local Ray: the books it was reading are re-run on the
actor that is left, and every page comes out exactly once."""
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from tests.helpers import assert_every_page_once, committed_parts, pythonpath_with_repo, three_page_books




def _ocr_actors(driver: int) -> list[psutil.Process]:
    """The OCR actors of this job's own local Ray (descendants of its driver), not of anyone else's."""
    found = []
    for p in psutil.Process(driver).children(recursive=True):
        try:
            if " ".join(p.cmdline()).startswith("ray::OcrActor"):
                found.append(p)
        except psutil.Error:
            pass
    return found


@pytest.mark.slow
@pytest.mark.ray
def test_killing_an_ocr_actor_loses_no_page_and_doubles_none(tmp_path, page_images):
    src = tmp_path / "src"
    three_page_books(src, page_images)
    out, summary_file = str(tmp_path / "out"), tmp_path / "summary.json"
    env = {**os.environ, "PYTHONPATH": pythonpath_with_repo(os.environ.get("PYTHONPATH"))}
    cmd = [sys.executable, "-m", "folioscan", "run", str(src), out, "--num-cpus", "2", "--ocr-workers", "2",
           "--shard-docs", "1", "--quiet", "--summary-json", str(summary_file)]
    job = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 180
        while (committed_parts(out) < 2 or len(_ocr_actors(job.pid)) < 2) and job.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        actors = _ocr_actors(job.pid)
        assert job.poll() is None and committed_parts(out) < 10 and len(actors) == 2, "an actor must die while the job runs"
        os.kill(actors[0].pid, signal.SIGKILL)
        log, _ = job.communicate(timeout=300)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, log[-3000:]
    summary = json.loads(summary_file.read_text())
    assert summary["actors_lost"] == 1 and summary["ocr_actors"] == 2, summary
    assert_every_page_once(out)
