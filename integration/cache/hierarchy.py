"""The tier hierarchy: nearest-first reads with promotion, writes to every level.

    >>> from integration.cache.hierarchy import CacheHierarchy
    >>> from integration.cache.tiers import MemoryTier
    >>> cache = CacheHierarchy([MemoryTier()])
    >>> cache.store("k" * 64, {"answer": 42})
    >>> cache.load("k" * 64).value, cache.load("k" * 64).tier
    ({'answer': 42}, 'memory')

Values are pickled and sealed (``envelope.py``) with the hierarchy's ``SigningKey``
(``signing.py``); nothing is unpickled before its checksum and HMAC have been verified.
An entry that fails is a miss, deleted so that the recompute overwrites it, with one
warning per tier and run. A tier that fails is skipped: the run goes on with the others,
warns once per tier, and counts the error. A tier that is unavailable (down, timed
out, its folder full) opens its circuit breaker (``breaker.py``): it is skipped, without
waiting on it, until a back-off expires, so a frozen tier costs one timeout, not one per
node.
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

from integration.cache import besteffort
from integration.cache.breaker import CircuitBreaker
from integration.cache.envelope import CorruptEntry, ForgedEntry, seal, unseal, written_at
from integration.cache.signing import SigningKey, resolve_key
from integration.cache.tiers import Tier, TierStats, TierUnavailable
from integration.observability import metrics

logger = logging.getLogger("nodegraph.cache")
SHARED_TIERS = ("redis", "s3")


@dataclass(frozen=True)
class Hit:
    """A value found in the cache, and the tier it came from."""

    value: Any
    tier: str


class CacheHierarchy:
    """Tiers ordered nearest first (memory, then disk, Redis, S3, as configured).

    ``key`` signs and verifies every entry (default: ``signing.resolve_key()``).
    """

    def __init__(
        self,
        tiers: Sequence[Tier],
        key: SigningKey | None = None,
        ttl_seconds: float | None = None,
    ) -> None:
        if not tiers:
            raise ValueError("a cache hierarchy needs at least one tier")
        names = [tier.name for tier in tiers]
        if len(set(names)) != len(names):
            raise ValueError(f"cache tiers must be distinct, got {names}")
        self.tiers = list(tiers)
        self.key = key if key is not None else resolve_key()
        self.ttl_seconds = ttl_seconds
        self.errors: Counter[str] = Counter()
        self.hits: Counter[str] = Counter()
        self.misses = 0
        self._warned: set[str] = set()
        self._refused: set[tuple[str, str]] = set()
        self.refused: Counter[str] = Counter()
        self._lock = threading.Lock()
        # Per process: a tier that timed out is skipped across runs until its back-off
        # expires, so each run of a long-lived process does not pay the timeout again.
        self.breakers = {tier.name: CircuitBreaker() for tier in self.tiers}
        self.failures: Counter[str] = Counter()
        """Calls that reached a tier and failed (``errors`` counts skipped calls too)."""
        self.skipped: Counter[str] = Counter()

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
            payload = unseal(entry, self.key)
        except ForgedEntry as exc:
            self._refuse(
                tier,
                "forged",
                "cache tier %s: refusing entry %s, which does not verify with %s (%s); "
                "not unpickled, treated as a miss and recomputed",
                key[:12],
                self.key.describe(),
                exc,
            )
            self._call(tier, "delete", key)
            return None
        except CorruptEntry as exc:
            self._refuse(
                tier, "corrupt", "cache tier %s: corrupt entry %s (%s); recomputing", key[:12], exc
            )
            self._call(tier, "delete", key)
            return None
        if self.ttl_seconds is not None and time.time() - written_at(entry) > self.ttl_seconds:
            self._call(tier, "delete", key)
            return None
        return payload

    def _refuse(self, tier: Tier, kind: str, message: str, *args: Any) -> None:
        """Log a refused entry: a warning for the first per tier, kind and run."""
        with self._lock:
            self.refused[tier.name] += 1
            first = (tier.name, kind) not in self._refused
            self._refused.add((tier.name, kind))
        if first:
            logger.warning(message + " (more in this tier this run: debug log)", tier.name, *args)
        else:
            logger.debug(message, tier.name, *args)

    # -- writing ------------------------------------------------------------------

    def store(self, key: str, value: Any) -> None:
        """Pickle, seal and write ``value`` to every tier."""
        self.store_bytes(key, cloudpickle.dumps(value))

    def store_bytes(self, key: str, payload: bytes) -> None:
        """Seal ``payload`` and write it to every tier."""
        entry = seal(payload, self.key)
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
        """Warn again (once per tier) in the next run; say if a shared tier can share
        nothing because only this machine's local key signs."""
        with self._lock:
            self._warned.clear()
            self._refused.clear()
        shared = [tier.name for tier in self.tiers if tier.name in SHARED_TIERS]
        if shared and not self.key.shared:
            logger.warning(
                "cache: the %s tier is shared, but entries are signed with this machine's %s: "
                "entries other machines wrote will not verify and are misses. To share them, "
                "set the same caching.secret (or caching.secret_block, or "
                "NODEGRAPH_CACHE_SECRET) on every machine",
                " and ".join(shared),
                self.key.describe(),
            )

    def close(self) -> None:
        for tier in self.tiers:
            tier.close()

    # -- faults -------------------------------------------------------------------

    def _call(self, tier: Tier, operation: str, *args: Any) -> Any:
        breaker = self.breakers[tier.name]
        if not breaker.allow():
            self._skip(tier, breaker)
            return None
        try:
            found = getattr(tier, operation)(*args)
        except Exception as exc:  # a failing tier must never fail the run
            if isinstance(exc, TierUnavailable):
                breaker.failed()
            self._failed(tier, exc, breaker)
            return None
        breaker.succeeded()
        return found

    def _count_error(self, tier: Tier) -> bool:
        """Count a call ``tier`` did not serve; whether it is the tier's first this run."""
        metrics.CACHE_TIER_ERRORS.labels(tier=tier.name).inc()
        with self._lock:
            self.errors[tier.name] += 1
            first = tier.name not in self._warned
            self._warned.add(tier.name)
        return first

    def _failed(self, tier: Tier, exc: Exception, breaker: CircuitBreaker) -> None:
        first = self._count_error(tier)
        with self._lock:
            self.failures[tier.name] += 1
        message = "cache tier %s is unavailable (%s: %s); going on without it%s"
        retry = f" (skipped, retried in {breaker.retry_in():.0f} s)" if breaker.is_open else ""
        args = (tier.name, type(exc).__name__, exc, retry)
        cause = getattr(exc, "cause", None)
        if cause is not None:
            # The cache folder's own failure: the run says it once, whoever met it first.
            besteffort.warn_once(cause, message, *args)
        elif first:
            logger.warning(message, *args)

    def _skip(self, tier: Tier, breaker: CircuitBreaker) -> None:
        if self._count_error(tier):
            logger.warning(
                "cache tier %s is unavailable (it failed earlier in this process); going on "
                "without it (retried in %.0f s)",
                tier.name,
                breaker.retry_in(),
            )
        with self._lock:
            self.skipped[tier.name] += 1
