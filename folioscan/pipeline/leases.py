"""Claims on units of work in the output store, so that two drivers (or a restarted driver beside
a lingering one) never process or commit the same book twice.

A run announces itself with `_live/<run_id>.json` ({run_id, host, pid, expires_at}), rewritten
every `ttl/4` seconds by a heartbeat thread and deleted when the run ends. A claim on a key (a
book's doc_id, or a Parquet part being rewritten) is an object `_leases/<key>/<generation>` made
by exclusive create (`If-None-Match: *` on S3, a hard link locally): of several drivers that try
the same generation, one wins. A claim is held while its run is live; a claim whose run stopped
renewing (crashed, killed) is taken over by creating the next generation; a liveness record that
exists and cannot be read (access denied, a store failing) is taken for a live run's, never for an
ended one's. Expiry compares the driver's clock with `expires_at`, so drivers' clocks must agree to
well within the TTL. A run recorded on this very host and PID namespace (`pid_ns`) whose process is
gone is dead at once: a restart on the same machine need not wait out the TTL; a pid from another
namespace (a container sharing the host's name) says nothing here. A record whose run was killed
before it could delete it is removed by a later run once it has been expired for a further TTL (`remove_stale`).
"""
from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
from typing import Iterable, Optional

from folioscan.pipeline.storage import LocalStore, NotFound, Store, StorageError, join, parallel

log = logging.getLogger(__name__)

LIVE_CACHE_S = 1.0  # how long a run's liveness, once read, is believed without reading it again
CLAIM_THREADS = 16  # claims made at once (claim_many): a batch is at most shard_docs books


class Leases:
    def __init__(self, store: Store, output: str, run_id: str, ttl_s: float):
        self.store, self.run_id, self.ttl = store, run_id, ttl_s
        self.lease_dir, self.live_dir = join(output, "_leases"), join(output, "_live")
        self.held: dict[str, str] = {}  # key -> the generation this run created for it
        self.claimed_at: dict[str, float] = {}  # key -> time.monotonic() when this run claimed it
        self._expires_at = 0.0
        self._lapsed_until = float("-inf")  # monotonic: until then others may have taken this run for dead
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._live_cache: dict[str, tuple[float, bool]] = {}

    # -- this run's liveness ------------------------------------------------------------
    def start(self) -> "Leases":
        self.renew()
        self._thread = threading.Thread(target=self._heartbeat, name="folioscan-lease-heartbeat", daemon=True)
        self._thread.start()
        return self

    def renew(self) -> None:
        expires = time.time() + self.ttl
        record = {"run_id": self.run_id, "host": socket.gethostname(), "pid": os.getpid(), "pid_ns": _PID_NS,
                  "expires_at": expires}
        self.store.write(join(self.live_dir, f"{self.run_id}.json"), json.dumps(record).encode())
        if not self._expires_at:  # announced now: a claim made before, nobody had reason to leave alone
            self._lapsed_until = time.monotonic()
        elif not self.fresh():  # renewed late: another run may have taken our claims meanwhile
            self._lapsed_until = time.monotonic() + LIVE_CACHE_S  # (and may still think so, from its cache)
            log.warning("the run's lease heartbeat was late; claims made before now are checked in the store")
        self._expires_at = expires

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                self.renew()
            except Exception as e:  # the next beat tries again; commits check freshness first
                log.warning("lease heartbeat failed: %s", e)

    def fresh(self) -> bool:
        """Our claims are safe to commit under: well inside the time others would wait before taking them."""
        return time.time() < self._expires_at - self.ttl / 3

    def unbroken(self, key: str) -> bool:
        """This run claimed `key` and has been live without a lapse since (`fresh` now, and no late
        heartbeat after the claim): nobody can have taken it over, nor anything claimed for it after it
        (a book's claim on its bytes, duplicates.py)."""
        since = self.claimed_at.get(key)
        return since is not None and key in self.held and since > self._lapsed_until and self.fresh()

    def stop(self, keep_live: bool = False) -> None:
        """Stop the heartbeat and release every claim held; remove the liveness record unless
        `keep_live` (the driver removes it once its run record is written: `forget_live`)."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        if self.held:
            keys = list(self.held)
            try:
                self.release_many(keys)
            except StorageError as e:  # an output that cannot be written: the claims lapse with the TTL
                log.warning("could not release the claims on %d book(s) (%s ...): %s", len(keys), keys[0], e)
        if not keep_live:
            self.forget_live()

    def forget_live(self) -> None:
        """Remove this run's liveness record."""
        try:
            self.store.delete(join(self.live_dir, f"{self.run_id}.json"))
        except StorageError as e:
            log.warning("could not remove the run's liveness record: %s", e)

    # -- other runs ---------------------------------------------------------------------
    def is_live(self, run_id: str) -> bool:
        if run_id == self.run_id:
            return True
        cached = self._live_cache.get(run_id)
        if cached and time.monotonic() - cached[0] < LIVE_CACHE_S:
            return cached[1]
        uri = join(self.live_dir, f"{run_id}.json")
        try:
            record = json.loads(self.store.read(uri))
            live = float(record["expires_at"]) > time.time() and not _gone_here(record)
        except NotFound:
            live = False  # no record: the run ended, or never announced itself
        except StorageError as e:  # it exists and cannot be read now: the run may well be live, its claims stand
            log.warning("%s: cannot be read (%s); run %s taken for live", uri, e, run_id)
            live = True
        except (ValueError, KeyError, TypeError):
            live = False  # not a liveness record
        self._live_cache[run_id] = (time.monotonic(), live)
        return live

    def remove_stale(self) -> int:
        """Delete other runs' liveness records expired for more than this run's TTL (left by a driver
        killed before it could delete its own); returns how many. The margin keeps a record whose run is
        merely late with its heartbeat (or whose host's clock is a little behind): a run that late has
        lost its claims already (`still_held` checks them in the store), and its next beat writes the
        record again. Unreadable records are left alone."""
        removed, now = 0, time.time()
        for name in self.store.ls(self.live_dir):
            if not name.endswith(".json") or name == f"{self.run_id}.json":
                continue
            uri = join(self.live_dir, name)
            try:
                expires_at = float(json.loads(self.store.read(uri))["expires_at"])
            except (StorageError, ValueError, KeyError, TypeError):
                continue
            if expires_at + self.ttl < now:
                self.store.delete(uri)
                removed += 1
                log.info("removed the liveness record of run %s, expired %.0f s ago", name[:-5], now - expires_at)
        return removed

    # -- claims -------------------------------------------------------------------------
    def _generations(self, key: str) -> list[str]:
        return sorted(n for n in self.store.ls(join(self.lease_dir, key)) if n.isdigit())

    def _owner(self, key: str, generation: str) -> Optional[str]:
        """The run holding a generation; None when it vanished; "" when unreadable (nobody live)."""
        try:
            raw = self.store.read(join(self.lease_dir, key, generation))
        except StorageError:
            return None
        try:
            return str(json.loads(raw.split(b"\n", 1)[0])["run_id"])
        except (ValueError, KeyError, TypeError):
            return ""

    def claim(self, key: str) -> bool:
        """True when this run now holds `key`; False when a live run holds it."""
        if key in self.held:
            return True
        for _ in range(3):  # a generation can vanish under us while its taker tidies up: look again
            gens = self._generations(key)
            nxt = 0
            if gens:
                owner = self._owner(key, gens[-1])
                if owner is None:
                    continue
                if owner and owner != self.run_id and self.is_live(owner):
                    return False
                nxt = int(gens[-1]) + 1
            record = json.dumps({"run_id": self.run_id, "claimed_at": time.time()}).encode()
            asked = time.monotonic()  # before the create: a lapse while it is under way counts against it
            if self.store.create_exclusive(join(self.lease_dir, key, f"{nxt:08d}"), record):
                self.held[key], self.claimed_at[key] = f"{nxt:08d}", asked
                for old in gens:  # taken over from a dead run: its generations are history
                    self.store.delete(join(self.lease_dir, key, old))
                return True
        return False

    def claim_many(self, keys: list[str]) -> list[bool]:
        """`claim` for each key, CLAIM_THREADS at once: each is its own LIST and exclusive create, as
        alone, and a store's round trips are waited out together, not one book after another."""
        return parallel(self.claim, keys, CLAIM_THREADS)

    def claim_waiting(self, key: str, timeout_s: float) -> bool:
        """Claim, waiting with backoff while another live run holds the key (for short critical sections)."""
        deadline, delay = time.monotonic() + timeout_s, 0.05
        while not self.claim(key):
            if time.monotonic() > deadline:
                return False
            time.sleep(random.uniform(0, delay))
            delay = min(delay * 2, 2.0)
        return True

    def still_held(self, keys: Iterable[str]) -> set[str]:
        """Of `keys`, those this run still holds. Cheap while the heartbeat is fresh and was not late since
        the claims were made (`unbroken`): nobody takes the claims of a live run; otherwise each claim is
        checked in the store."""
        keys = set(keys) & self.held.keys()
        if all(self.unbroken(k) for k in keys):
            return keys
        if not self.fresh():
            try:
                self.renew()
            except StorageError as e:
                log.warning("lease renewal failed before a commit: %s", e)
        mine = {k for k in keys if self.unbroken(k)}
        for key in keys - mine:
            gens = self._generations(key)
            if gens and self._owner(key, gens[-1]) == self.run_id:
                mine.add(key)
            else:
                self.held.pop(key, None)
                self.claimed_at.pop(key, None)
        return mine

    def release(self, key: str) -> None:
        self.release_many([key])

    def release_many(self, keys: Iterable[str]) -> None:
        """Give up the claims on `keys`. While the heartbeat is fresh nobody can have taken them over
        (as in `still_held`), so the generations this run created are deleted at once, in one request
        where the store allows (S3's DeleteObjects); otherwise each key's generations are read and
        only this run's are deleted."""
        direct, done = [], []
        for key in keys:
            unbroken = self.unbroken(key)
            mine = self.held.pop(key, None)
            self.claimed_at.pop(key, None)
            if mine is not None and unbroken:
                direct.append(join(self.lease_dir, key, mine))
                done.append(key)
            else:
                self._release_checked(key)
        self.store.delete_many(direct)
        for key in done:
            self._remove_empty_folder(key)

    def _release_checked(self, key: str) -> None:
        for gen in self._generations(key):
            if self._owner(key, gen) == self.run_id:
                self.store.delete(join(self.lease_dir, key, gen))
        self._remove_empty_folder(key)

    def _remove_empty_folder(self, key: str) -> None:
        if isinstance(self.store, LocalStore):  # no empty folder per book left behind
            try:
                os.rmdir(join(self.lease_dir, key))
            except OSError:
                pass


def _pid_namespace() -> Optional[str]:
    """This process's PID namespace and boot (Linux): two containers may share a host name (the host's
    network) and not their pids; a reboot reuses the names of namespaces."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f"{os.readlink('/proc/self/ns/pid')} {f.read().strip()}"
    except OSError:
        return None


_PID_NS = _pid_namespace()


def _gone_here(record: dict) -> bool:
    """The run was on this host, in this PID namespace, and its process no longer exists. A record
    without its namespace (an older version's, or a system without /proc) is left to expire."""
    if record.get("host") != socket.gethostname() or not isinstance(record.get("pid"), int):
        return False
    if _PID_NS is None or record.get("pid_ns") != _PID_NS:  # its pid means nothing here
        return False
    try:
        os.kill(record["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by someone else
        return False
    return False
