"""Graphs run as Prefect flows against a real Prefect server (one per session)."""

from __future__ import annotations

import gc
import os
import threading
from pathlib import Path

import pytest

import integration
from integration.config import ExecutionConfig, NodegraphConfig
from integration.errors import ErrorType
from integration.graph import GraphInputError, GraphValidationError
from integration.result import NodeState

pytestmark = pytest.mark.integration

GRAPHS = Path(__file__).parent / "fixtures" / "graphs"
EXAMPLES = Path(__file__).resolve().parents[1] / "flows" / "examples"
STRATEGIES = [
    pytest.param({"strategy": "sequential"}, id="sequential"),
    pytest.param({"strategy": "parallel"}, id="threads"),
    pytest.param({"strategy": "parallel", "processes": True, "max_workers": 2}, id="processes"),
]


@pytest.fixture(autouse=True)
def _server(prefect_server):
    return prefect_server


def run(graph, registry, **kwargs):
    return integration.run(graph, registry=registry, **kwargs)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_outputs_and_node_reports(registry, strategy):
    result = run(GRAPHS / "arithmetic.yaml", registry, inputs={"x": 23}, **strategy)
    assert result.ok, result.errors
    # 23 = 4 * 5 + 3; total = 4 * 10 + 3; picked = $.a.b[1] + 0.5
    assert result.outputs == {"total": 43, "picked": 20.5, "label": "q=4 r=3", "quotient_text": 4}
    order = list(result.nodes)
    assert order.index("split") < order.index("scaled") < order.index("total")
    assert "unused" not in result.nodes
    for report in result.nodes.values():
        assert report.state == NodeState.COMPLETED
        assert report.duration_s is not None and report.duration_s >= 0
        assert report.task_run_id
    assert result.flow_run_id and result.strategy.startswith(strategy["strategy"])


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_failure_stops_its_descendants_and_spares_independent_branches(registry, strategy):
    result = run(GRAPHS / "failing_branch.yaml", registry, **strategy)
    assert result.state == "failed" and not result.ok
    states = {n: r.state for n, r in result.nodes.items()}
    assert states == {
        "ten": NodeState.COMPLETED,
        "good": NodeState.COMPLETED,
        "zero": NodeState.COMPLETED,
        "bad_divide": NodeState.FAILED,
        "after_bad": NodeState.UPSTREAM_FAILED,
    }
    error = result.nodes["bad_divide"].error
    assert error.error_type == ErrorType.RUNTIME and error.exception_type == "ZeroDivisionError"
    assert "division by zero" in error.message and "ZeroDivisionError" in error.stacktrace
    assert error.recoverable
    if strategy.get("processes") is None:  # frames do not survive a process boundary
        assert "in divide" in error.node_traceback
    assert "site-packages/prefect" not in error.node_traceback
    assert "integration/" not in error.node_traceback
    assert error.node_traceback.endswith("ZeroDivisionError: float division by zero\n")
    assert not result.nodes["after_bad"].error.recoverable
    assert result.nodes["after_bad"].error.error_type == ErrorType.DEPENDENCY
    assert result.outputs == {"good": 11.0}


def test_processes_really_run_in_other_processes(registry):
    graph = {
        "name": "pids",
        "nodes": [
            {"id": f"p{i}", "type": "testpack.pid", "params": {"value": i}} for i in range(4)
        ],
    }
    result = run(graph, registry, strategy="parallel", processes=True, max_workers=2)
    pids = {result.outputs[f"p{i}.out"] for i in range(4)}
    assert os.getpid() not in pids


def _pids(registry, count: int = 4) -> set[int]:
    graph = {
        "name": "pids",
        "nodes": [
            {"id": f"p{i}", "type": "testpack.pid", "params": {"value": i}} for i in range(count)
        ],
    }
    # Uncached: a cached pid would say nothing about where the node ran this time.
    result = run(graph, registry, strategy="parallel", processes=True, max_workers=2, cache=False)
    assert result.ok, result.errors
    return {result.outputs[f"p{i}.out"] for i in range(count)}


def test_the_process_pool_stays_warm_between_runs(registry):
    first, second = _pids(registry), _pids(registry)
    assert len(first | second) <= 2, "a second run should reuse the first run's processes"


def test_a_process_that_dies_fails_its_node_and_the_next_run_gets_a_new_pool(registry):
    before = _pids(registry)
    graph = {"name": "dies", "nodes": [{"id": "boom", "type": "testpack.exit_process"}]}
    result = run(graph, registry, strategy="parallel", processes=True, max_workers=2)
    assert result.nodes["boom"].state == NodeState.FAILED
    assert result.nodes["boom"].error.exception_type == "BrokenProcessPool"
    after = _pids(registry)
    assert not before & after, "the broken pool's processes should have been replaced"


@pytest.mark.parametrize("strategy", STRATEGIES[1:])
def test_independent_branches_run_side_by_side(registry, strategy, tmp_path):
    names = ["left", "right"]
    graph = {
        "name": "overlap",
        "nodes": [
            {
                "id": name,
                "type": "testpack.rendezvous",
                "params": {"folder": str(tmp_path), "name": name, "peers": names},
            }
            for name in names
        ],
    }
    result = run(graph, registry, **strategy)
    assert result.ok, result.errors
    assert result.outputs == {"left.out": True, "right.out": True}, "the nodes never met"


def test_sequential_runs_one_node_at_a_time(registry):
    graph = {
        "name": "no-overlap",
        "nodes": [
            # distinct values: identical nodes would share one cache key
            {"id": f"s{i}", "type": "testpack.interval", "params": {"seconds": 0.2, "value": i}}
            for i in range(2)
        ],
    }
    result = run(graph, registry, strategy="sequential")
    assert result.outputs["s0.end"] <= result.outputs["s1.start"]


def test_runtime_input_checks_and_transform_failures(registry):
    result = run(GRAPHS / "runtime_checks.yaml", registry)
    split, number = result.nodes["split"], result.nodes["number"]
    assert split.state == NodeState.FAILED and split.error.error_type == ErrorType.VALIDATION
    assert "input 'b' must be >= 1, got 0" in split.error.message
    assert number.state == NodeState.FAILED and number.error.error_type == ErrorType.VALIDATION
    assert "transform 'float' on input 'a' failed" in number.error.message


def test_output_mismatch_is_reported_against_the_node(registry):
    result = run(
        {"name": "bad-out", "nodes": [{"id": "b", "type": "testpack.bad_outputs"}]}, registry
    )
    assert result.nodes["b"].error.error_type == ErrorType.VALIDATION
    assert "must return a mapping or a 2-tuple" in result.nodes["b"].error.message


def test_lazy_outputs_run_only_their_ancestors(registry):
    result = run(GRAPHS / "arithmetic.yaml", registry, outputs=["split.remainder"])
    assert list(result.nodes) == ["split"]
    assert result.outputs == {"split.remainder": 2}


def test_invalid_graphs_and_inputs_fail_before_anything_runs(registry):
    with pytest.raises(GraphValidationError):
        run(GRAPHS / "cycle.yaml", registry)
    with pytest.raises(GraphInputError, match="must be >= 0"):
        run(GRAPHS / "arithmetic.yaml", registry, inputs={"x": -5})


def test_execution_context_reaches_the_node_and_logs_to_the_task_run(registry):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterTaskRunId

    result = run(GRAPHS / "context.yaml", registry)
    info = result.outputs["info"]
    assert info == {
        "execution_id": result.flow_run_id,
        "node_id": "probe",
        "node_type": "testpack.whoami",
        "label": "hi",
    }
    task_run_id = result.nodes["probe"].task_run_id
    with get_client(sync_client=True) as client:
        for _ in range(50):
            logs = client.read_logs(
                log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[task_run_id]))
            )
            messages = [log.message for log in logs]
            if any("whoami says hello from probe" in m for m in messages):
                break
            threading.Event().wait(0.2)
    assert any("whoami says hello from probe" in m for m in messages)
    assert any("progress 1/2" in m for m in messages)


def _task_runs(flow_run_id, expected):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        for _ in range(100):
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            if len(runs) >= expected and all(r.state and r.state.is_final() for r in runs):
                return {r.name: r for r in runs}
            threading.Event().wait(0.2)
    raise AssertionError(f"task runs of {flow_run_id} did not all arrive")


@pytest.mark.parametrize("strategy", ["sequential", "parallel"])
def test_one_task_run_per_node_named_and_tagged_with_futures_as_inputs(registry, strategy):
    from prefect.client.orchestration import get_client

    # Fusion off: the core nodes are declared cheap, and fused they share task runs.
    config = NodegraphConfig(execution=ExecutionConfig(fusion="off", tag_node_types=True))
    result = run(EXAMPLES / "hello.yaml", registry, strategy=strategy, config=config)
    runs = _task_runs(result.flow_run_id, 4)
    assert set(runs) == {"greeting", "shout", "letters", "doubled"}
    assert sorted(runs["shout"].tags) == ["core.upper", "pack:core"]  # type and pack
    # the consumer's inputs reference the producer's task run: the UI draws the edge
    upstream = runs["shout"].task_inputs["upstream"]
    assert [ref.id for ref in upstream] == [runs["greeting"].id]
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(result.flow_run_id)
        flow = client.read_flow(flow_run.flow_id)
    assert flow.name == "hello"
    assert flow_run.parameters == {"name": "world"}


def test_to_flow_parameters_come_from_graph_inputs(registry):
    flow = integration.to_flow(GRAPHS / "arithmetic.yaml", registry=registry)
    assert flow.name == "arithmetic"
    properties = flow.parameters.properties
    assert set(properties) == {"x", "divisor", "payload"}
    assert properties["x"]["type"] == "integer" and properties["x"]["default"] == 17
    assert flow(x=7, divisor=2)["total"] == 31


def test_to_flow_works_as_a_subflow(registry):
    from prefect import flow

    hello = integration.to_flow(EXAMPLES / "hello.yaml", registry=registry)

    @flow
    def greet_everyone(names: list[str]) -> list[str]:
        return [hello(name=name)["message"] for name in names]

    assert greet_everyone(["ada", "bob"]) == ["HELLO, ADA!", "HELLO, BOB!"]


def test_calling_a_failing_flow_raises_with_the_report(registry):
    failing = integration.to_flow(GRAPHS / "failing_branch.yaml", registry=registry)
    with pytest.raises(integration.GraphRunFailed) as caught:
        failing()
    assert caught.value.result.nodes["bad_divide"].state == NodeState.FAILED
    assert "bad_divide (core.divide): runtime: float division by zero" in str(caught.value)


def test_examples_run(registry):
    hello = run(EXAMPLES / "hello.yaml", registry, inputs={"name": "Ada"})
    assert hello.outputs == {"message": "HELLO, ADA!", "letters_doubled": 6}
    arrays = run(EXAMPLES / "arrays.yaml", registry, strategy="parallel")
    assert abs(arrays.outputs["mean"]) < 1 and arrays.outputs["spread"] > 0
    assert len(arrays.outputs["column_sums"]) == 3
    assert abs(sum(arrays.outputs["column_sums"])) < 1e-9  # centred on the global mean
    branches = run(EXAMPLES / "branches.yaml", registry, strategy="parallel")
    assert branches.outputs["report"] == "10 numbers, mean 4.5, largest 9"


@pytest.mark.parametrize("strategy", STRATEGIES[:2])
def test_a_node_returning_the_wrong_type_fails_with_a_clear_message(registry, strategy):
    result = run(
        {"name": "liar", "nodes": [{"id": "l", "type": "testpack.liar"}]}, registry, **strategy
    )
    error = result.nodes["l"].error
    assert error.error_type == ErrorType.VALIDATION
    assert error.message == "node 'l': output 'out' expected int, got str 'not an int'"


@pytest.mark.parametrize("freeze", [True, False])
def test_a_run_keeps_the_collector_off_its_starting_heap_unless_told_not_to(registry, freeze):
    counts: list[int] = []
    config = NodegraphConfig(execution=ExecutionConfig(freeze_heap=freeze))
    result = run(
        GRAPHS / "arithmetic.yaml",
        registry,
        inputs={"x": 23},
        config=config,
        on_node_started=lambda node_id: counts.append(gc.get_freeze_count()),
    )
    assert result.ok, result.errors
    assert counts and all((count > 0) == freeze for count in counts)
    assert gc.get_freeze_count() == 0  # thawed when the run ends
