"""A quiet terminal: `folioscan run` prints the progress and the summary, not Ray's or pip's chatter;
`--verbose` brings it back. Real CLI in a subprocess, real local Ray with one CPU."""
import os
import re
import subprocess
import sys

import pytest

from folioscan.pipeline.cli import DEMO_SAMPLE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHATTER = re.compile(r"WARNING|Warning|\bpip\b|core_worker|raylet|\[\d{4}-\d\d-\d\d [\d:,]+ [DIWEF] \d+ \d+\]")


def _run(tmp_path, *flags):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    env.pop("FOLIOSCAN_VERBOSE", None)
    proc = subprocess.run([sys.executable, "-m", "folioscan", "run", DEMO_SAMPLE, str(tmp_path / "out"),
                           "--executor", "ray", "--num-cpus", "1", *flags],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    return proc.returncode, [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]


@pytest.mark.ray
@pytest.mark.slow
def test_run_prints_progress_and_summary_only(tmp_path):
    code, lines = _run(tmp_path)
    assert code == 0, lines
    assert [line for line in lines if CHATTER.search(line)] == []
    assert lines[:-1] == ["committed 1 documents"]  # the progress line (stderr is not a terminal here)
    assert lines[-1].startswith("folioscan run ") and "1 documents (0 failed" in lines[-1]


@pytest.mark.ray
@pytest.mark.slow
def test_verbose_brings_ray_back(tmp_path):
    code, lines = _run(tmp_path, "--verbose")
    assert code == 0, lines
    assert any(re.search(r"\bray\b|\bray[._]", line) for line in lines[:-1]), lines
    assert lines[-1].startswith("folioscan run ")
