"""A quiet terminal: `folioscan run` prints the progress and the summary, not Ray's or pip's chatter;
`--verbose` brings it back. Real CLI in a subprocess, real local Ray with one CPU, on the demo
sample's first page (a real scan), not its four: the chatter checked here comes from Ray and the
libraries starting, not from the number of pages read."""
import os
import re
import subprocess
import sys

import pytest

from folioscan.pipeline.cli import DEMO_SAMPLE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHATTER = re.compile(r"WARNING|Warning|\bpip\b|core_worker|raylet|\[\d{4}-\d\d-\d\d [\d:,]+ [DIWEF] \d+ \d+\]")


@pytest.fixture(scope="module")
def sample_page(tmp_path_factory):
    """A folder with one book: the first page of the bundled demo sample."""
    import pymupdf

    folder = tmp_path_factory.mktemp("sample-page")
    with pymupdf.open(os.path.join(DEMO_SAMPLE, "sample_book.pdf")) as demo, pymupdf.open() as one:
        one.insert_pdf(demo, from_page=0, to_page=0)
        one.save(folder / "first_page.pdf")
    return str(folder)


def _run(tmp_path, source, *flags):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    env.pop("FOLIOSCAN_VERBOSE", None)
    proc = subprocess.run([sys.executable, "-m", "folioscan", "run", source, str(tmp_path / "out"),
                           "--executor", "ray", "--num-cpus", "1", *flags],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    lines = lambda text: [line for line in text.splitlines() if line.strip()]  # noqa: E731
    return proc.returncode, lines(proc.stdout), lines(proc.stderr)


@pytest.mark.ray
@pytest.mark.slow
def test_run_prints_progress_and_summary_only(tmp_path, sample_page):
    code, out, err = _run(tmp_path, sample_page)
    assert code == 0, err
    assert [line for line in out + err if CHATTER.search(line)] == []
    # stderr is not a terminal here: plain progress lines (the default interval is 30 s), the last one when the run ends
    assert err and all(line.startswith("progress: ") and "\x1b" not in line for line in err), err
    assert err[-1].startswith("progress: pages 1/1 (100%), books 1/1, 0 failed, "), err
    assert len(out) == 1 and out[0].startswith("folioscan run ") and "1 documents (0 failed" in out[0]


@pytest.mark.ray
@pytest.mark.slow
def test_verbose_brings_ray_back(tmp_path, sample_page):
    code, out, err = _run(tmp_path, sample_page, "--verbose")
    assert code == 0, err
    # Ray's own logging is back: its start-up line ("Started a local Ray instance."), worker output
    assert any(re.search(r"\bray\b|\bray[._]|core_worker", line, re.IGNORECASE) for line in err), err
    assert len(err) > 1 and out[-1].startswith("folioscan run ")


def test_native_lines_go_to_a_log_file_and_python_output_still_reaches_the_terminal(tmp_path):
    """What Ray's C++ logger does (write to fd 2) is kept off the terminal; sys.stderr is not."""
    script = (
        "import logging, os, sys\n"
        "from folioscan.pipeline import quiet\n"
        "quiet.configure(False)\n"
        "with quiet.native_stderr():\n"
        "    os.write(2, b'[2026-01-01 00:00:00,000 E 1 1] core_worker.cc:1: native chatter\\n')\n"
        "    print('progress 1/1', file=sys.stderr)\n"
        "    logging.getLogger('folioscan.x').warning('a book failed')\n"
        "os.write(2, b'after\\n')\n"
    )
    env = {**os.environ, "PYTHONPATH": ROOT, "TMPDIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["progress 1/1", "WARNING folioscan.x: a book failed", "after"]
    [log] = list(tmp_path.glob("folioscan-ray-driver-*.log"))
    assert "native chatter" in log.read_text()


@pytest.mark.ray
@pytest.mark.slow
def test_in_a_terminal_a_live_line_and_nothing_after_the_summary(tmp_path, sample_page):
    """Issue 17: in a terminal, a live progress line; and no stray ESC[0m after the summary (Ray's
    CLI logger runs colorama.init(), whose exit handler wrote it to stdout when stdout is a terminal)."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    env.pop("FOLIOSCAN_VERBOSE", None)
    argv = [sys.executable, "-m", "folioscan", "run", sample_page, str(tmp_path / "out"), "--executor", "ray", "--num-cpus", "1"]
    pid, fd = pty.fork()
    if pid == 0:  # the child: stdout and stderr are the terminal, 120 columns wide
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        os.chdir(tmp_path)
        os.execve(argv[0], argv, env)
    seen = b""
    while True:
        ready, _, _ = select.select([fd], [], [], 300)
        if not ready:
            os.kill(pid, 9)
            break
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, seen
    text = seen.decode(errors="replace")
    summary = text[text.index("folioscan run "):]
    assert re.fullmatch(r"folioscan run [^\x1b\r\n]* pages/s, mean confidence [\d.]+\r\n", summary), repr(summary)
    assert "\x1b" not in text, repr(text[-300:])
    assert "\rpages 1/1 (100%), books 1/1, 0 failed, " in text  # the live line, redrawn in place
