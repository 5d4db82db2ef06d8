"""Node-key locks: which lock a configuration gets, and the leases of the lock managers.

Two processes racing on one graph are in tests/reliability/test_concurrent_runs.py.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time

import pytest
from prefect.locking.filesystem import FileSystemLockManager

from integration.config import CachingConfig, RedisSettings, load_config
from integration.graph import bind, load_graph
from integration.prefect.backend import NodeTasks
from integration.prefect.locking import (
    LeasedFileLockManager,
    LeasedRedisLockManager,
    holding,
    lock_manager_for,
)
from integration.prefect.storage import NodeKeyPolicy, TieredResultStorage, key_policy
from tests.conftest import free_port


@pytest.mark.parametrize(
    ("settings", "kind"),
    [
        ({}, "filesystem"),
        ({"cache_levels": ["memory", "disk", "redis"]}, "redis"),
        ({"cache_levels": ["memory", "redis"], "locking": "filesystem"}, "filesystem"),
        ({"locking": "redis"}, "redis"),
        ({"cache_levels": ["memory", "disk", "redis"], "locking": "none"}, "none"),
        ({"enable": False}, "none"),
    ],
)
def test_the_default_lock_follows_the_tiers(settings, kind):
    assert CachingConfig(**settings).lock_kind() == kind


def test_locking_opts_out_by_environment():
    config = load_config(environ={"NODEGRAPH_CACHING__LOCKING": "none"})
    assert config.caching.lock_kind() == "none"
    assert key_policy(config.caching).lock_manager is None


def test_default_policy_locks_with_files_in_the_cache_folder(tmp_path):
    policy = key_policy(CachingConfig(directory=tmp_path))
    assert policy.isolation_level == "SERIALIZABLE"
    assert isinstance(policy.lock_manager, LeasedFileLockManager)
    assert policy.lock_manager.lock_files_directory == tmp_path / ".locks"


def test_a_node_declared_cheap_keys_its_task_without_a_lock(tmp_path, registry):
    document = {
        "name": "two",
        "nodes": [
            {"id": "cheap", "type": "core.add", "params": {"a": 1, "b": 2}},
            {"id": "plain", "type": "testpack.constant_half", "params": {"value": 3}},
        ],
    }
    graph = bind(load_graph(document), registry)
    caching = CachingConfig(directory=tmp_path)
    storage = TieredResultStorage.for_config(caching)
    policy = key_policy(caching)
    tasks = {n: NodeTasks(graph.nodes[n], False, storage, policy) for n in ("cheap", "plain")}
    cheap, plain = (tasks[n].get(cached=True).cache_policy for n in ("cheap", "plain"))
    assert cheap.lock_manager is None and cheap.isolation_level is None
    assert plain.lock_manager is policy.lock_manager and plain.isolation_level == "SERIALIZABLE"
    assert isinstance(cheap, NodeKeyPolicy)  # keyed and persisted all the same


def test_a_live_holder_keeps_its_lock_past_the_lease(tmp_path):
    mine = LeasedFileLockManager(tmp_path, lease_seconds=0.3)
    assert mine.acquire_lock("k", "me")
    other = pickle.loads(pickle.dumps(mine))  # as a worker process receives it
    time.sleep(0.7)  # two leases: renewed meanwhile
    assert other.is_locked("k") and not other.is_lock_holder("k", "you")
    assert not other.acquire_lock("k", "you", acquire_timeout=0.2)
    mine.release_lock("k", "me")
    assert other.acquire_lock("k", "you", acquire_timeout=0.2)
    other.release_lock("k", "you")


def test_a_waiter_says_so_and_gets_the_lock_once_it_is_released(tmp_path, caplog):
    holder = LeasedFileLockManager(tmp_path)
    assert holder.acquire_lock("k", "first")
    threading.Timer(0.3, holder.release_lock, ("k", "first")).start()
    with caplog.at_level(logging.INFO, logger="nodegraph.lock"):
        assert LeasedFileLockManager(tmp_path).acquire_lock("k", "second", acquire_timeout=5)
    assert "is being computed by another run" in caplog.text
    assert "waiting for its result" in caplog.text


def test_an_expired_prefect_lock_file_is_taken_over(tmp_path, caplog):
    FileSystemLockManager(tmp_path).acquire_lock("k", "crashed", hold_timeout=0.05)
    time.sleep(0.1)
    ours = LeasedFileLockManager(tmp_path)
    with caplog.at_level(logging.WARNING, logger="nodegraph.lock"):
        assert ours.acquire_lock("k", "me", acquire_timeout=1)
    assert "lease expired" in caplog.text
    ours.release_lock("k", "me")
    assert not (tmp_path / "k.lock").exists()


def test_holding_takes_keys_in_order_and_releases_them(tmp_path):
    locks = LeasedFileLockManager(tmp_path)
    with holding(locks, ["b", None, "a"]):
        assert locks.is_locked("a") and locks.is_locked("b")
    assert not locks.is_locked("a") and not locks.is_locked("b")


def test_redis_that_does_not_answer_falls_back_to_files(tmp_path, caplog):
    caching = CachingConfig(
        directory=tmp_path,
        cache_levels=["memory", "disk", "redis"],
        redis=RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0", timeout_seconds=0.2),
    )
    with caplog.at_level(logging.WARNING, logger="nodegraph.lock"):
        manager = lock_manager_for(caching)
    assert isinstance(manager, LeasedFileLockManager)
    assert "locking with files" in caplog.text


def test_redis_locks_are_renewed_while_held(redis_server):
    mine = LeasedRedisLockManager(redis_server.url, prefix="lease-test:", lease_seconds=0.3)
    other = pickle.loads(pickle.dumps(mine))
    assert mine.acquire_lock("k", "me")
    time.sleep(0.7)  # renewed meanwhile
    assert not other.acquire_lock("k", "you", acquire_timeout=0.2)
    mine.release_lock("k", "me")
    assert other.acquire_lock("k", "you", acquire_timeout=0.5)
    other.release_lock("k", "you")
    assert not other.is_locked("k")
