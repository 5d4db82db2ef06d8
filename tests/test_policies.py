"""Failure policies: timeout, fallback, skip and halt, on the sequential and parallel
strategies, and how the run and its Prefect flow run end."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client

import integration
from integration.config import ExecutionConfig, NodegraphConfig
from integration.graph import GraphValidationError, bind, load_graph
from integration.graph.policy import ErrorPolicy, default_policy
from integration.prefect.backend import NodeTasks
from integration.result import NodeState, RunState

pytestmark = pytest.mark.integration
STRATEGIES = ["sequential", "parallel"]


@pytest.fixture(autouse=True)
def _server(prefect_server):
    return prefect_server


def policy_graph(on_error, failing="testpack.fail", params=None):
    """``bad`` fails (by its type) and feeds ``after``; ``side`` is independent."""
    return {
        "name": "policies",
        "nodes": [
            {"id": "bad", "type": failing, "params": params or {"value": 3}, "on_error": on_error},
            {"id": "after", "type": "testpack.constant_half"},
            {"id": "side", "type": "testpack.constant_half", "params": {"value": 8}},
        ],
        "edges": [{"from": "bad.out", "to": "after.value"}],
    }


def flow_run_state(result):
    with get_client(sync_client=True) as client:
        return client.read_flow_run(uuid.UUID(result.flow_run_id)).state


def states(result):
    return {node_id: report.state for node_id, report in result.nodes.items()}


# -- the policy model -------------------------------------------------------------


def test_policy_shorthand_merging_and_config_defaults():
    assert ErrorPolicy.model_validate("halt").final_action == "halt"
    assert ErrorPolicy().final_action == "fail"
    implied = ErrorPolicy.model_validate({"fallback": {"outputs": {"out": 0}}})
    assert implied.action == "fallback"
    with pytest.raises(ValueError, match="needs a 'fallback'"):
        ErrorPolicy.model_validate({"action": "fallback"})
    with pytest.raises(ValueError, match="either a node 'type' or default 'outputs'"):
        ErrorPolicy.model_validate({"fallback": {"type": "a.b", "outputs": {"out": 1}}})
    own = ErrorPolicy.model_validate({"action": "skip"})
    merged = own.merged_over(ErrorPolicy(timeout_seconds=5, fallback={"outputs": {"out": 1}}))
    assert (merged.action, merged.timeout_seconds, merged.fallback) == ("skip", 5, None)
    config = NodegraphConfig(execution=ExecutionConfig(timeout_seconds=2.5, retry_attempts=1))
    assert default_policy(config).timeout_seconds == 2.5
    assert default_policy(config).retry.attempts == 1


def test_bad_fallbacks_are_validation_errors_naming_the_node(registry):
    cases = {
        "unknown fallback node type 'testpack.nope'": {"fallback": {"type": "testpack.nope"}},
        "lacks output(s) quotient, remainder": {"fallback": {"type": "testpack.constant_half"}},
        "missing remainder": {"fallback": {"outputs": {"quotient": 1}}},
        "needs input 'log'": {"fallback": {"type": "testpack.counted"}},
    }
    for message, on_error in cases.items():
        graph = {
            "name": "bad-fallback",
            "nodes": [
                {"id": "d", "type": "testpack.divmod", "params": {"a": 1}, "on_error": on_error}
            ],
        }
        if "needs input" in message:
            graph["nodes"][0] = {"id": "d", "type": "testpack.pid", "on_error": on_error}
        with pytest.raises(GraphValidationError) as caught:
            bind(load_graph(graph), registry)
        problem = caught.value.problems[0]
        assert problem.node_id == "d" and problem.code == "bad_fallback"
        assert message in problem.message


def test_timeout_maps_onto_the_prefect_task_unless_the_engine_kills_processes(registry):
    bound = bind(load_graph(policy_graph({"timeout_seconds": 1.5}, "testpack.hang")), registry)
    node = bound.nodes["bad"]
    threads = NodeTasks(node, False, None, error_policy=node.policy)
    assert threads.get(cached=False).timeout_seconds == 1.5
    processes = NodeTasks(node, False, None, error_policy=node.policy, kill_on_timeout=True)
    assert processes.get(cached=False).timeout_seconds is None
    assert processes.kill_after == 1.5


# -- timeout ----------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_hung_node_fails_as_timeout_and_is_stopped(registry, tmp_path, strategy):
    log = tmp_path / "hang.log"
    graph = policy_graph({"timeout_seconds": 0.5}, "testpack.hang", {"log": str(log)})
    result = integration.run(graph, registry=registry, strategy=strategy)
    bad = result.nodes["bad"]
    assert bad.state == NodeState.FAILED and bad.error.error_type == "timeout"
    assert bad.duration_s is None or bad.duration_s < 1.5
    assert result.nodes["side"].state == NodeState.COMPLETED
    assert result.nodes["after"].state == NodeState.UPSTREAM_FAILED
    time.sleep(0.3)  # the node's thread got TimeoutError raised inside it
    assert "finished" not in log.read_text()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_node_blocked_in_c_does_not_hang_the_run(registry, tmp_path, strategy):
    graph = policy_graph(
        {"timeout_seconds": 0.5}, "testpack.hang", {"seconds": 20, "blocking": True}
    )
    started = time.monotonic()
    result = integration.run(graph, registry=registry, strategy=strategy)
    assert result.nodes["bad"].error.error_type == "timeout"
    assert time.monotonic() - started < 15  # the 20 s sleep was abandoned, not awaited


def test_process_strategy_kills_a_hung_node(registry, tmp_path):
    log = tmp_path / "hang.log"
    graph = policy_graph(
        {"timeout_seconds": 1.0},
        "testpack.hang",
        {"log": str(log), "seconds": 60, "blocking": True},
    )
    result = integration.run(graph, registry=registry, strategy="parallel", processes=True)
    bad = result.nodes["bad"]
    assert bad.error.error_type == "timeout" and "process was killed" in bad.error.message
    pid = int(log.read_text().split()[0])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    assert not _alive(pid)
    assert result.nodes["side"].state == NodeState.COMPLETED


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# -- fallback ---------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_fallback_outputs_stand_in_and_dependents_run(registry, strategy):
    result = integration.run(
        policy_graph({"fallback": {"outputs": {"out": 10}}}), registry=registry, strategy=strategy
    )
    assert result.state == RunState.COMPLETED and result.ok
    bad = result.nodes["bad"]
    assert bad.state == NodeState.FALLBACK and bad.error.error_type == "runtime"
    assert "default outputs" in bad.reason
    assert result.outputs["after.out"] == 5.0
    assert flow_run_state(result).is_completed()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_fallback_node_type_runs_on_the_same_inputs(registry, tmp_path, strategy):
    log = tmp_path / "flaky.log"
    graph = policy_graph(
        {"fallback": {"type": "testpack.constant_half"}},
        "testpack.flaky",
        {"log": str(log), "failures": 5, "value": 7.0},
    )
    result = integration.run(graph, registry=registry, strategy=strategy)
    assert states(result) == {
        "bad": NodeState.FALLBACK,
        "after": NodeState.COMPLETED,
        "side": NodeState.COMPLETED,
    }
    assert result.outputs["after.out"] == 7.0 / 2 / 2
    # Neither the fallback nor what was computed from it is cached as the real thing.
    assert result.nodes["after"].cache_key is None
    again = integration.run(graph, registry=registry, strategy=strategy)
    assert again.nodes["after"].state == NodeState.COMPLETED
    assert again.nodes["side"].state == NodeState.CACHED
    assert len(log.read_text().splitlines()) == 2  # the node itself was tried again


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_failing_fallback_fails_the_node_with_both_errors(registry, strategy):
    graph = policy_graph({"fallback": {"type": "testpack.fail", "params": {"message": "also"}}})
    result = integration.run(graph, registry=registry, strategy=strategy)
    assert result.state == RunState.FAILED
    bad = result.nodes["bad"]
    assert bad.state == NodeState.FAILED
    assert "boom" in bad.error.message and "its fallback testpack.fail failed too" in (
        bad.error.message
    )
    assert result.nodes["after"].state == NodeState.UPSTREAM_FAILED
    assert flow_run_state(result).is_failed()


# -- skip -------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_skip_marks_the_branch_and_the_run_is_partial(registry, strategy):
    graph = policy_graph("skip")
    graph["nodes"].append({"id": "later", "type": "testpack.constant_half"})
    graph["edges"].append({"from": "after.out", "to": "later.value"})
    result = integration.run(graph, registry=registry, strategy=strategy)
    assert result.state == RunState.PARTIAL and not result.ok
    assert states(result) == {
        "bad": NodeState.SKIPPED,
        "after": NodeState.SKIPPED,
        "side": NodeState.COMPLETED,
        "later": NodeState.SKIPPED,
    }
    assert result.nodes["bad"].reason.startswith("skipped by policy after runtime")
    assert result.nodes["later"].reason == "upstream node 'bad' was skipped"
    assert result.outputs == {"side.out": 4.0}
    assert result.skipped == ["bad", "after", "later"]
    flow_state = flow_run_state(result)
    assert flow_state.is_completed()
    assert "3 node(s) skipped by policy: bad, after, later" in flow_state.message


def test_a_flow_with_skipped_nodes_returns_what_it_has(registry):
    flow = integration.to_flow(policy_graph("skip"), registry=registry)
    assert flow() == {"side.out": 4.0}


# -- halt and resume -----------------------------------------------------------------


def halting_graph(tmp_path):
    """volatile -> flaky (halts on its one failure) -> tail; slow runs beside them."""
    log = str(tmp_path / "executions.log")
    return {
        "name": "halting",
        "nodes": [
            {"id": "volatile", "type": "testpack.volatile_counted",
             "params": {"log": log, "value": 1.0}},
            {"id": "flaky", "type": "testpack.flaky",
             "params": {"log": str(tmp_path / "flaky.log"), "failures": 1}, "on_error": "halt"},
            {"id": "tail", "type": "testpack.counted", "params": {"log": log, "offset": 1.0}},
            {"id": "slow", "type": "testpack.slow_counted",
             "params": {"log": log, "value": 2.0, "seconds": 0.6}},
            {"id": "slow_tail", "type": "testpack.counted", "params": {"log": log}},
        ],
        "edges": [
            {"from": "volatile.out", "to": "flaky.value"},
            {"from": "flaky.out", "to": "tail.value"},
            {"from": "slow.out", "to": "slow_tail.value"},
        ],
    }  # fmt: skip


def test_halt_lets_running_nodes_finish_and_starts_nothing_new(registry, tmp_path):
    started, log = str(tmp_path / "slow-started"), str(tmp_path / "executions.log")
    graph = {
        "name": "halting",
        "nodes": [
            {"id": "slow", "type": "testpack.hang",
             "params": {"log": started, "seconds": 3.0, "value": 2.0}},
            {"id": "slow_tail", "type": "testpack.counted", "params": {"log": log}},
            {"id": "bad", "type": "testpack.fail_when_exists", "params": {"path": started},
             "on_error": "halt"},
            {"id": "tail", "type": "testpack.counted", "params": {"log": log}},
        ],
        "edges": [
            {"from": "slow.out", "to": "slow_tail.value"},
            {"from": "bad.out", "to": "tail.value"},
        ],
    }  # fmt: skip
    result = integration.run(graph, registry=registry, strategy="parallel", max_workers=4)
    assert result.state == RunState.HALTED and result.halted_at == "bad"
    assert result.nodes["bad"].state == NodeState.FAILED
    assert result.nodes["slow"].state == NodeState.COMPLETED  # was running: finished
    assert "finished" in Path(started).read_text()
    assert result.nodes["tail"].state == NodeState.PENDING
    assert result.nodes["slow_tail"].state == NodeState.PENDING  # never started
    assert not Path(log).exists()
    assert "halted after node 'bad'" in result.nodes["slow_tail"].reason
    assert result.resume_hint == f"nodegraph resume {result.resume_id}"
    assert flow_run_state(result).is_failed()
    again = integration.run(graph, registry=registry, strategy="parallel")
    assert again.nodes["slow"].state == NodeState.CACHED  # it persisted its result


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_resume_completes_a_halted_run_running_every_node_once(registry, tmp_path, strategy):
    graph = halting_graph(tmp_path)
    first = integration.run(graph, registry=registry, strategy=strategy)
    assert first.state == RunState.HALTED
    resumed = integration.resume(first.resume_id, registry=registry)
    assert resumed.state == RunState.COMPLETED
    assert resumed.nodes["volatile"].state == NodeState.CACHED  # its run-scoped checkpoint
    assert resumed.nodes["flaky"].state == NodeState.COMPLETED
    executions = (tmp_path / "executions.log").read_text().splitlines()
    ran = sorted(line.split()[0] if line.startswith("volatile") else line for line in executions)
    assert [line for line in ran if line == "volatile"] == ["volatile"]
    assert len(executions) == 4  # volatile, tail, slow and slow_tail: once each
    assert len((tmp_path / "flaky.log").read_text().splitlines()) == 2  # failed, then ran
    # Running the same graph afresh redoes only the cacheable=False node and what
    # depends on it (its key is scoped to the new run).
    fresh = integration.run(graph, registry=registry, strategy=strategy)
    assert fresh.nodes["slow"].state == NodeState.CACHED
    assert fresh.nodes["volatile"].state == NodeState.COMPLETED


def test_resume_of_an_unknown_run_names_it(registry):
    from integration.runs import UnknownRunError

    with pytest.raises(UnknownRunError, match="no record of run 'nope'"):
        integration.resume("nope", registry=registry)


# -- bad data -------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_validator_rejecting_a_run_time_value_fails_only_that_node(registry, strategy):
    graph = {
        "name": "validated",
        "nodes": [
            {"id": "text", "type": "core.upper", "params": {"text": "abc" * 40}},
            {"id": "check", "type": "testpack.checked"},
            {"id": "side", "type": "testpack.constant_half", "params": {"value": 8}},
        ],
        "edges": [{"from": "text.out", "to": "check.text"}],
    }
    result = integration.run(graph, registry=registry, strategy=strategy)
    error = result.nodes["check"].error
    assert error.error_type == "validation" and not error.recoverable
    assert "input 'text' must be at most 10 characters: 'ABCABC" in error.message
    assert "... (str, len 120)" in error.message  # the value is summarised, not dumped
    assert result.nodes["side"].state == NodeState.COMPLETED


# -- the command line -------------------------------------------------------------------


def test_cli_exit_codes_follow_the_run_state_and_resume_continues(tmp_path):
    from typer.testing import CliRunner

    from integration.cli import app as cli

    runner = CliRunner()
    example = Path(__file__).resolve().parents[1] / "flows" / "examples" / "resilient.yaml"
    partial = runner.invoke(cli.app, ["run", str(example), "--json"])
    assert partial.exit_code == 3, partial.output
    payload = json.loads(partial.stdout)
    assert payload["state"] == "partial" and payload["outputs"] == {"doubled": 0.0}
    by_id = {n["node_id"]: n for n in payload["nodes"]}
    assert by_id["ratio"]["state"] == "fallback" and by_id["keys"]["state"] == "skipped"
    human = runner.invoke(cli.app, ["run", str(example)])
    assert "2 node(s) skipped by policy: parsed, keys" in human.stdout

    graph_file = tmp_path / "halting.json"
    graph_file.write_text(json.dumps(halting_graph(tmp_path)))
    packs = Path(__file__).resolve().parent / "fixtures" / "packs"
    halted = runner.invoke(cli.app, ["run", str(graph_file), "--nodes", str(packs), "--json"])
    assert halted.exit_code == 4, halted.output
    payload = json.loads(halted.stdout)
    assert payload["state"] == "halted" and payload["halted_at"] == "flaky"
    command, run_id = payload["resume"].rsplit(" ", 1)
    assert command == "nodegraph resume"
    resumed = runner.invoke(cli.app, ["resume", run_id, "--nodes", str(packs), "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["state"] == "completed"
    unknown = runner.invoke(cli.app, ["resume", "no-such-run"])
    assert unknown.exit_code == 1 and "no record of run 'no-such-run'" in unknown.stderr
