"""Page rows of the books in flight, kept on local disk instead of in the driver's memory.

Each book in flight has one spill file, an Arrow IPC file (uncompressed record batches) in a
folder of the run, `<spill_dir or $TMPDIR>/folioscan-spill-<pid>-*`. Rows are buffered a few at a
time and written as one record batch; once the book is complete the file is closed and read back
by record batch, in any order (`take`), a chunk of rows at a time. A file is deleted once its book
is committed (or dropped), or when the book is read again from its first page (a lost worker);
the folder when the run ends. A folder left by a killed driver is removed by a later run using the
same spill folder: its run holds an exclusive lock (flock) on the folder's `.lock` file while it
lives, and the kernel drops the lock with the process, so a folder whose lock can be taken is a dead
run's. The pid in the folder's name is not asked: a driver in another PID namespace (a container
sharing the volume) or on another host shows a pid that means nothing here, and a killed driver's
pid can be reused. (A folder without a `.lock`, left by an older version, is judged by its pid.)

Nothing here is in the output: the output is still written by the commit, pages part then
documents part (pipeline/output.py), so exactly-once and resume are those of the commit.
"""
from __future__ import annotations

import fcntl
import itertools
import logging
import os
import shutil
import tempfile
import time
from bisect import bisect_right
from typing import Optional, Sequence

import pyarrow as pa

from folioscan.pipeline.storage import WriteError

log = logging.getLogger(__name__)

PREFIX = "folioscan-spill-"
_NEW = ".folioscan-spill-new-"  # a folder being made: renamed to PREFIX... once its lock is held
LOCK = ".lock"
BUFFER_ROWS = 16  # rows held per book before they are written as one record batch
_OPTIONS = pa.ipc.IpcWriteOptions()  # uncompressed: LZ4 took a tenth of the driver's CPU per page, for 3x less local disk


class Spill:
    """The run's spill folder: one `SpillFile` per book in flight."""

    def __init__(self, root: Optional[str] = None):
        root = root or tempfile.gettempdir()
        os.makedirs(root, exist_ok=True)
        remove_dead(root)
        new = tempfile.mkdtemp(prefix=_NEW, dir=root)
        self._lock = _hold(os.path.join(new, LOCK))
        if self._lock is None:
            raise OSError(f"{new}: could not lock the spill folder")
        self.dir = os.path.join(root, f"{PREFIX}{os.getpid()}-{os.path.basename(new)[len(_NEW):]}")
        os.rename(new, self.dir)  # seen under PREFIX only once locked: never taken for a dead run's
        self._n = itertools.count()

    def file(self, schema: pa.Schema) -> "SpillFile":
        return SpillFile(os.path.join(self.dir, f"{next(self._n)}.arrow"), schema)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


def _hold(path: str) -> Optional[int]:
    """An fd holding the exclusive lock on `path` (created if need be), or None when a live process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def remove_dead(root: str) -> int:
    """Remove spill folders left in `root` by drivers that are gone (a kill -9): those whose lock nobody
    holds (module docstring). Returns how many."""
    removed = 0
    for name in os.listdir(root):
        if not name.startswith((PREFIX, _NEW)):
            continue
        folder = os.path.join(root, name)
        lock = os.path.join(folder, LOCK)
        if name.startswith(_NEW) and not _older_than(folder, 60):  # being made: its lock may not be taken yet
            continue
        if os.path.exists(lock):
            try:
                fd = _hold(lock)
            except OSError:  # removed meanwhile, or not ours to open
                continue
            if fd is None:  # its run is live
                continue
            try:
                shutil.rmtree(folder, ignore_errors=True)
            finally:
                os.close(fd)
        else:  # an older version's folder (or one being made): its pid, as before
            pid = name[len(PREFIX):].split("-", 1)[0] if name.startswith(PREFIX) else ""
            if not pid.isdigit() or _alive(int(pid)):
                continue
            shutil.rmtree(folder, ignore_errors=True)
        log.info("removed spill folder %s left by a driver that is gone", name)
        removed += 1
    return removed


def _older_than(path: str, seconds: float) -> bool:
    try:
        return time.time() - os.stat(path).st_mtime > seconds
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class SpillFile:
    """Rows of one schema appended to a local Arrow IPC file, read back by row position once closed."""

    def __init__(self, path: Optional[str], schema: pa.Schema):
        self.path, self.schema = path, schema  # path None: record batches kept in memory (assemble_shard's lists)
        self._buffer: list = []  # dict rows and record batches not yet written, in order
        self._buffered = 0  # rows in them
        self._writer = None
        self._kept: list[pa.RecordBatch] = []
        self._starts: list[int] = []  # first row position of each record batch
        self._file = self._reader = None
        self._cache: dict[int, pa.RecordBatch] = {}
        self.rows = 0

    def append(self, row: dict) -> int:
        """Add a row; returns its position."""
        self._buffer.append(row)
        self.rows += 1
        self._buffered += 1
        if self._buffered >= BUFFER_ROWS:
            self._flush()
        return self.rows - 1

    def extend(self, batch: pa.RecordBatch) -> int:
        """Add a record batch of rows made elsewhere (in the schema); returns the first one's position."""
        self._rows_to_batch()
        self._buffer.append(batch)
        self.rows += batch.num_rows
        self._buffered += batch.num_rows
        if self._buffered >= BUFFER_ROWS:
            self._flush()
        return self.rows - batch.num_rows

    def _rows_to_batch(self) -> None:
        """The dict rows at the buffer's end as one record batch."""
        n = 0
        while n < len(self._buffer) and isinstance(self._buffer[len(self._buffer) - 1 - n], dict):
            n += 1
        if n:
            rows = self._buffer[len(self._buffer) - n:]
            self._buffer[len(self._buffer) - n:] = [pa.RecordBatch.from_pylist(rows, schema=self.schema)]

    def _flush(self) -> None:
        if not self._buffered:
            return
        self._rows_to_batch()
        pending = self._buffer
        batch = pending[0] if len(pending) == 1 else pa.Table.from_batches(pending, schema=self.schema).combine_chunks().to_batches()[0]
        self._starts.append(self.rows - self._buffered)
        self._buffer, self._buffered = [], 0
        if self.path is None:
            self._kept.append(batch)
            return
        try:
            if self._writer is None:
                self._writer = pa.ipc.new_file(self.path, self.schema, options=_OPTIONS)
            self._writer.write_batch(batch)
        except OSError as e:
            raise self._failed(e) from e

    def _failed(self, e: OSError) -> WriteError:
        """The spill's disk refused (full, a quota): the run cannot go on, and stops as a failed write
        (its record written, exit 74) rather than with a traceback."""
        return WriteError(self.path, str(e), "write the page rows of a book in flight (spill_dir)")

    def close(self) -> None:
        """No more rows: write what is buffered and the file's footer."""
        self._flush()
        if self._writer is not None:
            try:
                self._writer.close()
            except OSError as e:
                raise self._failed(e) from e
            self._writer = None

    def take(self, positions: Sequence[int], columns: Optional[Sequence[str]] = None) -> pa.Table:
        """The rows at `positions`, in that order, reading only the record batches that hold them (only
        `columns`, when given)."""
        self.close()
        need = sorted({bisect_right(self._starts, p) - 1 for p in positions})
        batches, base, offset = [], {}, 0
        for b in need:
            batch = self._batch(b)
            batches.append(batch)
            base[b], offset = offset, offset + batch.num_rows
        self._cache = dict(zip(need, batches))  # a chunk's last batches are usually the next chunk's first
        local = [base[b] + p - self._starts[b] for p in positions for b in (bisect_right(self._starts, p) - 1,)]
        table = pa.Table.from_batches(batches, schema=self.schema)
        return (table.select(list(columns)) if columns is not None else table).take(pa.array(local, pa.int64()))

    def _batch(self, b: int) -> pa.RecordBatch:
        if b in self._cache:
            return self._cache[b]
        if self.path is None:
            return self._kept[b]
        if self._reader is None:
            self._file = pa.OSFile(self.path, "rb")
            self._reader = pa.ipc.open_file(self._file)
        return self._reader.get_batch(b)

    def delete(self) -> None:
        """Forget the rows and remove the file."""
        if self._writer is not None:
            try:
                self._writer.close()
            except (OSError, pa.ArrowException):
                pass
            self._writer = None
        if self._file is not None:
            self._file.close()
        self._file = self._reader = None
        self._cache, self._kept, self._buffer, self._buffered = {}, [], [], 0
        if self.path is not None:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
