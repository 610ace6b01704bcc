"""A real multi-node Ray cluster on 127.0.0.1: a head (`ray start --head --block`) and worker nodes
(tests/ray_node.py), each its own process tree with its own raylet, object store and CPUs. Stopped by signalling only the processes started here (never
`ray stop`, which would take down every Ray on the machine)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

import psutil

from tests.helpers import pythonpath_with_repo

RAY = os.path.join(os.path.dirname(sys.executable), "ray")

# Prints how many nodes the GCS at `address` lists as alive, once at least `n` are or `timeout`
# seconds have passed (n=0: at once); 0 while the GCS does not answer yet.
_WAIT = """
import time
from ray._raylet import GcsClient
from ray.core.generated import gcs_pb2
deadline, alive, client = time.time() + {timeout}, 0, None
while True:
    try:
        client = client or GcsClient(address={address!r})
        alive = sum(i.state == gcs_pb2.GcsNodeInfo.ALIVE for i in client.get_all_node_info(timeout=5).values())
    except Exception:
        client, alive = None, 0
    if alive >= {n} or time.time() >= deadline:
        break
    time.sleep(0.2)
print(alive)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    def __init__(self, env: dict | None = None):
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.temp_dir = tempfile.mkdtemp(prefix="fsray-", dir="/tmp")  # short: Ray's socket paths are length-capped
        # Ray turns a loopback address into the machine's outward IP; this switch (meant for laptops)
        # keeps every node, and every driver given this env, on 127.0.0.1. Token auth is off: nothing
        # listens beyond loopback.
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
                    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", **(env or {})}
        self.nodes: list[subprocess.Popen] = []

    def _start(self, cmd: list[str], env: dict) -> subprocess.Popen:
        log = open(os.path.join(self.temp_dir, f"node{len(self.nodes)}.log"), "w")
        proc = subprocess.Popen(cmd, env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.nodes.append(proc)
        return proc

    def start_head(self, num_cpus: int = 1) -> "LocalCluster":
        self._start([RAY, "start", "--block", "--head", "--port", str(self.port), "--num-cpus", str(num_cpus), "--num-gpus", "0",
                     "--temp-dir", self.temp_dir, "--include-dashboard", "false", "--disable-usage-stats"], {})
        self.wait_for_nodes(1)
        return self

    def add_node(self, num_cpus: int = 1) -> subprocess.Popen:
        proc = self._start([sys.executable, "-m", "tests.ray_node", self.address, str(num_cpus)],
                           {"PYTHONPATH": pythonpath_with_repo(self.env.get("PYTHONPATH"))})
        self.wait_for_nodes(len(self.nodes))
        return proc

    def alive_nodes(self) -> int:
        code = _WAIT.format(address=self.address, n=0, timeout=0)
        out = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=120)
        return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else 0

    def wait_for_nodes(self, n: int, timeout: float = 120) -> None:
        """Until `n` nodes are alive in the GCS's node table (what `ray.nodes()` reads): one process
        asks the GCS every 0.2 s (a driver started per look took 3 s or more of each second)."""
        code = _WAIT.format(address=self.address, n=n, timeout=timeout)
        out = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=timeout + 60)
        if out.returncode == 0 and int(out.stdout.strip().splitlines()[-1]) >= n:
            return
        logs = "".join(open(os.path.join(self.temp_dir, f)).read()[-1500:] for f in sorted(os.listdir(self.temp_dir)) if f.endswith(".log"))
        raise RuntimeError(f"Ray cluster did not reach {n} nodes:\n{out.stderr[-1500:]}{logs}")

    def raylet_pid(self, node: subprocess.Popen) -> int:
        for child in psutil.Process(node.pid).children(recursive=True):
            if child.name() == "raylet" or "raylet" in " ".join(child.cmdline()[:1]):
                return child.pid
        raise RuntimeError("no raylet under that node")

    def stop(self) -> None:
        """SIGTERM each `ray start --block` (it shuts down its node), then SIGKILL whatever it left."""
        trees = []
        for proc in reversed(self.nodes):
            try:
                trees.append([psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)])
            except psutil.NoSuchProcess:
                continue
            proc.send_signal(signal.SIGTERM)
        for proc in self.nodes:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        for proc in self.nodes:  # the process group each node was started in (start_new_session)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for tree in trees:
            for p in tree:
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)
