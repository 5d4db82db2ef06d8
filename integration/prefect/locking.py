"""Per-key locks with a lease, so that concurrent runs compute each node once.

    >>> import tempfile
    >>> from pathlib import Path
    >>> from integration.prefect.locking import LeasedFileLockManager
    >>> locks = LeasedFileLockManager(Path(tempfile.mkdtemp()), lease_seconds=30)
    >>> locks.acquire_lock("ab12", holder="run-1")
    True
    >>> locks.is_locked("ab12"), locks.is_lock_holder("ab12", "run-2")
    (True, False)
    >>> locks.release_lock("ab12", holder="run-1")

Prefect's SERIALIZABLE isolation takes a node key's lock before the node runs and
releases it once the result is stored; a run that finds the key locked waits, then
reads the stored result. Prefect acquires with no hold timeout, so with its own lock
managers a lock whose holder died (kill -9) is held forever. These managers give every
lock a **lease** (``caching.lock_lease_seconds``, 30 s by default) that a thread of the
holding process renews every third of the lease while the node runs, so long nodes keep
their lock and a dead holder's lock expires:

- file locks (one machine, or a shared folder): a lock file holds its holder, its
  expiry and the holding process (host, pid, start time). A waiter on the same host
  takes over at once when that process is gone; elsewhere, once the lease ran out.
- Redis locks (``<caching.redis.prefix>lock:<key>``): the key's TTL is the lease.

A waiter therefore waits as long as a live holder computes the node, and at most one
lease after a holder died. Lock I/O is best-effort: a lock folder or Redis server that
fails turns locking off for that process with one warning, and the run goes on
unlocked (each node may then be computed by both runs); it never fails a node.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
from prefect.context import TaskRunContext
from prefect.locking.protocol import LockManager
from prefect.logging import get_run_logger
from redis.backoff import NoBackoff
from redis.exceptions import LockError, RedisError
from redis.lock import Lock
from redis.retry import Retry

from integration.cache.besteffort import describe, writable_problem
from integration.cache.factory import cache_folder
from integration.config import CachingConfig
from integration.runs import process_start

logger = logging.getLogger("nodegraph.lock")

DEFAULT_LEASE_S = 30.0
POLL_S = 0.1
"""How often a waiter looks at a held lock (Prefect's own managers poll as often)."""

_HOST = socket.gethostname()
_warned: set[str] = set()
_warned_guard = threading.Lock()


def _waiting(key: str, holder: str) -> None:
    """Say that a run waits for another's node: in the node's task run (the Prefect
    UI), and on ``nodegraph.lock`` (both at INFO, quiet on the console by default)."""
    message = "node key %s is being computed by another run (%s); waiting for its result"
    logger.info(message, _short(key), holder)
    if TaskRunContext.get() is not None:
        with contextlib.suppress(Exception):  # a task run without a run logger
            get_run_logger().info(message, _short(key), holder)


def _warn_once(what: str, message: str, *args: Any) -> None:
    with _warned_guard:
        if what in _warned:
            return
        _warned.add(what)
    logger.warning(message, *args)


def _short(key: str) -> str:
    return key[:12]


class _Renewer:
    """One thread per process that renews the leases of the locks this process holds.

    The thread runs while locks are held and exits when none are; a process that dies
    stops renewing, which is what lets its leases run out.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._held: dict[tuple[int, str], tuple[Any, str, str]] = {}
        self._thread: threading.Thread | None = None
        self._interval = float("inf")
        self._sooner = threading.Event()

    def add(self, manager: Any, key: str, holder: str) -> None:
        with self._guard:
            self._held[id(manager), key] = (manager, key, holder)
            if manager.lease_seconds / 3 < self._interval:
                self._sooner.set()  # a shorter lease than the thread sleeps for
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="nodegraph-lock-leases", daemon=True
                )
                self._thread.start()

    def discard(self, manager: Any, key: str) -> None:
        with self._guard:
            self._held.pop((id(manager), key), None)

    def _loop(self) -> None:
        while True:
            with self._guard:
                if not self._held:
                    self._thread = None
                    self._interval = float("inf")
                    return
                self._interval = min(m.lease_seconds for m, _, _ in self._held.values()) / 3
                self._sooner.clear()
            self._sooner.wait(self._interval)
            with self._guard:
                held = list(self._held.values())
            for manager, key, holder in held:
                with self._guard:
                    if (id(manager), key) not in self._held:
                        continue  # released meanwhile
                try:
                    manager.renew(key, holder)
                except Exception as exc:  # the thread must outlive one lock's trouble
                    logger.debug("could not renew the lock of %s: %s", _short(key), exc)

    def after_fork(self) -> None:
        # A forked child holds none of its parent's locks, nor its thread.
        self._guard = threading.Lock()
        self._held = {}
        self._thread = None
        self._interval = float("inf")
        self._sooner = threading.Event()


_RENEWER = _Renewer()
os.register_at_fork(after_in_child=_RENEWER.after_fork)


_this: tuple[int, str] = (0, "")


def _this_process() -> tuple[int, str]:
    """This process's pid and start time (read once per process, forks included)."""
    global _this
    if _this[0] != os.getpid():
        _this = (os.getpid(), process_start(os.getpid()))
    return _this


def _prefect_expiry(info: dict[str, Any]) -> float | None:
    """The expiry of a lock file Prefect's own manager wrote, if it set one."""
    try:
        return datetime.datetime.fromisoformat(str(info["expiration"])).timestamp()
    except (KeyError, ValueError):
        return None


def _warn_taken_over(key: str) -> None:
    """A holder finds, on release, that its lease ran out and another run took the lock."""
    logger.warning(
        "cache: lock of node key %s was taken over by another run while this one held it "
        "(its lease ran out)",
        _short(key),
    )


class _LeasedLockManager(LockManager):
    """What both leased managers share: the async forms run the sync ones on a thread,
    and a waiter polls until the lock is free."""

    async def aacquire_lock(
        self,
        key: str,
        holder: str,
        acquire_timeout: float | None = None,
        hold_timeout: float | None = None,
    ) -> bool:
        return await anyio.to_thread.run_sync(
            self.acquire_lock, key, holder, acquire_timeout, hold_timeout
        )

    def wait_for_lock(self, key: str, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_locked(key):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(POLL_S)
        return True

    async def await_for_lock(self, key: str, timeout: float | None = None) -> bool:
        return await anyio.to_thread.run_sync(self.wait_for_lock, key, timeout)


class LeasedFileLockManager(_LeasedLockManager):
    """Lock files ``<folder>/<key>.lock`` with a renewed lease (see the module doc)."""

    def __init__(self, lock_files_directory: Path, lease_seconds: float = DEFAULT_LEASE_S) -> None:
        self.lock_files_directory = Path(lock_files_directory).expanduser()
        self._folder = str(self.lock_files_directory)
        self.lease_seconds = lease_seconds
        self._off = False

    # Travels to process-pool and Dask workers by value: settings only.
    def __getstate__(self) -> dict[str, Any]:
        return {"lock_files_directory": self.lock_files_directory, "lease": self.lease_seconds}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["lock_files_directory"], state["lease"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"LeasedFileLockManager({str(self.lock_files_directory)!r})"

    def _path(self, key: str) -> str:
        return f"{self._folder}/{key}.lock"  # a string: pathlib costs more than the lock

    def _record(self, holder: str, lease: float) -> bytes:
        expiry = time.time() + lease
        pid, started = _this_process()
        return json.dumps(
            {
                # Prefect's own lock-file fields, so its managers read these files too.
                "holder": holder,
                "expiration": str(datetime.datetime.fromtimestamp(expiry, datetime.UTC)),
                "expires": expiry,
                "lease_seconds": lease,
                "host": _HOST,
                "pid": pid,
                "started": started,
            }
        ).encode()

    def _create(self, path: str, holder: str, lease: float) -> bool:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except FileNotFoundError:
            self.lock_files_directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            os.write(fd, self._record(holder, lease))
        finally:
            os.close(fd)
        return True

    def _read(self, path: str) -> dict[str, Any] | None:
        """The lock's record with its ``inode``, or ``None`` when there is no lock.

        A file just created and not yet written, or one in a format this version does
        not know, counts as held until its modification time plus one lease.
        """
        try:
            with open(path, "rb") as handle:
                stat = os.fstat(handle.fileno())
                text = handle.read()
        except FileNotFoundError:
            return None
        try:
            info = json.loads(text)
            if not isinstance(info, dict):
                raise ValueError("not a mapping")
        except ValueError:
            info = {}
        info["inode"] = (stat.st_ino, stat.st_mtime_ns)
        if not isinstance(info.get("expires"), (int, float)):
            info["expires"] = _prefect_expiry(info) or stat.st_mtime + self.lease_seconds
        return info

    def _dead_holder(self, info: dict[str, Any]) -> bool:
        if info.get("host") != _HOST or not isinstance(info.get("pid"), int):
            return False  # another machine's process: only its lease tells
        if (info["pid"], info.get("started")) == _this_process():
            return False  # this process (the common case: its own lock)
        return process_start(info["pid"]) != info.get("started")

    def _stale(self, info: dict[str, Any]) -> str | None:
        """Why a held lock may be taken over, or ``None`` while its holder holds it."""
        if self._dead_holder(info):
            return f"its holder (pid {info['pid']}) is gone"
        if info["expires"] < time.time():
            return "its lease expired"
        return None

    def _take_over(self, path: str, key: str, info: dict[str, Any], why: str) -> None:
        try:
            stat = os.stat(path)
            if (stat.st_ino, stat.st_mtime_ns) != info["inode"]:
                return  # renewed or replaced since it was read: look again
            os.unlink(path)
        except FileNotFoundError:
            return
        logger.warning("cache: lock of node key %s taken over: %s", _short(key), why)

    def _give_up(self, exc: OSError) -> None:
        self._off = True
        _warn_once(
            f"files:{self.lock_files_directory}",
            "cache: lock folder %s is not usable (%s); concurrent runs of this graph are "
            "not serialised in this process",
            self.lock_files_directory,
            exc,
        )

    def acquire_lock(
        self,
        key: str,
        holder: str,
        acquire_timeout: float | None = None,
        hold_timeout: float | None = None,
    ) -> bool:
        lease = hold_timeout or self.lease_seconds
        path = self._path(key)
        deadline = None if acquire_timeout is None else time.monotonic() + acquire_timeout
        announced = False
        while not self._off:
            try:
                if self._create(path, holder, lease):
                    _RENEWER.add(self, key, holder)
                    return True
                info = self._read(path)
            except OSError as exc:
                self._give_up(exc)
                break
            if info is None:
                continue  # released meanwhile
            if info.get("holder") == holder:
                return True
            why = self._stale(info)
            if why is not None:
                self._take_over(path, key, info, why)
                continue
            if deadline is not None and time.monotonic() >= deadline:
                return False
            if not announced:
                announced = True
                _waiting(key, f"pid {info.get('pid', '?')} on {info.get('host', '?')}")
            time.sleep(POLL_S)
        return True  # unlocked: the run goes on

    def renew(self, key: str, holder: str) -> None:
        """Push the lease of a lock this process holds one lease further."""
        path = self._path(key)
        try:
            info = self._read(path)
            if info is None or info.get("holder") != holder:
                return
            lease = float(info.get("lease_seconds") or self.lease_seconds)
            with open(path, "r+b") as handle:
                handle.write(self._record(holder, lease))
                handle.truncate()
        except OSError as exc:
            logger.debug("could not renew the lock of %s: %s", _short(key), exc)

    def release_lock(self, key: str, holder: str) -> None:
        _RENEWER.discard(self, key)
        if self._off:
            return
        path = self._path(key)
        try:
            info = self._read(path)
            if info is not None and info.get("holder") == holder:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            elif info is not None:
                _warn_taken_over(key)
        except OSError as exc:
            self._give_up(exc)

    def is_locked(self, key: str) -> bool:
        if self._off:
            return False
        try:
            info = self._read(self._path(key))
        except OSError:
            return False
        return info is not None and self._stale(info) is None

    def is_lock_holder(self, key: str, holder: str) -> bool:
        if self._off:
            return False
        try:
            info = self._read(self._path(key))
        except OSError:
            return False
        return info is not None and info.get("holder") == holder and self._stale(info) is None


class LeasedRedisLockManager(_LeasedLockManager):
    """Redis locks ``<prefix>lock:<key>`` whose TTL is a renewed lease."""

    def __init__(
        self,
        url: str,
        prefix: str = "nodegraph:",
        lease_seconds: float = DEFAULT_LEASE_S,
        timeout_seconds: float = 0.5,
    ) -> None:
        # Lazy: prefect-redis takes over 1 s to import, and only Redis locks need it.
        from prefect_redis.connection import redis_from_url

        self.url = url
        self.prefix = prefix
        self.lease_seconds = lease_seconds
        self.timeout_seconds = timeout_seconds
        # A frozen server must cost a timeout, not a hang; a dead one a refused
        # connection, not redis-py's default three retries with back-off (seconds per
        # lock, for every node of the run), as for the Redis tier.
        self.client = redis_from_url(
            url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
        )
        self._locks: dict[str, Lock] = {}
        self._off = False

    def __getstate__(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "prefix": self.prefix,
            "lease": self.lease_seconds,
            "timeout": self.timeout_seconds,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], state["prefix"], state["lease"], state["timeout"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"LeasedRedisLockManager(prefix={self.prefix!r})"

    def _name(self, key: str) -> str:
        return f"{self.prefix}lock:{key}"

    def _give_up(self, exc: Exception) -> None:
        self._off = True
        _warn_once(
            f"redis:{self.url}",
            "cache: Redis locks are not available (%s); concurrent runs of this graph are "
            "not serialised in this process",
            exc,
        )

    def ping(self) -> None:
        """Raise ``RedisError`` unless the server answers."""
        self.client.ping()

    def acquire_lock(
        self,
        key: str,
        holder: str,
        acquire_timeout: float | None = None,
        hold_timeout: float | None = None,
    ) -> bool:
        if self._off:
            return True
        name = self._name(key)
        lock = Lock(
            self.client,
            name,
            timeout=hold_timeout or self.lease_seconds,
            sleep=POLL_S,
            thread_local=False,
        )
        try:
            if not lock.acquire(token=holder, blocking=False):
                _waiting(key, f"lock {name}")
                if not lock.acquire(token=holder, blocking_timeout=acquire_timeout):
                    return False
        except RedisError as exc:
            self._give_up(exc)
            return True
        self._locks[key] = lock
        _RENEWER.add(self, key, holder)
        return True

    def renew(self, key: str, holder: str) -> None:
        lock = self._locks.get(key)
        if lock is None:
            return
        try:
            lock.reacquire()
        except (LockError, RedisError) as exc:
            logger.debug("could not renew the lock of %s: %s", _short(key), exc)

    def release_lock(self, key: str, holder: str) -> None:
        _RENEWER.discard(self, key)
        lock = self._locks.pop(key, None)
        if lock is None:
            return
        try:
            lock.release()
        except LockError:
            _warn_taken_over(key)
        except RedisError as exc:
            self._give_up(exc)

    def is_locked(self, key: str) -> bool:
        if self._off:
            return False
        try:
            return bool(self.client.exists(self._name(key)))
        except RedisError:
            return False

    def is_lock_holder(self, key: str, holder: str) -> bool:
        lock = self._locks.get(key)
        token = getattr(lock.local, "token", None) if lock is not None else None
        return token is not None and token.decode() == holder


@contextlib.contextmanager
def holding(locks: LockManager | None, keys: Iterable[str | None]) -> Iterator[None]:
    """Hold the locks of ``keys`` for the block, taken in sorted order so that two
    holders of several keys can never wait on each other; ``None`` keys and a ``None``
    manager take nothing."""
    if locks is None:
        yield
        return
    holder = uuid.uuid4().hex
    taken: list[str] = []
    try:
        for key in sorted({k for k in keys if k is not None}):
            locks.acquire_lock(key, holder)
            taken.append(key)
        yield
    finally:
        for key in reversed(taken):
            locks.release_lock(key, holder)


def lock_manager_for(caching: CachingConfig) -> LockManager | None:
    """The node-key lock manager ``caching`` asks for (``CachingConfig.lock_kind``),
    checked once in the flow's process: Redis locks fall back to lock files when the
    server does not answer, and lock files to no locking when their folder cannot be
    written; each with one warning (none inside a broken cache folder, which the run
    reports itself)."""
    kind = caching.lock_kind()
    if kind == "none":
        return None
    lease = caching.lock_lease_seconds
    folder = Path(caching.lock_directory or cache_folder(caching) / ".locks")
    if kind == "redis":
        redis = caching.redis
        manager = LeasedRedisLockManager(redis.url, redis.prefix, lease, redis.timeout_seconds)
        try:
            manager.ping()
            return manager
        except RedisError as exc:
            logger.warning(
                "cache: Redis at %s does not answer for locks (%s); locking with files in "
                "%s instead (this machine only)",
                redis.url,
                exc,
                folder,
            )
    problem = writable_problem(folder)
    if problem is not None:
        root = cache_folder(caching)
        # Inside a broken cache folder the run caches in memory only, and says so once
        # (``flow._check_cache_folder``); nothing is shared that locks could protect.
        if not (folder.is_relative_to(root) and writable_problem(root) is not None):
            logger.warning(
                "cache: lock folder %s cannot be written (%s); running without node "
                "locks, so a concurrent run of this graph may compute the same nodes",
                folder,
                describe(problem),
            )
        return None
    return LeasedFileLockManager(folder, lease)
