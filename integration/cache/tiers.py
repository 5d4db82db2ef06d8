"""Storage tiers: small byte stores with one interface, checked by one contract suite.

    >>> from integration.cache.tiers import MemoryTier
    >>> tier = MemoryTier(max_bytes=1024)
    >>> tier.set("k", b"value"); tier.get("k")
    b'value'

A tier stores opaque bytes (sealed envelopes, see ``envelope.py``) under a key. It
knows nothing of Prefect or pickling. ``get`` returns ``None`` for a miss; an
unreachable backend raises ``TierUnavailable`` so the hierarchy can go on without it.
Time-to-live is enforced by the hierarchy from each envelope's write time, the same way
for every tier.
"""

from __future__ import annotations

import contextlib
import os
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from integration.cache.besteffort import describe, folder_cause, writable_problem
from integration.errors import NodegraphError


class TierUnavailable(NodegraphError):
    """The tier's backend cannot be reached (or timed out).

    ``cause`` is set when the failure is the cache folder's (``besteffort.folder_cause``),
    so the run warns about that folder once, whichever file met it first.
    """

    def __init__(self, message: str, cause: tuple[str, str] | None = None) -> None:
        super().__init__(message)
        self.cause = cause


@dataclass(frozen=True)
class TierStats:
    """What a tier holds now."""

    name: str
    entries: int
    bytes: int


class Tier(ABC):
    """The interface every tier implements."""

    name: str = "tier"

    @abstractmethod
    def get(self, key: str) -> bytes | None:
        """The bytes stored under ``key``, or ``None``."""

    @abstractmethod
    def set(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, replacing what was there."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether ``key`` holds a live entry."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error."""

    @abstractmethod
    def clear(self) -> None:
        """Remove every entry this tier owns."""

    @abstractmethod
    def stats(self) -> TierStats:
        """Entries and bytes held now."""

    def keys(self) -> Iterator[str]:
        """Every key this tier holds (for ``nodegraph cache verify``)."""
        raise NotImplementedError(f"tier {self.name} cannot list its keys")

    def close(self) -> None:  # noqa: B027 - most tiers hold nothing to close
        """Release connections."""


class MemoryTier(Tier):
    """A bounded LRU in this process, counted in bytes."""

    name = "memory"

    def __init__(self, max_bytes: int = 256 * 2**20) -> None:
        if max_bytes <= 0:
            raise ValueError("memory tier: max_bytes must be positive")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            data = self._entries.get(key)
            if data is not None:
                self._entries.move_to_end(key)
            return data

    def set(self, key: str, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return  # larger than the whole tier: keep it elsewhere
        with self._lock:
            self._remove(key)
            self._entries[key] = data
            self._bytes += len(data)
            while self._bytes > self.max_bytes:
                oldest = next(iter(self._entries))
                self._remove(oldest)

    def exists(self, key: str) -> bool:
        with self._lock:
            return key in self._entries

    def delete(self, key: str) -> None:
        with self._lock:
            self._remove(key)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def stats(self) -> TierStats:
        with self._lock:
            return TierStats(self.name, len(self._entries), self._bytes)

    def keys(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._entries))

    def _remove(self, key: str) -> None:
        found = self._entries.pop(key, None)
        if found is not None:
            self._bytes -= len(found)


def default_cache_dir() -> Path:
    """``$NODEGRAPH_CACHE_DIR``, or ``~/.cache/nodegraph``."""
    configured = os.environ.get("NODEGRAPH_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "nodegraph"


class DiskTier(Tier):
    """A folder of entries, bounded in bytes with LRU eviction.

    Entries live at ``<root>/<key[:2]>/<key>``. A read touches the file's mtime, so
    eviction (oldest mtime first) is least-recently-used. Writes go to a temporary file
    and are renamed into place, so a crash never leaves a half-written entry behind.

    The bytes the folder holds are counted by a background scan that the first write
    starts: a folder of a million entries takes seconds to stat, and a run must not
    wait for it before its first node. Writes meanwhile add to the count when the scan
    ends, and eviction rescans, so entries counted twice only make it rescan sooner. A
    new folder is known to be empty without one.
    """

    name = "disk"

    def __init__(
        self,
        root: str | Path | None = None,
        max_bytes: int = 1024 * 2**20,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("disk tier: max_bytes must be positive")
        self.root = Path(root) if root is not None else default_cache_dir()
        self._root = str(self.root)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        problem = writable_problem(self.root)
        if problem is not None:
            raise TierUnavailable(
                f"disk tier: cannot write in {self.root}: {describe(problem)}",
                folder_cause(self.root, problem),
            ) from problem
        # Unknown until the first write's scan has counted them; a new folder holds none.
        self._bytes: int | None = None if self._has_shards() else 0
        self._written = 0  # bytes written (less deleted) while the scan runs
        self._scanning = False

    def _has_shards(self) -> bool:
        try:
            with os.scandir(self._root) as found:
                return any(len(e.name) == 2 and not e.name.startswith(".") for e in found)
        except OSError:
            return False

    def _count(self, delta: int) -> None:
        """Add ``delta`` bytes to the folder's count; evict if it grew past the bound."""
        with self._lock:
            if self._bytes is None:
                self._written += delta
                if self._scanning or delta <= 0:
                    return
                self._scanning = True
                threading.Thread(
                    target=self._scan_total, name="nodegraph-disk-scan", daemon=True
                ).start()
                return
            self._bytes += delta
            if self._bytes > self.max_bytes:
                self._evict()

    def _scan_total(self) -> None:
        try:
            scanned = sum(size for _, size, _ in self._scan())
        except OSError:
            scanned = 0  # an unreadable folder: writes report their own errors
        with self._lock:
            self._bytes = scanned + self._written
            self._written = 0
            self._scanning = False
            if self._bytes > self.max_bytes:
                self._evict()

    def _path(self, key: str) -> str:
        # Strings, not Paths: a run touches the disk tier a few times per node, and
        # pathlib's parsing costs more than the system calls it wraps.
        if not key or "/" in key or key.startswith("."):
            raise ValueError(f"disk tier: invalid key {key!r}")
        return f"{self._root}/{key[:2]}/{key}"

    def _scan(self) -> list[tuple[Path, int, float]]:
        found = []
        for folder in self.root.iterdir() if self.root.exists() else ():
            # Entries live in two-character shard folders; other folders hold locks and
            # run records, which are not cache entries.
            if len(folder.name) != 2 or folder.name.startswith(".") or not folder.is_dir():
                continue
            for entry in folder.iterdir():
                if entry.name.startswith("."):
                    continue
                try:
                    info = entry.stat()
                except FileNotFoundError:
                    continue
                found.append((entry, info.st_size, info.st_mtime))
        return found

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TierUnavailable(f"disk tier: cannot read {path}: {exc}") from exc
        try:
            os.utime(path)
        except OSError:
            pass  # LRU order is a hint; a read-only cache still serves
        return data

    def set(self, key: str, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        path = self._path(key)
        folder, name = os.path.split(path)
        temporary = f"{folder}/.{name}.{os.getpid()}.{threading.get_ident()}"
        try:
            try:
                handle = open(temporary, "wb")
            except FileNotFoundError:  # the shard's first entry (a first run, per shard)
                os.makedirs(folder, exist_ok=True)
                handle = open(temporary, "wb")
            with handle:
                handle.write(data)
            try:
                previous = os.stat(path).st_size
            except FileNotFoundError:
                previous = 0
            os.replace(temporary, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise TierUnavailable(
                f"disk tier: cannot write {path}: {describe(exc)}", folder_cause(self.root, exc)
            ) from exc
        self._count(len(data) - previous)

    def _evict(self) -> None:
        entries = sorted(self._scan(), key=lambda item: item[2])
        total = sum(size for _, size, _ in entries)
        for path, size, _ in entries:
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
        self._bytes = total

    def exists(self, key: str) -> bool:
        return os.path.exists(self._path(key))

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            size = os.stat(path).st_size
            os.unlink(path)
        except FileNotFoundError:
            return
        self._count(-size)

    def clear(self) -> None:
        for path, _, _ in self._scan():
            path.unlink(missing_ok=True)
        with self._lock:
            self._bytes = 0

    def stats(self) -> TierStats:
        entries = self._scan()
        return TierStats(self.name, len(entries), sum(size for _, size, _ in entries))

    def keys(self) -> Iterator[str]:
        return iter([path.name for path, _, _ in self._scan()])


class RedisTier(Tier):
    """Entries in Redis under ``<prefix><key>``, with Redis's own TTL.

    Every operation has a short socket timeout and no client-side retries, so a Redis
    that is down or hung costs one timeout, not a stalled run.
    """

    name = "redis"

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        prefix: str = "nodegraph:",
        ttl_seconds: float | None = None,
        timeout_s: float = 0.5,
    ) -> None:
        # Lazy: redis takes about 0.2 s to import, and only a configured Redis tier needs it.
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.url = url
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds
        self._errors = (redis.RedisError, OSError)
        self.client = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
        )

    def _run(self, operation: str, *args: object, **kwargs: object) -> object:
        try:
            return getattr(self.client, operation)(*args, **kwargs)
        except self._errors as exc:
            raise TierUnavailable(f"redis tier ({self.url}): {exc}") from exc

    def get(self, key: str) -> bytes | None:
        return self._run("get", self.prefix + key)  # type: ignore[return-value]

    def set(self, key: str, data: bytes) -> None:
        expire = max(1, int(self.ttl_seconds)) if self.ttl_seconds else None
        self._run("set", self.prefix + key, data, ex=expire)

    def exists(self, key: str) -> bool:
        return bool(self._run("exists", self.prefix + key))

    def delete(self, key: str) -> None:
        self._run("delete", self.prefix + key)

    def _keys(self) -> list[bytes]:
        try:
            return list(self.client.scan_iter(match=self.prefix + "*", count=500))
        except self._errors as exc:
            raise TierUnavailable(f"redis tier ({self.url}): {exc}") from exc

    def clear(self) -> None:
        keys = self._keys()
        for start in range(0, len(keys), 500):
            self._run("delete", *keys[start : start + 500])

    def stats(self) -> TierStats:
        keys = self._keys()
        sizes = [self._run("strlen", key) for key in keys]
        return TierStats(self.name, len(keys), sum(int(s) for s in sizes))  # type: ignore[arg-type]

    def keys(self) -> Iterator[str]:
        start = len(self.prefix)
        return iter([key.decode(errors="replace")[start:] for key in self._keys()])

    def close(self) -> None:
        self.client.close()


class S3Tier(Tier):
    """Entries as objects ``s3://<bucket>/<prefix><key>`` through s3fs.

    ``endpoint_url`` points at any S3 API (MinIO, moto, ...). Credentials come from the
    arguments or, as with any AWS client, from ``AWS_ACCESS_KEY_ID`` /
    ``AWS_SECRET_ACCESS_KEY`` / ``AWS_PROFILE``. Connect and read timeouts are short and
    botocore retries once at most, so an unreachable endpoint costs seconds, not minutes.
    """

    name = "s3"

    def __init__(
        self,
        bucket: str,
        prefix: str = "nodegraph/",
        endpoint_url: str | None = None,
        key: str | None = None,
        secret: str | None = None,
        region: str | None = None,
        timeout_s: float = 2.0,
    ) -> None:
        # Lazy: s3fs takes about 0.5 s to import, and only a configured S3 tier needs it.
        import s3fs

        if not bucket or "/" in bucket:
            raise ValueError(f"s3 tier: invalid bucket name {bucket!r}")
        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.fs = s3fs.S3FileSystem(
            key=key,
            secret=secret,
            client_kwargs={"endpoint_url": endpoint_url, "region_name": region},
            config_kwargs={
                "connect_timeout": timeout_s,
                "read_timeout": timeout_s,
                "retries": {"max_attempts": 1, "mode": "standard"},
            },
            use_listings_cache=False,
            skip_instance_cache=True,
        )
        self.where = f"s3://{bucket}/{self.prefix} ({endpoint_url or 'AWS'})"

    def _path(self, key: str) -> str:
        if not key or "/" in key:
            raise ValueError(f"s3 tier: invalid key {key!r}")
        return f"{self.bucket}/{self.prefix}{key}"

    def _fail(self, exc: Exception) -> TierUnavailable:
        return TierUnavailable(f"s3 tier {self.where}: {type(exc).__name__}: {exc}")

    def get(self, key: str) -> bytes | None:
        try:
            return self.fs.cat_file(self._path(key))
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise self._fail(exc) from exc

    def set(self, key: str, data: bytes) -> None:
        try:
            self.fs.pipe_file(self._path(key), data)
        except Exception as exc:
            raise self._fail(exc) from exc

    def exists(self, key: str) -> bool:
        try:
            return bool(self.fs.exists(self._path(key)))
        except Exception as exc:
            raise self._fail(exc) from exc

    def delete(self, key: str) -> None:
        try:
            self.fs.rm_file(self._path(key))
        except FileNotFoundError:
            return
        except Exception as exc:
            raise self._fail(exc) from exc

    def _objects(self) -> dict[str, dict[str, object]]:
        try:
            return self.fs.find(f"{self.bucket}/{self.prefix}", detail=True)
        except FileNotFoundError:
            return {}
        except Exception as exc:
            raise self._fail(exc) from exc

    def clear(self) -> None:
        paths = list(self._objects())
        if paths:
            try:
                self.fs.rm(paths)
            except Exception as exc:
                raise self._fail(exc) from exc

    def stats(self) -> TierStats:
        objects = self._objects()
        total = sum(int(info.get("size") or 0) for info in objects.values())  # type: ignore[call-overload]
        return TierStats(self.name, len(objects), total)

    def keys(self) -> Iterator[str]:
        return iter([path.rsplit("/", 1)[-1] for path in self._objects()])
