"""kill -9 of an OCR actor mid-run on a local Ray: the actor is replaced (up to the run's limit), the
books it was reading are re-run, every page comes out exactly once, and Ray's notice of the dead
worker stays off stdout."""
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


def _run_killing_one_actor(tmp_path, page_images, env_extra=None):
    """Run the CLI on 10 three-page books with 2 OCR actors and kill -9 one of them after two books
    are committed. Returns (exit code, stdout, stderr, summary, pids of the OCR actors seen alive
    after the kill while the job still ran)."""
    src = tmp_path / "src"
    three_page_books(src, page_images)
    out, summary_file = str(tmp_path / "out"), tmp_path / "summary.json"
    env = {**os.environ, "PYTHONPATH": pythonpath_with_repo(os.environ.get("PYTHONPATH")), **(env_extra or {})}
    env.pop("FOLIOSCAN_VERBOSE", None)
    cmd = [sys.executable, "-m", "folioscan", "run", str(src), out, "--num-cpus", "2", "--ocr-workers", "2",
           "--shard-docs", "1", "--quiet", "--summary-json", str(summary_file)]
    job = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    after: set[int] = set()
    try:
        deadline = time.time() + 180
        while (committed_parts(out) < 2 or len(_ocr_actors(job.pid)) < 2) and job.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        actors = _ocr_actors(job.pid)
        assert job.poll() is None and committed_parts(out) < 10 and len(actors) == 2, "an actor must die while the job runs"
        os.kill(actors[0].pid, signal.SIGKILL)
        while job.poll() is None:  # which actors the pool has once the loss is noticed
            alive = {p.pid for p in _ocr_actors(job.pid)} - {actors[0].pid}
            after = max(after, alive, key=len)
            time.sleep(0.1)
        stdout, stderr = job.communicate(timeout=300)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, stderr[-3000:]
    assert_every_page_once(out)
    return stdout, stderr, json.loads(summary_file.read_text()), actors, after


@pytest.mark.slow
@pytest.mark.ray
def test_a_killed_ocr_actor_is_replaced_and_no_page_is_lost_or_doubled(tmp_path, page_images):
    stdout, stderr, summary, killed, after = _run_killing_one_actor(tmp_path, page_images)
    assert (summary["actors_lost"], summary["actors_replaced"], summary["ocr_actors"]) == (1, 1, 2), summary
    assert len(after) == 2 and killed[1].pid in after, after  # the pool is back to its size: the survivor and a new one
    assert summary["engine_loads"] == 3, summary  # the replacement built its engine
    assert "OCR actor 0 lost" in stderr or "OCR actor 1 lost" in stderr, stderr
    assert "replacement 1 of at most 2" in stderr, stderr
    # Ray's multi-line "(raylet) A worker died or was killed ..." notice is not on stdout: only the summary is
    assert "A worker died" not in stdout and "raylet" not in stdout, stdout
    assert stdout.startswith("folioscan run "), stdout


@pytest.mark.slow
@pytest.mark.ray
def test_past_the_replacement_limit_the_run_goes_on_with_fewer_actors(tmp_path, page_images):
    stdout, stderr, summary, killed, after = _run_killing_one_actor(
        tmp_path, page_images, {"FOLIOSCAN_ACTOR_REPLACEMENTS": "0"})
    assert (summary["actors_lost"], summary["actors_replaced"], summary["ocr_actors"]) == (1, 0, 2), summary
    assert after <= {killed[1].pid}, after  # no new actor came
    assert summary["engine_loads"] == 2, summary
    assert "replacements are used up (actor_replacements): going on with 1 of 2 actors" in stderr, stderr
    assert "A worker died" not in stdout, stdout


_NOTICE = ("A worker died or was killed while executing a task by an unexpected system error.\n"
           "RayletClient:... Worker exit type: SYSTEM_ERROR")


@pytest.mark.parametrize("verbose", [False, True])
def test_raylet_notices_go_to_the_driver_log_unless_verbose(tmp_path, verbose):
    """Ray's own printing path (its error-listener thread calls `print_to_stdstream` with pid "raylet"):
    off stdout into the native driver log unless verbose; other output of Ray's is left as it was."""
    script = (
        "import sys\n"
        "from folioscan.pipeline import quiet\n"
        f"quiet.configure({verbose})\n"
        "with quiet.native_stderr():\n"
        "    quiet.ray_init_kwargs()\n"
        "    import ray._private.worker as w\n"
        f"    w.print_to_stdstream({{'lines': [{_NOTICE!r}], 'pid': 'raylet', 'is_err': False}}, ignore_prefix=False)\n"
        "    w.print_to_stdstream({'lines': ['hello from a task'], 'pid': 123, 'is_err': False}, ignore_prefix=False)\n"
        "    sys.stdout.flush()\n"
    )
    env = {**os.environ, "PYTHONPATH": pythonpath_with_repo(os.environ.get("PYTHONPATH")), "TMPDIR": str(tmp_path)}
    env.pop("FOLIOSCAN_VERBOSE", None)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "hello from a task" in proc.stdout
    logs = list(tmp_path.glob("folioscan-ray-driver-*.log"))
    if verbose:
        assert "A worker died or was killed" in proc.stdout and not logs
    else:
        assert "A worker died" not in proc.stdout and "Worker exit type" not in proc.stdout, proc.stdout
        [log] = logs
        assert log.read_text().splitlines() == ["(raylet) " + line for line in _NOTICE.splitlines()]
        assert f"1 notice(s) of Ray's raylet (a worker died, ...) are in its native driver log: {log}" in proc.stderr
