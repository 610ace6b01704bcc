"""moto's S3 server on 127.0.0.1, counting the requests it serves (for bench/driver.py).

    python bench/s3_count.py          # prints the port on its first line, serves until killed

Runs in its own process, so the server's CPU time is not counted as the driver's. The counts
are taken where the requests arrive, in front of moto's WSGI application (the clients are the
production ones, unchanged): GET /__counts returns them as JSON ({"KIND AREA": n}),
POST /__counts/reset sets them to zero. KIND is LIST, GET, HEAD, PUT, PUT-IF-NONE-MATCH (an
exclusive create: a claim), DELETE, DELETE-MANY (DeleteObjects, up to 1,000 keys) or another
method; AREA is the first path element under the bucket's
top folder, and for keys under `out/<run>/` the element under that (`src`, `out/_leases`, `out/_live`,
`out/pages`, `out/documents`, `out/_runs`, `out/_content`, ...; the claims on bytes,
`out/<run>/_leases/content-<sha256>/`, are `out/_leases/content-`).
POST /__latency/<ms> makes every later request wait that long before moto serves it (a store's round
trip: moto on 127.0.0.1 has none), in its own server thread, so requests made at once wait at once.
"""
from __future__ import annotations

import io
import json
import os
import re
import sys
import threading
import time
from collections import Counter
from urllib.parse import parse_qs, unquote


def kind_of(environ) -> str:
    method = environ["REQUEST_METHOD"]
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    _, key = _bucket_key(environ)
    if method == "GET" and not key and ("list-type" in query or "prefix" in query or "delimiter" in query or not query):
        return "LIST"
    if method == "PUT" and environ.get("HTTP_IF_NONE_MATCH"):
        return "PUT-IF-NONE-MATCH"
    if method == "POST" and "delete" in query:
        return "DELETE-MANY"
    return method


def _bucket_key(environ) -> tuple[str, str]:
    path = unquote(environ.get("PATH_INFO", "")).lstrip("/")
    bucket, _, key = path.partition("/")
    return bucket, key


def area_of(environ) -> str:
    _, key = _bucket_key(environ)
    if not key and environ["REQUEST_METHOD"] == "POST":  # DeleteObjects: the first key of its body says where
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(body)  # moto reads it after us
        found = re.search(rb"<Key>([^<]*)</Key>", body)
        key = found.group(1).decode() if found else ""
    elif not key:  # a listing: its prefix says where
        key = parse_qs(environ.get("QUERY_STRING", "")).get("prefix", [""])[0]
    parts = [p for p in key.split("/") if p]
    if not parts:
        return "-"
    if parts[0] == "out" and len(parts) > 3 and parts[2] == "_leases" and parts[3].startswith("content-"):
        return "out/_leases/content-"  # claims on bytes (pipeline/duplicates.py), apart from the claims on books
    if parts[0] == "out" and len(parts) > 2:
        return "out/" + parts[2]
    return parts[0]


class Counting:
    """WSGI middleware: counts each request by kind and area, then hands it to moto."""

    def __init__(self, app):
        self.app, self.counts, self.lock = app, Counter(), threading.Lock()
        self.latency_s = 0.0

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/__latency/"):
            self.latency_s = float(path.rsplit("/", 1)[1]) / 1000
            start_response("200 OK", [("Content-Length", "0")])
            return [b""]
        if path.startswith("/__counts"):
            if environ["REQUEST_METHOD"] == "POST":
                with self.lock:
                    self.counts.clear()
            with self.lock:
                body = json.dumps(dict(self.counts)).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        with self.lock:
            self.counts[f"{kind_of(environ)} {area_of(environ)}"] += 1
        if self.latency_s:
            time.sleep(self.latency_s)
        return self.app(environ, start_response)


def main() -> None:
    import logging

    from moto.server import DomainDispatcherApplication, create_backend_app
    from moto.server import MotoRequestHandler  # noqa: F401  (moto's handler: keeps its header handling)
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(k, "bench")
    server = make_server("127.0.0.1", 0, Counting(DomainDispatcherApplication(create_backend_app)), True,
                         request_handler=MotoRequestHandler)
    print(server.server_port, flush=True)
    sys.stdout.close()
    server.serve_forever()


if __name__ == "__main__":
    main()
