"""The process's S3 clients: one per endpoint, region and credentials, shared by every S3Store of
the process (storage.py), with folioscan's retries and timeouts and a fast timestamp parser."""
from __future__ import annotations

import os
import threading
from typing import Optional

_clients: dict = {}  # (pid, endpoint, region, key id, profile) -> boto3 client: one per process, shared by its stores
_clients_lock = threading.Lock()


def client_for(endpoint_url: Optional[str], region: Optional[str]):
    """The process's S3 client for an endpoint and region, built on first use. Building one costs
    ~0.1 s of CPU (botocore reads its service model from disk), and a store is unpickled afresh by
    every loader task, so without this every book paid for one (bench/driver.py). boto3 clients are
    thread-safe; building them is not, hence the lock. Keyed by pid (a forked child builds its own)
    and by the credentials the environment names (other credentials, another client)."""
    key = (os.getpid(), endpoint_url, region, os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_PROFILE"))
    client = _clients.get(key)
    if client is None:
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                import boto3
                from botocore.config import Config

                # a pool as large as compacted.READ_THREADS: the committed index is read by that many GETs at once
                cfg = Config(retries={"max_attempts": 5, "mode": "adaptive"}, connect_timeout=10, read_timeout=120,
                             max_pool_connections=32)
                session = boto3.session.Session()
                # listings parse a LastModified per key: dateutil takes ~0.5 ms each, minutes for a folder of
                # a million parts; ISO 8601 (what S3 sends) is parsed by the standard library instead
                session._session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=_timestamp)
                client = session.client("s3", endpoint_url=endpoint_url, region_name=region, config=cfg)
                _clients[key] = client
    return client


def _timestamp(value):
    """botocore's timestamp parser, fast for ISO 8601 ("2026-01-01T00:00:00.000Z"); anything else to botocore's own."""
    from datetime import datetime, timezone

    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
        except ValueError:
            pass
    from botocore.utils import parse_timestamp

    return parse_timestamp(value)
