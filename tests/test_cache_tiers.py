"""One contract for every storage tier, and each tier's own bounds."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.cache.tiers import (
    DiskTier,
    MemoryTier,
    RedisTier,
    Tier,
    TierUnavailable,
    default_cache_dir,
)


@pytest.fixture(params=["memory", "disk", "redis", "s3"])
def tier(request, tmp_path) -> Iterator[Tier]:
    if request.param == "memory":
        yield MemoryTier(max_bytes=1 << 20)
        return
    if request.param == "disk":
        yield DiskTier(tmp_path / "cache", max_bytes=1 << 20)
        return
    if request.param == "s3":
        tier = request.getfixturevalue("moto_server").tier("contract", uuid.uuid4().hex)
        yield tier
        tier.clear()
        return
    server = request.getfixturevalue("redis_server")
    tier = RedisTier(server.url, prefix=f"test:{uuid.uuid4().hex}:")
    yield tier
    tier.clear()
    tier.close()


KEY = "ab" + "0" * 62
OTHER = "cd" + "1" * 62


def test_get_set_exists_delete(tier):
    assert tier.get(KEY) is None and not tier.exists(KEY)
    tier.set(KEY, b"\x00binary\xffdata")
    assert tier.get(KEY) == b"\x00binary\xffdata" and tier.exists(KEY)
    tier.set(KEY, b"replaced")
    assert tier.get(KEY) == b"replaced"
    tier.delete(KEY)
    tier.delete(KEY)  # deleting a missing key is fine
    assert tier.get(KEY) is None and not tier.exists(KEY)


def test_stats_and_clear(tier):
    tier.set(KEY, b"x" * 10)
    tier.set(OTHER, b"y" * 20)
    tier.set(KEY, b"x" * 5)
    stats = tier.stats()
    assert (stats.entries, stats.bytes) == (2, 25)
    tier.clear()
    assert tier.stats().entries == 0 and tier.get(OTHER) is None


def test_keys_lists_every_entry_and_nothing_else(tier):
    assert list(tier.keys()) == []
    tier.set(KEY, b"x")
    tier.set(OTHER, b"y")
    assert sorted(tier.keys()) == sorted([KEY, OTHER])
    tier.delete(KEY)
    assert list(tier.keys()) == [OTHER]


@pytest.fixture(params=["memory", "disk"])
def bounded(request, tmp_path):
    """Tiers that bound their own size (Redis bounds itself with maxmemory)."""
    if request.param == "memory":
        return lambda limit: MemoryTier(max_bytes=limit)
    return lambda limit: DiskTier(tmp_path / f"bounded-{limit}", max_bytes=limit)


def test_least_recently_used_entries_go_first(bounded):
    small = bounded(300)
    keys = [f"{i:02d}" + "e" * 62 for i in range(3)]
    for key in keys:
        small.set(key, b"v" * 100)
        time.sleep(0.01)  # distinct mtimes for the disk tier's LRU order
    assert small.get(keys[0]) is not None  # touch the oldest: now most recent
    time.sleep(0.01)
    small.set("zz" + "f" * 62, b"v" * 100)
    assert small.get(keys[1]) is None  # the least recently used one went
    assert small.get(keys[0]) is not None and small.get(keys[2]) is not None
    assert small.stats().bytes <= 300


def test_an_entry_larger_than_the_tier_is_not_kept(bounded):
    tiny = bounded(10)
    tiny.set(KEY, b"x" * 11)
    assert tiny.get(KEY) is None and tiny.stats().bytes == 0


def test_disk_tier_survives_a_restart_and_writes_atomically(tmp_path):
    first = DiskTier(tmp_path, max_bytes=1 << 20)
    first.set(KEY, b"persisted")
    second = DiskTier(tmp_path, max_bytes=1 << 20)
    assert second.get(KEY) == b"persisted" and second.stats().bytes == len(b"persisted")
    leftovers = [p for p in (tmp_path / KEY[:2]).iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_disk_tier_counts_a_full_folder_in_the_background_of_its_first_write(tmp_path, monkeypatch):
    keys = [f"{i:02d}" + "e" * 62 for i in range(4)]
    first = DiskTier(tmp_path, max_bytes=1 << 20)
    for key in keys[:3]:
        first.set(key, b"v" * 100)
        time.sleep(0.01)  # distinct mtimes: the oldest goes first
    scans: list[str] = []
    real_scan = DiskTier._scan
    monkeypatch.setattr(
        DiskTier,
        "_scan",
        lambda self: scans.append(threading.current_thread().name) or real_scan(self),
    )
    reopened = DiskTier(tmp_path, max_bytes=250)
    assert reopened.get(keys[0]) == b"v" * 100
    assert scans == []  # opening and reading a full folder counts nothing
    reopened.set(keys[3], b"v" * 100)  # 400 bytes in a 250-byte tier, once counted
    deadline = time.monotonic() + 10
    while reopened.exists(keys[1]) and time.monotonic() < deadline:  # exists: no touch
        time.sleep(0.01)
    assert not reopened.exists(keys[1]) and not reopened.exists(keys[2])
    assert reopened.exists(keys[0]) and reopened.exists(keys[3])  # read, and written last
    assert scans[0] == "nodegraph-disk-scan"
    assert reopened.stats().bytes <= 250


def test_disk_tier_rejects_path_like_keys(tmp_path):
    with pytest.raises(ValueError, match="invalid key"):
        DiskTier(tmp_path).set("../escape", b"x")


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("NODEGRAPH_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("NODEGRAPH_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "nodegraph"


def test_redis_ttl_is_set_on_write(redis_server):
    tier = RedisTier(redis_server.url, prefix=f"ttl:{uuid.uuid4().hex}:", ttl_seconds=30)
    tier.set(KEY, b"x")
    assert 0 < tier.client.ttl(tier.prefix + KEY) <= 30
    tier.clear()


def test_a_stopped_redis_fails_fast(own_redis_server):
    tier = RedisTier(own_redis_server.url, timeout_s=0.5)
    tier.set(KEY, b"x")
    own_redis_server.stop()
    started = time.monotonic()
    with pytest.raises(TierUnavailable, match="redis tier"):
        tier.get(KEY)
    assert time.monotonic() - started < 5


def test_a_stopped_s3_endpoint_fails_fast(own_moto_server):
    tier = own_moto_server.tier("down", timeout_s=1.0)
    tier.set(KEY, b"x")
    assert tier.get(KEY) == b"x"
    own_moto_server.stop()
    started = time.monotonic()
    with pytest.raises(TierUnavailable, match="s3 tier"):
        tier.get(KEY)
    assert time.monotonic() - started < 15
