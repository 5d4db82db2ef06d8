"""The tier hierarchy: nearest-first reads with promotion, writes to every level.

    >>> from integration.cache.hierarchy import CacheHierarchy
    >>> from integration.cache.tiers import MemoryTier
    >>> cache = CacheHierarchy([MemoryTier()])
    >>> cache.store("k" * 64, {"answer": 42})
    >>> cache.load("k" * 64).value, cache.load("k" * 64).tier
    ({'answer': 42}, 'memory')

Values are pickled and sealed (``envelope.py``); nothing is unpickled before its
checksum, or its HMAC when a secret is set, has been verified. A tier that fails is
skipped: the run goes on with the others, warns once per tier, and counts the error.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cloudpickle

from integration.cache.envelope import CorruptEntry, ForgedEntry, seal, unseal, written_at
from integration.cache.tiers import Tier, TierStats
from integration.observability import metrics

logger = logging.getLogger("nodegraph.cache")


@dataclass(frozen=True)
class Hit:
    """A value found in the cache, and the tier it came from."""

    value: Any
    tier: str


class CacheHierarchy:
    """Tiers ordered nearest first (memory, then disk, Redis, S3, as configured)."""

    def __init__(
        self,
        tiers: Sequence[Tier],
        secret: bytes | None = None,
        ttl_seconds: float | None = None,
    ) -> None:
        if not tiers:
            raise ValueError("a cache hierarchy needs at least one tier")
        names = [tier.name for tier in tiers]
        if len(set(names)) != len(names):
            raise ValueError(f"cache tiers must be distinct, got {names}")
        self.tiers = list(tiers)
        self.secret = secret
        self.ttl_seconds = ttl_seconds
        self.errors: Counter[str] = Counter()
        self.hits: Counter[str] = Counter()
        self.misses = 0
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    # -- reading ------------------------------------------------------------------

    def load(self, key: str) -> Hit | None:
        """The unpickled value under ``key`` from the nearest tier with a valid entry."""
        found = self.load_bytes(key)
        if found is None:
            return None
        payload, tier_name = found
        return Hit(pickle.loads(payload), tier_name)

    def load_bytes(self, key: str) -> tuple[bytes, str] | None:
        """The verified payload under ``key`` and the tier it came from, or ``None``."""
        for depth, tier in enumerate(self.tiers):
            entry = self._call(tier, "get", key)
            if entry is None:
                continue
            payload = self._verified(tier, key, entry)
            if payload is None:
                continue
            for nearer in self.tiers[:depth]:
                self._call(nearer, "set", key, entry)
            with self._lock:
                self.hits[tier.name] += 1
            metrics.CACHE_READ_BYTES.labels(tier=tier.name).inc(len(payload))
            return payload, tier.name
        with self._lock:
            self.misses += 1
        return None

    def locate(self, key: str) -> str | None:
        """The nearest tier holding ``key``, without loading it (for planning)."""
        for tier in self.tiers:
            if self._call(tier, "exists", key):
                return tier.name
        return None

    def _verified(self, tier: Tier, key: str, entry: bytes) -> bytes | None:
        try:
            payload = unseal(entry, self.secret)
        except ForgedEntry as exc:
            logger.warning("cache: refusing entry %s in %s: %s", key[:12], tier.name, exc)
            self._call(tier, "delete", key)
            return None
        except CorruptEntry as exc:
            logger.warning(
                "cache: corrupt entry %s in %s (%s); recomputing", key[:12], tier.name, exc
            )
            self._call(tier, "delete", key)
            return None
        if self.ttl_seconds is not None and time.time() - written_at(entry) > self.ttl_seconds:
            self._call(tier, "delete", key)
            return None
        return payload

    # -- writing ------------------------------------------------------------------

    def store(self, key: str, value: Any) -> None:
        """Pickle, seal and write ``value`` to every tier."""
        self.store_bytes(key, cloudpickle.dumps(value))

    def store_bytes(self, key: str, payload: bytes) -> None:
        """Seal ``payload`` and write it to every tier."""
        entry = seal(payload, self.secret)
        for tier in self.tiers:
            self._call(tier, "set", key, entry)

    def delete(self, key: str) -> None:
        for tier in self.tiers:
            self._call(tier, "delete", key)

    def clear(self, tier_name: str | None = None) -> None:
        for tier in self.tiers:
            if tier_name is None or tier.name == tier_name:
                self._call(tier, "clear")

    def stats(self) -> list[TierStats]:
        found = []
        for tier in self.tiers:
            stats = self._call(tier, "stats")
            found.append(stats if stats is not None else TierStats(tier.name, -1, -1))
        return found

    def start_run(self) -> None:
        """Warn again (once per tier) in the next run."""
        with self._lock:
            self._warned.clear()

    def close(self) -> None:
        for tier in self.tiers:
            tier.close()

    # -- faults -------------------------------------------------------------------

    def _call(self, tier: Tier, operation: str, *args: Any) -> Any:
        try:
            return getattr(tier, operation)(*args)
        except Exception as exc:  # a failing tier must never fail the run
            metrics.CACHE_TIER_ERRORS.labels(tier=tier.name).inc()
            with self._lock:
                self.errors[tier.name] += 1
                first = tier.name not in self._warned
                self._warned.add(tier.name)
            if first:
                logger.warning(
                    "cache tier %s is unavailable (%s: %s); going on without it",
                    tier.name,
                    type(exc).__name__,
                    exc,
                )
            return None
