"""Retry policies: on the Prefect task, and the attempts really made."""

from __future__ import annotations

import pytest

import integration
from integration.config import ExecutionConfig, NodegraphConfig
from integration.errors import GraphLoadError
from integration.graph import bind, load_graph
from integration.graph.policy import ErrorPolicy, RetryPolicy, default_retry
from integration.prefect.tasks import RetryCondition, node_task
from integration.result import NodeState

STRATEGIES = ["sequential", "parallel"]


def flaky_graph(log, failures, on_error=None, node_type="testpack.flaky"):
    spec = {
        "id": "f",
        "type": node_type,
        "params": {"log": str(log), "failures": failures, "value": 7.0},
    }
    if on_error is not None:
        spec["on_error"] = on_error
    return {"name": "flaky", "nodes": [spec], "outputs": {"value": "f.out"}}


def test_policy_delays_and_qualification():
    policy = RetryPolicy(attempts=3, delay_seconds=0.1, backoff_factor=3)
    assert policy.delays() == pytest.approx([0.1, 0.3, 0.9])
    assert policy.qualifies(RuntimeError()) and policy.qualifies(TimeoutError())
    assert policy.qualifies(ValueError("any runtime error qualifies by default"))
    narrow = RetryPolicy(attempts=1, on=["ConnectionError"])
    assert narrow.qualifies(ConnectionRefusedError())  # a subclass qualifies
    assert not narrow.qualifies(RuntimeError())
    from integration.errors import NodeInputError

    assert not RetryPolicy(attempts=1).qualifies(NodeInputError("bad value"))


def test_the_prefect_task_carries_the_policy(registry, tmp_path):
    graph = flaky_graph(
        tmp_path / "log",
        1,
        {
            "retry": {
                "attempts": 3,
                "delay_seconds": 0.5,
                "backoff_factor": 2,
                "jitter": 0.2,
                "on": ["ConnectionError", "timeout"],
            }
        },
    )
    bound = bind(load_graph(graph), registry)
    node = bound.nodes["f"]
    task = node_task(node, retry=node.policy.retry)
    assert task.retries == 3
    assert task.retry_delay_seconds == [0.5, 1.0, 2.0]
    assert task.retry_jitter_factor == 0.2
    assert isinstance(task.retry_condition_fn, RetryCondition)
    assert task.retry_condition_fn.policy.on == ("ConnectionError", "timeout")
    plain = node_task(node)
    assert plain.retries == 0


def test_policy_precedence_node_over_type_over_config(registry, tmp_path):
    log = str(tmp_path / "log")
    typed = bind(load_graph(flaky_graph(log, 1, node_type="testpack.stubborn")), registry)
    assert typed.nodes["f"].policy.retry.attempts == 4
    overridden = bind(
        load_graph(flaky_graph(log, 1, {"retry": {"attempts": 1}}, node_type="testpack.stubborn")),
        registry,
    )
    assert overridden.nodes["f"].policy.retry.attempts == 1
    config = NodegraphConfig(execution=ExecutionConfig(retry_attempts=2, retry_delay=0.25))
    assert default_retry(config) == RetryPolicy(attempts=2, delay_seconds=0.25)
    assert default_retry(NodegraphConfig()) is None


def test_unknown_policy_keys_are_load_errors(tmp_path):
    with pytest.raises(GraphLoadError, match="on_error.skip"):
        load_graph(flaky_graph(tmp_path / "log", 1, {"skip": True}))
    with pytest.raises(GraphLoadError, match="attempts"):
        load_graph(flaky_graph(tmp_path / "log", 1, {"retry": {"attempts": -1}}))
    assert ErrorPolicy(retry=None).merged_over(None) == ErrorPolicy()


@pytest.mark.integration
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_flaky_node_succeeds_after_its_retries(prefect_server, registry, tmp_path, strategy):
    log = tmp_path / "attempts.log"
    graph = flaky_graph(log, 2, {"retry": {"attempts": 3, "delay_seconds": 0.01}})
    result = integration.run(graph, registry=registry, strategy=strategy)
    assert result.ok and result.outputs == {"value": 7.0}
    assert len(log.read_text().splitlines()) == 3
    report = result.nodes["f"]
    assert report.state == NodeState.COMPLETED and report.attempts == 3


@pytest.mark.integration
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_retries_run_out(prefect_server, registry, tmp_path, strategy):
    log = tmp_path / "attempts.log"
    graph = flaky_graph(log, 5, {"retry": {"attempts": 2, "delay_seconds": 0.01}})
    result = integration.run(graph, registry=registry, strategy=strategy)
    assert not result.ok
    assert len(log.read_text().splitlines()) == 3
    assert result.nodes["f"].attempts == 3
    assert result.nodes["f"].error.exception_type == "ConnectionError"


@pytest.mark.integration
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_failures_that_do_not_qualify_are_not_retried(prefect_server, registry, tmp_path, strategy):
    log = tmp_path / "attempts.log"
    graph = flaky_graph(
        log, 1, {"retry": {"attempts": 3, "delay_seconds": 0.01, "on": ["TimeoutError"]}}
    )
    result = integration.run(graph, registry=registry, strategy=strategy)
    assert not result.ok and len(log.read_text().splitlines()) == 1
    assert result.nodes["f"].attempts == 1


@pytest.mark.integration
def test_config_default_retries_apply_to_nodes_without_a_policy(prefect_server, registry, tmp_path):
    log = tmp_path / "attempts.log"
    config = NodegraphConfig(execution=ExecutionConfig(retry_attempts=2, retry_delay=0.01))
    result = integration.run(flaky_graph(log, 1), registry=registry, config=config)
    assert result.ok and result.nodes["f"].attempts == 2
