"""CPU seconds per test of a pytest(-xdist) run, as a pytest plugin, and per-file sums of what it wrote.

    PYTHONPATH=bench FT_CPU_OUT=/tmp/cpu python -m pytest -p pytest_cpu -m "not gpu" -n 2 --dist loadfile ... tests
    python bench/pytest_cpu.py /tmp/cpu [N]

Per test: the CPU time (user + system) of the worker process, of the children it reaped, and of every
live descendant with the children that one reaped, taken before and after the test (setup, call and
teardown), with its wall time and the 1-minute load average. It undercounts Ray: a job's actors and
workers that die with their raylet in a subprocess's own Ray are reparented, not reaped by the test
(bench/tree_cpu.py samples a whole tree, for one file at a time). One JSON file per worker,
FT_CPU_OUT.<worker>.json."""
import json
import os
import sys
import time


def _tree_cpu(me) -> float:
    import psutil

    t = os.times()
    total = t.user + t.system + t.children_user + t.children_system
    try:
        kids = me.children(recursive=True)
    except psutil.Error:
        kids = []
    for k in kids:
        try:
            c = k.cpu_times()
            total += c.user + c.system + c.children_user + c.children_system
        except psutil.Error:
            pass
    return total


_rows: list[dict] = []

try:
    import pytest

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        import psutil

        me = psutil.Process()
        c0, w0 = _tree_cpu(me), time.time()
        yield
        _rows.append({"test": item.nodeid, "cpu": round(_tree_cpu(me) - c0, 2), "wall": round(time.time() - w0, 2),
                      "load": os.getloadavg()[0], "worker": os.environ.get("PYTEST_XDIST_WORKER", "main")})

    def pytest_sessionfinish(session):
        out = os.environ.get("FT_CPU_OUT")
        if out and _rows:
            with open(f"{out}.{os.environ.get('PYTEST_XDIST_WORKER', 'main')}.json", "w") as f:
                json.dump(_rows, f)
except ImportError:  # the summary below needs no pytest
    pass


if __name__ == "__main__":
    import collections
    import glob

    rows = [r for f in glob.glob(sys.argv[1] + ".*.json") for r in json.load(open(f))]
    cpu, wall = collections.Counter(), collections.Counter()
    for r in rows:
        cpu[r["test"].split("::")[0]] += r["cpu"]
        wall[r["test"].split("::")[0]] += r["wall"]
    print(f"{len(rows)} tests, CPU {sum(cpu.values()):.1f} s, wall {sum(wall.values()):.1f} s (sums over workers)")
    for f, c in cpu.most_common(int(sys.argv[2]) if len(sys.argv) > 2 else 30):
        print(f"{c:7.1f} s CPU {wall[f]:7.1f} s wall  {f}")
