"""The hierarchy: nearest-first reads, promotion, faults, corruption and forgery."""

from __future__ import annotations

import logging
import pickle
import time

import pytest

from integration.cache.breaker import CircuitBreaker
from integration.cache.envelope import check, seal
from integration.cache.hierarchy import CacheHierarchy
from integration.cache.signing import SigningKey
from integration.cache.tiers import DiskTier, MemoryTier, Tier, TierStats, TierUnavailable
from tests.reliability.support import forged_signed, forged_unsigned

KEY = "9f" + "a" * 62


@pytest.fixture
def tiers(tmp_path):
    return MemoryTier(), DiskTier(tmp_path / "disk")


def test_reads_go_nearest_first_and_promote(tiers):
    memory, disk = tiers
    CacheHierarchy([disk]).store(KEY, [1, 2, 3])
    cache = CacheHierarchy([memory, disk])
    hit = cache.load(KEY)
    assert (hit.value, hit.tier) == ([1, 2, 3], "disk")
    assert memory.exists(KEY)  # promoted
    assert cache.load(KEY).tier == "memory"
    assert cache.locate(KEY) == "memory"
    assert cache.hits == {"disk": 1, "memory": 1}


def test_writes_go_to_every_level_and_misses_are_counted(tiers):
    memory, disk = tiers
    cache = CacheHierarchy([memory, disk])
    assert cache.load(KEY) is None and cache.misses == 1
    cache.store(KEY, {"a": 1})
    assert memory.exists(KEY) and disk.exists(KEY)
    cache.clear("memory")
    assert not memory.exists(KEY) and disk.exists(KEY)


def _disk_path(disk: DiskTier) -> object:
    return disk.root / KEY[:2] / KEY


def test_a_corrupt_entry_is_detected_deleted_and_missed(tiers, caplog):
    memory, disk = tiers
    cache = CacheHierarchy([disk])
    cache.store(KEY, "value")
    path = _disk_path(disk)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="nodegraph.cache"):
        assert cache.load(KEY) is None
    assert "corrupt entry" in caplog.text
    assert not disk.exists(KEY)


class Bomb:
    """Unpickling this creates a file: code execution, as any pickle can do."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_forged_entries_are_refused_before_unpickling(tiers, tmp_path, caplog):
    memory, disk = tiers
    target = tmp_path / "pwned"
    key = SigningKey(b"s" * 32, "test", shared=True)
    cache = CacheHierarchy([disk], key=key)
    bomb = pickle.dumps(Bomb(str(target)))
    forgeries = {
        "unsigned": forged_unsigned(bomb),
        "another key": seal(bomb, SigningKey(b"w" * 32, "wrong", shared=True)),
        "guessed signature": forged_signed(bomb, key.short_id, b"guess"),
    }
    with caplog.at_level(logging.WARNING, logger="nodegraph.cache"):
        for forged in forgeries.values():
            disk.set(KEY, forged)
            assert check(forged, key).problem == "forged"
            assert cache.load(KEY) is None
            assert not disk.exists(KEY)  # deleted: the recompute writes a signed one
    assert not target.exists()
    assert cache.refused["disk"] == 3
    assert caplog.text.count("refusing entry") == 1  # one warning per tier and run
    assert "cache tier disk" in caplog.text and key.id in caplog.text
    cache.store(KEY, "signed")
    assert cache.load(KEY).value == "signed"
    other = CacheHierarchy([disk], key=SigningKey(b"o" * 32, "other", shared=False))
    assert other.load(KEY) is None  # signed, but with a key this hierarchy does not hold


def test_a_hierarchy_signs_with_the_local_key_by_default(tiers, tmp_path, monkeypatch):
    memory, disk = tiers
    monkeypatch.setenv("NODEGRAPH_CACHE_KEY_FILE", str(tmp_path / "keys" / "cache.key"))
    cache = CacheHierarchy([disk])
    assert not cache.key.shared and (tmp_path / "keys" / "cache.key").exists()
    cache.store(KEY, "mine")
    assert check(disk.get(KEY), cache.key).ok
    assert CacheHierarchy([disk]).load(KEY).value == "mine"  # the same key, read again


def test_entries_older_than_the_ttl_are_gone(tiers):
    memory, disk = tiers
    key = CacheHierarchy([disk]).key
    disk.set(KEY, seal(pickle.dumps("old"), key, written_at=time.time() - 100))
    assert CacheHierarchy([disk], ttl_seconds=50).load(KEY) is None
    assert not disk.exists(KEY)
    disk.set(KEY, seal(pickle.dumps("fresh"), key))
    assert CacheHierarchy([disk], ttl_seconds=50).load(KEY).value == "fresh"


class DownTier(Tier):
    name = "redis"

    def __init__(self) -> None:
        self.calls = 0

    def _down(self, *args):
        self.calls += 1
        raise TierUnavailable("connection refused")

    get = set = exists = delete = clear = _down

    def stats(self) -> TierStats:
        return self._down()


def test_a_down_tier_is_skipped_warned_once_and_counted(tiers, caplog):
    memory, disk = tiers
    down = DownTier()
    cache = CacheHierarchy([memory, down, disk])
    with caplog.at_level(logging.WARNING, logger="nodegraph.cache"):
        cache.store(KEY, 41)
        memory.clear()
        assert cache.load(KEY).value == 41
        assert cache.load("00" + "b" * 62) is None
    assert caplog.text.count("cache tier redis is unavailable") == 1
    # The first failure opened the breaker: later calls skip the tier without calling it.
    assert cache.errors["redis"] >= 3 and cache.failures["redis"] == down.calls == 1
    cache.start_run()
    with caplog.at_level(logging.WARNING, logger="nodegraph.cache"):
        cache.load("00" + "c" * 62)
    assert caplog.text.count("cache tier redis is unavailable") == 2


def test_a_tripped_tier_is_probed_once_after_its_backoff_and_closes_when_back(tiers):
    memory, disk = tiers
    down = DownTier()
    cache = CacheHierarchy([memory, down, disk])
    clock = [0.0]
    cache.breakers["redis"] = CircuitBreaker(first_s=30, max_s=120, clock=lambda: clock[0])
    for index in range(5):
        cache.load(f"{index:02d}" + "d" * 62)
    assert down.calls == 1  # the rest were skipped while the breaker was open
    clock[0] = 31
    for index in range(5):
        cache.load(f"{index:02d}" + "e" * 62)
    assert down.calls == 2  # one probe, which failed: open again, for twice as long
    assert cache.breakers["redis"].backoff_s == 60
    clock[0] = 31 + 61
    down.get = down.set = down.exists = down.delete = lambda *args: None  # back up
    cache.store(KEY, 42)
    assert not cache.breakers["redis"].is_open
    assert cache.breakers["redis"].backoff_s == 30


def test_tiers_must_be_distinct(tiers):
    memory, _ = tiers
    with pytest.raises(ValueError, match="distinct"):
        CacheHierarchy([memory, MemoryTier()])


def test_flipped_bytes_in_redis_are_detected_and_deleted(redis_server):
    import uuid

    from integration.cache.tiers import RedisTier

    tier = RedisTier(redis_server.url, prefix=f"corrupt:{uuid.uuid4().hex}:")
    cache = CacheHierarchy([tier])
    cache.store(KEY, {"big": list(range(100))})
    raw = bytearray(tier.get(KEY))
    raw[-5] ^= 0x01
    tier.set(KEY, bytes(raw))
    assert cache.load(KEY) is None
    assert not tier.exists(KEY)
    tier.close()
