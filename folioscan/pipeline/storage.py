"""Object access for local folders and S3-compatible stores, behind one small interface.

Listing streams (S3 pages of 1,000 keys, os.scandir locally) so a bucket is never held in
memory. Writes are atomic: a local temp file renamed into place, or a single S3 PUT, which
S3 makes visible whole or not at all. Credentials come from boto3's standard chain; the
endpoint from --endpoint-url or AWS_ENDPOINT_URL. Nothing here logs a credential.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator, Optional, Protocol

from folioscan.pipeline.s3client import client_for
from folioscan.records import SourceObject

log = logging.getLogger(__name__)


def parallel(fn, items: list, threads: int) -> list:
    """fn over items on a thread pool (requests to a store wait on the network, not the CPU), results in
    order; the first exception raised, once all are done."""
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(min(threads, len(items))) as pool:
        return list(pool.map(fn, items))


class StorageError(RuntimeError):
    """A readable storage failure: names the object and the reason."""


class NotFound(StorageError):
    """A read of an object that does not exist (as against one that exists and cannot be read)."""


class WriteError(StorageError):
    """The output cannot be written (no space left, permission denied, a read-only store, S3 refusing a
    PUT or DELETE after its retries): names the object and the reason. A run stops on it (exit 74)."""

    def __init__(self, uri: str, reason: str, what: str = "write"):
        super().__init__(f"{uri}: cannot {what}: {reason}")
        self.uri, self.reason = uri, reason


def _write_error(uri: str, e: OSError, what: str = "write") -> WriteError:
    return WriteError(uri, e.strerror or str(e), what)


def _write_synced(path: str, data: bytes) -> None:
    """Write `data` to a new file at `path` and flush it to the disk."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


class Store(Protocol):
    def list(self, uri: str) -> Iterator[SourceObject]: ...
    def ls(self, uri: str, prefix: str = "") -> list[str]: ...  # names starting with `prefix` only
    def read(self, uri: str) -> bytes: ...
    def write(self, uri: str, data: bytes) -> None: ...
    def create_exclusive(self, uri: str, data: bytes) -> bool: ...
    def delete(self, uri: str) -> None: ...
    def delete_many(self, uris: list[str]) -> None: ...  # as delete, fewer requests where the store allows
    def check_writable(self, uri: str, create: bool = True) -> None: ...


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def split_s3(uri: str) -> tuple[str, str]:
    rest = uri[len("s3://"):]
    bucket, _, key = rest.partition("/")
    return bucket, key


class LocalStore:
    def list(self, uri: str) -> Iterator[SourceObject]:
        root = os.path.abspath(uri)
        if os.path.isfile(root):
            yield _local_object(root)
            return
        if not os.path.isdir(root):
            raise StorageError(f"{uri}: no such file or folder")
        stack = [root]
        while stack:
            folder = stack.pop()
            with os.scandir(folder) as entries:
                names = sorted(entries, key=lambda e: e.name)
            for entry in reversed(names):
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    stack.append(entry.path)
            for entry in names:
                if entry.is_file() and not entry.name.startswith("."):
                    yield _local_object(entry.path)

    def ls(self, uri: str, prefix: str = "") -> list[str]:
        """Names of the plain files directly in a folder (no hashing), sorted; those starting with `prefix`."""
        if not os.path.isdir(uri):
            return []
        return sorted(e.name for e in os.scandir(uri)
                      if e.is_file() and not e.name.startswith(".") and e.name.startswith(prefix))

    def read(self, uri: str) -> bytes:
        try:
            with open(uri, "rb") as f:
                return f.read()
        except FileNotFoundError as e:
            raise NotFound(f"{uri}: cannot read: {e.strerror or e}") from e
        except OSError as e:
            raise StorageError(f"{uri}: cannot read: {e.strerror or e}") from e

    def write(self, uri: str, data: bytes) -> None:
        """Atomic: a temp file renamed into place. On any failure (or an interruption) the temp file is
        removed; an OSError becomes a WriteError naming `uri`."""
        folder, name = os.path.split(os.path.abspath(uri))
        tmp = os.path.join(folder, f".{name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            os.makedirs(folder, exist_ok=True)
            try:
                _write_synced(tmp, data)
                os.replace(tmp, uri)
            except BaseException:
                _remove_quietly(tmp)
                raise
        except OSError as e:
            raise _write_error(uri, e) from e

    def create_exclusive(self, uri: str, data: bytes) -> bool:
        """Create `uri` with `data` unless it exists; True when this call created it. The content is
        written to a temp file first and hard-linked into place (which fails on an existing name,
        like O_EXCL), so no reader sees a partial file."""
        folder, name = os.path.split(os.path.abspath(uri))
        tmp = os.path.join(folder, f".{name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            try:
                for _ in range(3):  # the folder may be removed by a releasing claimant between makedirs and open
                    os.makedirs(folder, exist_ok=True)
                    try:
                        _write_synced(tmp, data)
                        break
                    except FileNotFoundError:
                        continue
                os.link(tmp, uri)
                return True
            except FileExistsError:
                return False
            finally:
                _remove_quietly(tmp)
        except OSError as e:
            raise _write_error(uri, e) from e

    def delete(self, uri: str) -> None:
        try:
            os.remove(uri)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise _write_error(uri, e, "delete") from e

    def delete_many(self, uris: list[str]) -> None:
        for uri in uris:
            self.delete(uri)

    def check_writable(self, uri: str, create: bool = True) -> None:
        """`create=False`: only check that the folder exists writable, or could be made (writes nothing)."""
        if not create:
            return _check_creatable(uri)
        try:
            os.makedirs(uri, exist_ok=True)
        except OSError as e:
            raise StorageError(f"{uri}: output folder cannot be created: {e.strerror or e}") from e
        if not os.access(uri, os.W_OK):
            raise StorageError(f"{uri}: output folder is not writable")


def _check_creatable(uri: str) -> None:
    path = os.path.abspath(uri)
    if os.path.exists(path) and not os.path.isdir(path):
        raise StorageError(f"{uri}: output is a file, not a folder")
    existing = path
    while not os.path.exists(existing):  # the nearest folder that exists must let us create the rest
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise StorageError(f"{uri}: output folder cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise StorageError(f"{uri}: output folder " + ("is not writable" if existing == path else
                                                        f"cannot be created: {existing} is not writable"))


def _local_object(path: str) -> SourceObject:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return SourceObject(uri=path, size=os.path.getsize(path), fingerprint="sha256:" + digest.hexdigest())


@dataclass
class S3Store:
    endpoint_url: Optional[str] = None
    region: Optional[str] = None

    def __post_init__(self) -> None:
        self._client = None
        self._conditional_writes: Optional[bool] = None  # probed on the first exclusive create

    def __getstate__(self):  # boto3 clients do not pickle; workers build their own
        return {"endpoint_url": self.endpoint_url, "region": self.region}

    def __setstate__(self, state):
        self.__init__(**state)

    @property
    def client(self):
        if self._client is None:
            self._client = client_for(self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None, self.region)
        return self._client

    def _call(self, what: str, uri: str, fn, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            return fn(**kwargs)
        except NoCredentialsError as e:
            raise StorageError(f"{uri}: no AWS credentials found (environment, config file or role)") from e
        except ClientError as e:
            raise _client_error(what, uri, e) from e
        except BotoCoreError as e:
            if what in _WRITES:
                raise WriteError(uri, str(e), what) from e
            raise StorageError(f"{uri}: {what} failed: {e}") from e

    def list(self, uri: str) -> Iterator[SourceObject]:
        bucket, prefix = split_s3(uri)
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=bucket, Prefix=prefix)
        it = iter(pages)
        while True:
            page = self._call("listing", uri, lambda: next(it, None))
            if page is None:
                return
            for obj in page.get("Contents", []):
                if obj["Key"].endswith("/"):
                    continue
                yield SourceObject(
                    uri=f"s3://{bucket}/{obj['Key']}", size=int(obj["Size"]),
                    fingerprint="etag:" + obj.get("ETag", "").strip('"'),
                )

    def ls(self, uri: str, prefix: str = "") -> list[str]:
        """Names of the objects directly under `uri`/ starting with `prefix` (one LIST per 1,000), sorted."""
        bucket, folder = split_s3(uri.rstrip("/") + "/")
        prefix, names = folder + prefix, []

        def pages() -> list[dict]:
            # ListObjectsV2 called directly, not through a paginator: a claim lists its folder once per
            # book, and botocore's paginator cost about 0.3 ms of CPU more per call (bench/s3_request_cpu.py)
            got = [self.client.list_objects_v2(Bucket=bucket, Prefix=prefix, Delimiter="/")]
            while got[-1].get("IsTruncated"):
                got.append(self.client.list_objects_v2(Bucket=bucket, Prefix=prefix, Delimiter="/",
                                                       ContinuationToken=got[-1]["NextContinuationToken"]))
            return got

        for page in self._call("listing", uri, pages):
            names += [o["Key"][len(folder):] for o in page.get("Contents", [])]
        return sorted(names)

    def read(self, uri: str) -> bytes:
        bucket, key = split_s3(uri)
        resp = self._call("read", uri, self.client.get_object, Bucket=bucket, Key=key)
        return self._call("read", uri, resp["Body"].read)

    def write(self, uri: str, data: bytes) -> None:
        bucket, key = split_s3(uri)
        self._call("write", uri, self.client.put_object, Bucket=bucket, Key=key, Body=data)

    def create_exclusive(self, uri: str, data: bytes) -> bool:
        """A conditional PUT (`If-None-Match: *`), refused by S3 (and most compatible stores) when the
        key exists. Where a store ignores the condition, a write-then-read-back check stands in."""
        from botocore.exceptions import ClientError

        bucket, key = split_s3(uri)
        if self._conditional_writes is None:
            probed = (os.getpid(), self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None, self.region, bucket)
            if probed not in _honours_if_none_match:  # once per process and bucket: a loader task unpickles its store afresh
                _honours_if_none_match[probed] = self._probe_conditional_writes(bucket, key)
            self._conditional_writes = _honours_if_none_match[probed]
        if not self._conditional_writes:
            return self._create_by_read_back(uri, data)
        from botocore.exceptions import BotoCoreError

        try:
            self.client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                return False
            raise _client_error("write", uri, e) from e
        except BotoCoreError as e:  # the endpoint unreachable after botocore's retries
            raise WriteError(uri, str(e)) from e

    def _probe_conditional_writes(self, bucket: str, key: str) -> bool:
        from botocore.exceptions import ClientError

        probe = key.rsplit("/", 1)[0] + f"/.probe-{uuid.uuid4().hex}"
        self._call("write", f"s3://{bucket}/{probe}", self.client.put_object, Bucket=bucket, Key=probe, Body=b"")
        try:
            self.client.put_object(Bucket=bucket, Key=probe, Body=b"", IfNoneMatch="*")
            supported = False
        except ClientError:
            supported = True
        finally:
            self.client.delete_object(Bucket=bucket, Key=probe)
        if not supported:
            log.warning("s3://%s ignores conditional writes; leases fall back to write-then-read-back", bucket)
        return supported

    def _create_by_read_back(self, uri: str, data: bytes) -> bool:
        try:
            self.read(uri)
            return False
        except StorageError:
            pass
        token = uuid.uuid4().hex.encode()
        self.write(uri, data + b"\n" + token)
        time.sleep(0.2)  # let a concurrent writer land: the last write wins, and only its author goes on
        return self.read(uri).endswith(token)

    def delete(self, uri: str) -> None:
        bucket, key = split_s3(uri)
        self._call("delete", uri, self.client.delete_object, Bucket=bucket, Key=key)

    def delete_many(self, uris: list[str]) -> None:
        """One DeleteObjects request per bucket and 1,000 keys; a key that could not be deleted is a
        WriteError naming it, as `delete` would raise (a missing key is no error, as with `delete`)."""
        by_bucket: dict[str, list[str]] = {}
        for uri in uris:
            bucket, key = split_s3(uri)
            by_bucket.setdefault(bucket, []).append(key)
        for bucket, keys in by_bucket.items():
            for i in range(0, len(keys), 1000):
                chunk = keys[i:i + 1000]
                where = f"s3://{bucket}/{chunk[0]}" + (f" (and {len(chunk) - 1} more)" if len(chunk) > 1 else "")
                resp = self._call("delete", where, self.client.delete_objects, Bucket=bucket,
                                  Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True})
                errors = resp.get("Errors") or []
                if errors:
                    e = errors[0]
                    raise WriteError(f"s3://{bucket}/{e.get('Key')}", e.get("Message") or e.get("Code") or "?", "delete")

    def check_writable(self, uri: str, create: bool = True) -> None:
        """The bucket exists and these credentials reach it (a HEAD; nothing is written either way)."""
        bucket, _ = split_s3(uri)
        self._call("bucket check", f"s3://{bucket}", self.client.head_bucket, Bucket=bucket)


_honours_if_none_match: dict = {}  # (pid, endpoint, region, bucket) -> whether the store honours If-None-Match (probed once)
_WRITES = ("write", "delete")


def _client_error(what: str, uri: str, e) -> StorageError:
    code = e.response.get("Error", {}).get("Code", "?")
    reason = {
        "NoSuchBucket": "bucket does not exist",
        "NoSuchKey": "object does not exist",
        "404": "not found",
        "AccessDenied": "access denied (check credentials and bucket policy)",
        "403": "access denied (check credentials and bucket policy)",
        "InvalidAccessKeyId": "the access key is not valid for this endpoint",
        "SignatureDoesNotMatch": "the secret key does not match the access key",
    }.get(code, code)
    if what in _WRITES:  # S3 refused to store or remove an object of the output, after botocore's retries
        return WriteError(uri, reason, what)
    return (NotFound if code in ("NoSuchKey", "404") else StorageError)(f"{uri}: {what} failed: {reason}")


def store_for(uri: str, endpoint_url: Optional[str] = None, region: Optional[str] = None) -> Store:
    return S3Store(endpoint_url, region) if is_s3(uri) else LocalStore()
