"""A cache tier that goes down never stops a run: real redis-server and moto servers."""

from __future__ import annotations

import logging

import pytest

import integration
from integration.cache.factory import hierarchy_for
from integration.config import CachingConfig, NodegraphConfig, RedisSettings, S3Settings
from integration.result import NodeState

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _server(prefect_server):
    return prefect_server


def stopping_chain(pid, log):
    """a_stop kills the server after the cache was consulted; then n0 -> n2 -> n3 run.

    Sequential order breaks ties by node id, so ``a_stop`` runs first, and every result
    written after it meets a dead tier.
    """
    return {
        "name": "tier-goes-down",
        "nodes": [
            {"id": "a_stop", "type": "testpack.stop_process", "params": {"pid": pid}},
            {
                "id": "n0",
                "type": "testpack.counted",
                "params": {"log": str(log), "value": 1.0, "offset": 1},
            },
            {"id": "n2", "type": "testpack.counted", "params": {"log": str(log), "offset": 2}},
            {"id": "n3", "type": "testpack.counted", "params": {"log": str(log), "offset": 3}},
        ],
        "edges": [
            {"from": "n0.out", "to": "n2.value"},
            {"from": "n2.out", "to": "n3.value"},
        ],
        "outputs": {"total": "n3.out", "stopped": "a_stop.out"},
    }


class Warnings(logging.Handler):
    """Collects the cache's warnings on its own logger, whatever Prefect does to root."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.text = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.text += record.getMessage() + "\n"


@pytest.fixture
def cache_warnings():
    handler = Warnings()
    logger = logging.getLogger("nodegraph.cache")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def run_with(config, doc, registry, cache_warnings):
    return integration.run(doc, registry=registry, config=config, strategy="sequential")


def test_redis_stopped_in_the_middle_of_a_run(registry, own_redis_server, tmp_path, cache_warnings):
    config = NodegraphConfig(
        caching=CachingConfig(
            cache_levels=["memory", "redis", "disk"],
            redis=RedisSettings(url=own_redis_server.url, timeout_seconds=0.5),
        )
    )
    doc = stopping_chain(own_redis_server.process.pid, tmp_path / "log")
    result = run_with(config, doc, registry, cache_warnings)
    assert result.ok and result.outputs == {"total": 7.0, "stopped": 0.0}
    assert result.nodes["a_stop"].state == NodeState.COMPLETED
    assert cache_warnings.text.count("cache tier redis is unavailable") == 1
    assert hierarchy_for(config.caching).errors["redis"] >= 2
    # the other tiers kept the results: a re-run executes nothing that was cacheable
    again = run_with(config, doc, registry, cache_warnings)
    assert again.nodes["n0"].state == NodeState.CACHED


def test_redis_down_from_the_start(registry, own_redis_server, tmp_path, cache_warnings):
    own_redis_server.stop()
    config = NodegraphConfig(
        caching=CachingConfig(
            cache_levels=["memory", "redis", "disk"], redis=RedisSettings(url=own_redis_server.url)
        )
    )
    doc = {
        "name": "no-redis",
        "nodes": [
            {
                "id": "a",
                "type": "testpack.counted",
                "params": {"log": str(tmp_path / "log"), "value": 2.0},
            }
        ],
    }
    result = run_with(config, doc, registry, cache_warnings)
    assert result.ok and result.outputs == {"a.out": 2.0}
    assert cache_warnings.text.count("cache tier redis is unavailable") == 1


def test_s3_stopped_in_the_middle_of_a_run(registry, own_moto_server, tmp_path, cache_warnings):
    own_moto_server.tier("results")  # creates the bucket
    config = NodegraphConfig(
        caching=CachingConfig(
            cache_levels=["memory", "s3"],
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
    doc = stopping_chain(own_moto_server.process.pid, tmp_path / "log")
    result = run_with(config, doc, registry, cache_warnings)
    assert result.ok and result.outputs == {"total": 7.0, "stopped": 0.0}
    assert cache_warnings.text.count("cache tier s3 is unavailable") == 1
    assert hierarchy_for(config.caching).errors["s3"] >= 2
