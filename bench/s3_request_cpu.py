"""The client's CPU per S3 request: what a claim or a record costs the driver. Prints one JSON object.

    python bench/s3_request_cpu.py [--n 200]

moto's server in a process of its own (bench/s3_count.py); folioscan's own client (its retries and
timeouts, `s3client.client_for`); this process's CPU (getrusage) per small PUT, conditional PUT (a
claim), LIST of a folder (directly, and through botocore's paginator as `S3Store.ls` did before)
and GET, `--n` of each after a warm-up.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from driver import CountingS3, cpu_s  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200)
    args = ap.parse_args()
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(k, "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    from folioscan.pipeline.s3client import client_for

    s3 = CountingS3()
    try:
        c = client_for(s3.endpoint, None)
        c.create_bucket(Bucket="bench")
        n = args.n
        kinds = {
            "PUT": lambda i: c.put_object(Bucket="bench", Key=f"k{i}", Body=b'{"run_id": "x"}'),
            "conditional PUT (a claim)": lambda i: c.put_object(Bucket="bench", Key=f"c{i}/00000000", Body=b"{}", IfNoneMatch="*"),
            "LIST of a folder": lambda i: c.list_objects_v2(Bucket="bench", Prefix=f"c{i}/", Delimiter="/"),
            "LIST through the paginator": lambda i: list(c.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix=f"c{i}/", Delimiter="/")),
            "GET": lambda i: c.get_object(Bucket="bench", Key=f"k{i}")["Body"].read(),
        }
        out = {}
        for name, call in kinds.items():
            for i in range(n, n + 20):  # warm-up
                call(i) if name != "GET" else None
            c0 = cpu_s()
            for i in range(n):
                call(i)
            out[name] = round((cpu_s() - c0) * 1000 / n, 2)
    finally:
        s3.stop()
    print(json.dumps({"benchmark": "s3_request_cpu", "requests_each": n, "cpu_ms_per_request": out}, indent=1))


if __name__ == "__main__":
    main()
