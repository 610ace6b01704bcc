"""Start one Ray worker node and block: `python -m tests.ray_node GCS_ADDRESS NUM_CPUS`.

What `ray start --address ... --block` does, through Ray's own `Node` class (as ray.cluster_utils
does for Ray's tests): the CLI refuses a second node whose address is loopback, and this test
cluster must stay on 127.0.0.1."""
import signal
import sys
import time

import ray._private.node
import ray._private.parameter


def main() -> None:
    address, num_cpus = sys.argv[1], int(sys.argv[2])
    params = ray._private.parameter.RayParams(
        gcs_address=address, node_ip_address="127.0.0.1", num_cpus=num_cpus, num_gpus=0,
        object_store_memory=300 * 1024 * 1024, min_worker_port=0, max_worker_port=0,
        include_log_monitor=False, node_manager_port=0)
    params.dashboard_agent_listen_port = None
    node = ray._private.node.Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
    signal.signal(signal.SIGTERM, lambda *_: (node.kill_all_processes(check_alive=False, allow_graceful=True), sys.exit(0)))
    print("node started", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
