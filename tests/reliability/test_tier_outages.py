"""A shared tier that dies or freezes mid-run costs a warning and one timeout, not the run.

Real ``redis-server`` and ``moto_server`` processes; a node of the graph kills or
freezes the server after the run consulted the cache, so every later read and write
meets the dead (or silent) tier. The hierarchy's counters say how often the run really
called the tier (``failures``) and how often its circuit breaker skipped it.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

import integration
from integration.cache.factory import hierarchy_for
from integration.config import CachingConfig, NodegraphConfig, RedisSettings, S3Settings
from integration.result import NodeState, RunResult

pytestmark = pytest.mark.integration

CHAIN = 4  # counted nodes after the one that stops the tier


@pytest.fixture(autouse=True)
def _server(prefect_server):
    return prefect_server


class Warnings(logging.Handler):
    """The cache's warnings, on its own logger, whatever Prefect does to the root one."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def about(self, tier: str) -> list[str]:
        return [line for line in self.lines if f"cache tier {tier} " in line]


@pytest.fixture
def cache_warnings() -> Iterator[Warnings]:
    handler = Warnings()
    logger = logging.getLogger("nodegraph.cache")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@pytest.fixture
def frozen_redis(own_redis_server) -> Iterator:
    """``own_redis_server``, woken up (SIGCONT) at teardown if a test froze it."""
    yield own_redis_server
    try:
        os.kill(own_redis_server.process.pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


def chain_after(stopper: dict, log: Path) -> dict:
    """``a_stop`` (run first: sequential breaks ties by id), then a chain of counted
    nodes, each appending a line to ``log`` when it really executes."""
    nodes = [{"id": "a_stop", **stopper}]
    edges = []
    for index in range(CHAIN):
        params = {"log": str(log), "offset": 1}
        if index == 0:
            params["value"] = 1.0
        nodes.append({"id": f"n{index}", "type": "testpack.counted", "params": params})
        if index:
            edges.append({"from": f"n{index - 1}.out", "to": f"n{index}.value"})
    return {
        "name": "tier-outage",
        "nodes": nodes,
        "edges": edges,
        "outputs": {"total": f"n{CHAIN - 1}.out", "stopped": "a_stop.out"},
    }


def redis_config(url: str) -> NodegraphConfig:
    return NodegraphConfig(
        caching=CachingConfig(
            cache_levels=["memory", "redis", "disk"],
            redis=RedisSettings(url=url, timeout_seconds=0.5),
        )
    )


def run(config: NodegraphConfig, doc: dict, registry) -> RunResult:
    return integration.run(doc, registry=registry, config=config, strategy="sequential")


def assert_completed_once(result, log: Path) -> None:
    assert result.ok and result.outputs == {"total": 1.0 + CHAIN, "stopped": 0.0}
    assert len(log.read_text().splitlines()) == CHAIN  # each node ran once


def assert_nothing_lost(config, doc, registry, log: Path) -> None:
    """A second run finds every finished node in the tiers that stayed up (the disk:
    this process's memory tier is emptied first)."""
    hierarchy_for(config.caching).clear("memory")
    again = run(config, doc, registry)
    assert again.ok and again.outputs["total"] == 1.0 + CHAIN
    assert {again.nodes[f"n{i}"].state for i in range(CHAIN)} == {NodeState.CACHED}
    assert len(log.read_text().splitlines()) == CHAIN


def test_redis_frozen_mid_run_costs_one_timeout(registry, frozen_redis, tmp_path, cache_warnings):
    config = redis_config(frozen_redis.url)
    log = tmp_path / "log"
    stopper = {"type": "testpack.signal_process", "params": {"pid": frozen_redis.process.pid}}
    doc = chain_after(stopper, log)
    result = run(config, doc, registry)
    assert_completed_once(result, log)
    cache = hierarchy_for(config.caching)
    # One call met the silent server and timed out; the breaker skipped every later one
    # (each node reads and writes: without it, each of those waits for the timeout).
    assert cache.failures["redis"] == 1, cache.failures
    assert cache.skipped["redis"] >= 2 * CHAIN - 1, cache.skipped
    assert cache.breakers["redis"].is_open
    assert len(cache_warnings.about("redis")) == 1, cache_warnings.lines
    # Still frozen: the next run in this process waits on it not even once.
    assert_nothing_lost(config, doc, registry, log)
    assert cache.failures["redis"] == 1
    assert len(cache_warnings.about("redis")) == 2  # once per run


def test_redis_killed_mid_run(registry, own_redis_server, tmp_path, cache_warnings):
    config = redis_config(own_redis_server.url)
    log = tmp_path / "log"
    stopper = {
        "type": "testpack.signal_process",
        "params": {"pid": own_redis_server.process.pid, "signal": "SIGKILL"},
    }
    doc = chain_after(stopper, log)
    result = run(config, doc, registry)
    assert_completed_once(result, log)
    cache = hierarchy_for(config.caching)
    assert cache.failures["redis"] == 1 and cache.skipped["redis"] >= 2 * CHAIN - 1
    assert len(cache_warnings.about("redis")) == 1, cache_warnings.lines
    assert_nothing_lost(config, doc, registry, log)


def test_s3_killed_mid_run(registry, own_moto_server, tmp_path, cache_warnings):
    own_moto_server.tier("results")  # creates the bucket
    config = NodegraphConfig(
        caching=CachingConfig(
            cache_levels=["memory", "s3", "disk"],
            s3=S3Settings(
                bucket="results",
                endpoint_url=own_moto_server.endpoint,
                region="eu-west-1",
                access_key_id="testing",
                secret_access_key="testing",
                timeout_seconds=1.0,
            ),
        )
    )
    log = tmp_path / "log"
    stopper = {
        "type": "testpack.signal_process",
        "params": {"pid": own_moto_server.process.pid, "signal": "SIGKILL"},
    }
    doc = chain_after(stopper, log)
    result = run(config, doc, registry)
    assert_completed_once(result, log)
    cache = hierarchy_for(config.caching)
    assert cache.failures["s3"] == 1 and cache.skipped["s3"] >= 2 * CHAIN - 1
    assert len(cache_warnings.about("s3")) == 1, cache_warnings.lines
    assert_nothing_lost(config, doc, registry, log)
