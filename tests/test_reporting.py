"""Events, artifacts, task-run tags and logs that a graph run leaves in Prefect.

Server tests run graphs against the session's real Prefect server and read back what
it stored; the rendering tests at the end need no server.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterTaskRunId,
)

import integration
from integration.config import (
    ExecutionConfig,
    MonitoringConfig,
    NodegraphConfig,
    load_config,
)
from integration.errors import ErrorType, NodeError
from integration.graph import bind, load_graph
from integration.graph.render import to_mermaid
from integration.plan import make_plan
from integration.prefect.reporting import (
    RunReporter,
    artifact_key,
    diagram_markdown,
    graph_event_name,
    graph_payload,
    node_event_name,
    node_payload,
    summary_markdown,
)
from integration.result import NodeReport, NodeState, RunResult, RunState
from tests.support import nodegraph_events

GRAPHS = Path(__file__).parent / "fixtures" / "graphs"
EXAMPLES = Path(__file__).resolve().parents[1] / "flows" / "examples"
SECRET = "Zanzibar"  # an input whose value (and output) must never reach an event

HALTING = {
    "name": "halting-events",
    "nodes": [
        {"id": "boom", "type": "testpack.fail", "params": {"message": "stop here"},
         "on_error": "halt"},
        {"id": "after", "type": "core.negate"},
    ],
    "edges": [{"from": "boom.out", "to": "after.a"}],
}  # fmt: skip


def _has_graph_event(events: list) -> bool:
    return any(e.event.startswith("nodegraph.graph.") for e in events)


def _complete(node_count: int) -> Callable[[list], bool]:
    def until(events: list) -> bool:
        nodes = [e for e in events if e.event.startswith("nodegraph.node.")]
        return _has_graph_event(events) and len(nodes) >= node_count

    return until


def _by_node(events: list) -> dict[str, object]:
    return {
        e.resource["nodegraph.node"]: e for e in events if e.event.startswith("nodegraph.node.")
    }


def _graph_event(events: list):
    [event] = [e for e in events if e.event.startswith("nodegraph.graph.")]
    return event


def _roles(event) -> dict[str, str]:
    return {r.role: r.id for r in event.related}


# -- events -------------------------------------------------------------------------


@pytest.mark.integration
def test_nodes_and_graph_emit_completed_then_cached_events_without_output_data(
    prefect_server, registry
):
    graph = EXAMPLES / "hello.yaml"
    first = integration.run(graph, inputs={"name": SECRET}, registry=registry, cache=True)
    assert first.ok and first.outputs["message"] == f"HELLO, {SECRET.upper()}!"
    events = nodegraph_events(first.flow_run_id, _complete(4))
    nodes = _by_node(events)
    assert set(nodes) == {"greeting", "shout", "letters", "doubled"}
    assert {e.event for e in nodes.values()} == {"nodegraph.node.completed"}

    shout = nodes["shout"]
    assert shout.resource.id == "nodegraph.node.hello.shout"
    assert shout.resource["nodegraph.node.type"] == "core.upper"
    assert shout.resource["nodegraph.node.pack"] == "core"
    assert shout.resource["nodegraph.state"] == "completed"
    roles = _roles(shout)
    assert roles["flow-run"] == f"prefect.flow-run.{first.flow_run_id}"
    assert roles["task-run"] == f"prefect.task-run.{first.nodes['shout'].task_run_id}"
    assert roles["graph"] == "nodegraph.graph.hello"
    payload = shout.payload
    assert payload["outputs"] == ["out"] and payload["attempts"] == 1
    assert payload["duration_s"] >= 0 and payload["cache_tier"] is None
    assert payload["cache_key"] == first.nodes["shout"].cache_key

    graph_event = _graph_event(events)
    assert graph_event.event == "nodegraph.graph.completed"
    assert graph_event.resource.id == "nodegraph.graph.hello"
    assert graph_event.resource["nodegraph.state"] == "completed"
    assert _roles(graph_event)["flow-run"] == f"prefect.flow-run.{first.flow_run_id}"
    assert graph_event.payload["nodes"] == 4
    assert graph_event.payload["counts"] == {"completed": 4}
    assert graph_event.payload["outputs"]["message"] == {
        "node": "shout",
        "port": "out",
        "available": True,
        "cache_key": first.nodes["shout"].cache_key,
    }
    assert graph_event.payload["duration_s"] > 0

    second = integration.run(graph, inputs={"name": SECRET}, registry=registry, cache=True)
    assert {r.state for r in second.nodes.values()} == {NodeState.CACHED}
    cached = nodegraph_events(second.flow_run_id, _complete(4))
    cached_nodes = _by_node(cached)
    assert {e.event for e in cached_nodes.values()} == {"nodegraph.node.cached"}
    assert all(e.payload["cache_tier"] in ("memory", "disk") for e in cached_nodes.values())
    assert _graph_event(cached).payload["counts"] == {"cached": 4}

    # Neither the input nor any output value travels in an event.
    text = json.dumps([e.model_dump(mode="json") for e in [*events, *cached]])
    assert SECRET.lower() not in text.lower()


@pytest.mark.integration
def test_a_failed_node_and_its_failed_graph(prefect_server, registry):
    result = integration.run(GRAPHS / "failing_branch.yaml", registry=registry, cache=False)
    assert result.state == RunState.FAILED
    events = nodegraph_events(result.flow_run_id, _complete(4))
    nodes = _by_node(events)
    # after_bad never ran: it has no event of its own, only a count in the graph event.
    assert set(nodes) == {"zero", "ten", "bad_divide", "good"}
    bad = nodes["bad_divide"]
    assert bad.event == "nodegraph.node.failed"
    assert bad.resource["nodegraph.state"] == "failed"
    error = bad.payload["error"]
    assert error["error_type"] == "runtime" and error["exception_type"] == "ZeroDivisionError"
    assert error["message"] and error["recoverable"] is True
    assert nodes["good"].event == "nodegraph.node.completed"

    graph_event = _graph_event(events)
    assert graph_event.event == "nodegraph.graph.failed"
    assert graph_event.resource.id == "nodegraph.graph.failing-branch"
    assert graph_event.payload["state"] == "failed"
    assert graph_event.payload["failed_nodes"] == ["bad_divide"]
    assert graph_event.payload["counts"] == {"completed": 3, "failed": 1, "upstream_failed": 1}
    assert graph_event.payload["outputs"]["bad"]["available"] is False


@pytest.mark.integration
def test_partial_runs_complete_and_halted_runs_fail(prefect_server, registry):
    partial = integration.run(EXAMPLES / "resilient.yaml", registry=registry, cache=False)
    assert partial.state == RunState.PARTIAL
    events = nodegraph_events(partial.flow_run_id, _complete(3))
    nodes = _by_node(events)
    # Nodes whose own function failed report failed, whatever policy absorbed it.
    assert nodes["ratio"].event == "nodegraph.node.failed"
    assert nodes["ratio"].payload["state"] == "fallback"
    assert nodes["parsed"].event == "nodegraph.node.failed"
    assert nodes["parsed"].resource["nodegraph.state"] == "skipped"
    assert "keys" not in nodes  # skipped behind parsed: it never ran
    graph_event = _graph_event(events)
    assert graph_event.event == "nodegraph.graph.completed"
    assert graph_event.resource["nodegraph.state"] == "partial"

    halted = integration.run(HALTING, registry=registry, cache=False)
    assert halted.state == RunState.HALTED
    events = nodegraph_events(halted.flow_run_id, _complete(1))
    assert set(_by_node(events)) == {"boom"}
    graph_event = _graph_event(events)
    assert graph_event.event == "nodegraph.graph.failed"
    assert graph_event.resource["nodegraph.state"] == "halted"
    assert graph_event.payload["halted_at"] == "boom"
    assert graph_event.payload["counts"] == {"failed": 1, "pending": 1}


@pytest.mark.integration
def test_node_events_can_be_switched_off(prefect_server, registry):
    config = NodegraphConfig(monitoring=MonitoringConfig(node_events=False, artifacts=False))
    result = integration.run(EXAMPLES / "hello.yaml", registry=registry, config=config)
    assert result.ok
    events = nodegraph_events(result.flow_run_id, _has_graph_event)
    time.sleep(1.0)  # node events would have been sent before the graph event
    events = nodegraph_events(result.flow_run_id, _has_graph_event)
    assert [e.event for e in events] == ["nodegraph.graph.completed"]


def test_switches_come_from_the_config_file_and_environment():
    config = load_config(
        None,
        environ={
            "NODEGRAPH_MONITORING__NODE_EVENTS": "false",
            "NODEGRAPH_MONITORING__ARTIFACTS": "0",
        },
    )
    assert config.monitoring.events is True
    assert config.monitoring.node_events is False and config.monitoring.artifacts is False


def test_the_reporter_is_off_or_passes_the_listener_through_as_configured(registry):
    plan = make_plan(bind(load_graph(EXAMPLES / "hello.yaml"), registry))
    off = MonitoringConfig(events=False, artifacts=False)
    assert RunReporter.for_run(off, plan, None) is None

    def inner(report, finished, total):
        return None

    artifacts_only = RunReporter.for_run(MonitoringConfig(events=False), plan, None)
    assert artifacts_only is not None and artifacts_only.listener(inner) is inner
    graph_only = RunReporter.for_run(MonitoringConfig(node_events=False), plan, None)
    assert graph_only is not None and graph_only.listener(None) is None
    assert RunReporter.for_run(None, plan, None).listener(None) is not None


# -- artifacts ------------------------------------------------------------------------


@pytest.mark.integration
def test_the_artifacts_exist_on_the_flow_run(prefect_server, registry):
    result = integration.run(GRAPHS / "failing_branch.yaml", registry=registry, cache=False)
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[result.flow_run_id])
            )
        )
    # Prefect adds an unkeyed artifact of its own: the record of the failed flow's result.
    by_key = {a.key: a for a in artifacts if a.key}
    assert set(by_key) == {"nodegraph-failing-branch-summary", "nodegraph-failing-branch-graph"}
    assert all(a.type == "markdown" for a in by_key.values())

    summary = by_key["nodegraph-failing-branch-summary"].data
    assert "| node | type | state | time | cache tier | error |" in summary
    lines = summary.splitlines()
    bad = next(line for line in lines if line.startswith("| bad\\_divide |"))
    assert "| core.divide | failed |" in bad and "runtime: " in bad
    after = next(line for line in lines if line.startswith("| after\\_bad |"))
    assert "| core.negate | upstream_failed |" in after
    assert "not run: upstream node 'bad\\_divide' failed" in after
    assert any(line.startswith("| good | core.add | completed |") for line in lines)

    diagram = by_key["nodegraph-failing-branch-graph"].data
    assert "```mermaid\nflowchart LR\n" in diagram
    mermaid = diagram.split("```mermaid\n")[1].split("```")[0]
    assert mermaid == to_mermaid(result_bound(registry), _states(result))
    assert "classDef failed " in mermaid and "classDef upstream_failed " in mermaid
    assert "classDef completed " in mermaid


def result_bound(registry):
    return bind(load_graph(GRAPHS / "failing_branch.yaml"), registry)


def _states(result: RunResult) -> dict[str, str]:
    return {n: str(r.state) for n, r in result.nodes.items()}


@pytest.mark.integration
def test_artifacts_can_be_switched_off(prefect_server, registry):
    config = NodegraphConfig(monitoring=MonitoringConfig(artifacts=False))
    result = integration.run(EXAMPLES / "hello.yaml", registry=registry, config=config)
    nodegraph_events(result.flow_run_id, _has_graph_event)  # sent after artifacts would have been
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[result.flow_run_id]))
        )
    assert [a for a in artifacts if a.type == "markdown"] == []


# -- task runs: names, tags, logs -------------------------------------------------------


def _task_runs(flow_run_id: str, expected: int) -> dict:
    with get_client(sync_client=True) as client:
        for _ in range(100):
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            if len(runs) >= expected and all(r.state and r.state.is_final() for r in runs):
                return {r.name: r for r in runs}
            time.sleep(0.2)
    raise AssertionError(f"task runs of {flow_run_id} did not all arrive")


@pytest.mark.integration
def test_task_runs_are_tagged_with_node_type_and_pack_unless_switched_off(prefect_server, registry):
    # Fusion off: the core nodes are declared cheap, and fused they share task runs.
    tagged = NodegraphConfig(execution=ExecutionConfig(fusion="off", tag_node_types=True))
    result = integration.run(EXAMPLES / "hello.yaml", registry=registry, config=tagged, cache=False)
    runs = _task_runs(result.flow_run_id, 4)
    assert sorted(runs["shout"].tags) == ["core.upper", "pack:core"]
    assert sorted(runs["greeting"].tags) == ["core.format", "pack:core"]

    config = NodegraphConfig(execution=ExecutionConfig(tag_node_types=False, fusion="off"))
    untagged = integration.run(EXAMPLES / "hello.yaml", registry=registry, config=config)
    assert all(r.tags == [] for r in _task_runs(untagged.flow_run_id, 4).values())


@pytest.mark.integration
@pytest.mark.parametrize(
    "strategy",
    [
        pytest.param({"strategy": "parallel"}, id="threads"),
        pytest.param({"strategy": "parallel", "processes": True, "max_workers": 2}, id="processes"),
        pytest.param({"strategy": "distributed"}, id="distributed"),
    ],
)
def test_node_logs_reach_the_task_run_and_node_events_come_from_every_strategy(
    prefect_server, registry, request, strategy
):
    config = None
    if strategy["strategy"] == "distributed":
        cluster = request.getfixturevalue("dask_cluster")
        config = NodegraphConfig(execution=ExecutionConfig(dask_address=cluster.address))
    result = integration.run(
        GRAPHS / "context.yaml", registry=registry, config=config, cache=False, **strategy
    )
    assert result.ok, result.errors
    task_run_id = result.nodes["probe"].task_run_id
    messages: list[str] = []
    with get_client(sync_client=True) as client:
        for _ in range(100):
            logs = client.read_logs(
                log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[task_run_id]))
            )
            messages = [log.message for log in logs]
            if any("whoami says hello from probe" in m for m in messages):
                break
            time.sleep(0.2)
    assert any("whoami says hello from probe" in m for m in messages), messages

    events = nodegraph_events(result.flow_run_id, _complete(1))
    probe = _by_node(events)["probe"]
    assert probe.event == "nodegraph.node.completed"
    assert _roles(probe)["task-run"] == f"prefect.task-run.{task_run_id}"
    assert probe.resource["nodegraph.node.pack"] == "testpack"


# -- rendering, without a server ------------------------------------------------------


def _report(node_id: str, state: NodeState, **kwargs) -> NodeReport:
    return NodeReport(node_id, "core.add", state, **kwargs)


def test_event_names_follow_the_documented_mapping():
    error = NodeError("n", "core.add", ErrorType.RUNTIME, "boom")
    assert node_event_name(_report("n", NodeState.COMPLETED)) == "nodegraph.node.completed"
    assert node_event_name(_report("n", NodeState.CACHED)) == "nodegraph.node.cached"
    assert node_event_name(_report("n", NodeState.FAILED, error=error)) == "nodegraph.node.failed"
    assert node_event_name(_report("n", NodeState.FALLBACK, error=error)) == (
        "nodegraph.node.failed"
    )
    assert node_event_name(_report("n", NodeState.SKIPPED, error=error)) == (
        "nodegraph.node.failed"
    )
    for never_ran in (NodeState.SKIPPED, NodeState.UPSTREAM_FAILED, NodeState.PENDING):
        assert node_event_name(_report("n", never_ran)) is None
    assert graph_event_name(RunState.COMPLETED) == "nodegraph.graph.completed"
    assert graph_event_name(RunState.PARTIAL) == "nodegraph.graph.completed"
    for state in (RunState.FAILED, RunState.HALTED, "crashed"):
        assert graph_event_name(state) == "nodegraph.graph.failed"


def test_payloads_hold_keys_and_names_not_values(registry):
    plan = make_plan(bind(load_graph(EXAMPLES / "hello.yaml"), registry))
    report = _report("shout", NodeState.COMPLETED, duration_s=0.5, cache_key="k1", attempts=1)
    payload = node_payload("hello", report, {"out": object()})
    assert payload["outputs"] == ["out"] and payload["cache_key"] == "k1"
    assert "error" not in payload
    long = NodeError("shout", "core.upper", ErrorType.RUNTIME, "x" * 5000, "ValueError")
    failed = node_payload("hello", _report("shout", NodeState.FAILED, error=long), {})
    assert len(failed["error"]["message"]) == 1000

    result = RunResult(
        "hello", RunState.COMPLETED, {"message": "SECRET VALUE"},
        {"shout": _report("shout", NodeState.COMPLETED, cache_key="k1")}, duration_s=1.0,
    )  # fmt: skip
    graph = graph_payload(plan, result)
    assert "SECRET" not in json.dumps(graph)
    assert graph["outputs"]["message"]["cache_key"] == "k1"
    assert graph["outputs"]["letters_doubled"]["available"] is False


def test_artifact_keys_are_what_prefect_accepts():
    assert artifact_key("hello", "summary") == "nodegraph-hello-summary"
    assert artifact_key("My Graph.v2__x", "graph") == "nodegraph-my-graph-v2-x-graph"
    assert artifact_key("__", "graph") == "nodegraph-graph-graph"


def test_the_summary_escapes_cells_and_leaves_out_routine_rows_first():
    error = NodeError("n|1", "core.add", ErrorType.RUNTIME, "bad | value\nsecond <line>")
    result = RunResult(
        "g", RunState.FAILED, {},
        {
            "n|1": _report("n|1", NodeState.FAILED, error=error, duration_s=0.0123),
            "ok": _report("ok", NodeState.CACHED, cache_tier="disk"),
        },
        duration_s=2.5, strategy="sequential",
    )  # fmt: skip
    text = summary_markdown(result)
    row = next(line for line in text.splitlines() if line.startswith("| n\\|1 |"))
    assert row.count(" | ") == 5  # six cells: every other pipe is escaped
    assert "bad \\| value<br>second &lt;line&gt;" in row and "12.3 ms" in row
    assert "| ok | core.add | cached |  | disk |  |" in text
    assert "in 2.50 s, strategy sequential" in text

    many = RunResult(
        "g", RunState.FAILED, {},
        {
            **{f"c{i}": _report(f"c{i}", NodeState.COMPLETED) for i in range(10)},
            "f": _report("f", NodeState.FAILED, error=error),
        },
    )  # fmt: skip
    short = summary_markdown(many, max_rows=3)
    assert "| f |" in short and "| c0 |" in short and "| c2 |" not in short
    assert "| c1 |" in short and "8 completed or cached nodes not shown." in short


def test_mermaid_colours_nodes_by_state_and_escapes_labels(registry):
    bound = bind(load_graph(EXAMPLES / "hello.yaml"), registry)
    text = to_mermaid(bound, {"greeting": "completed", "shout": "failed", "letters": "cached"})
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    ids = {line.split('["')[1].split("<br/>")[0]: line.split("[")[0].strip() for line in lines
           if '["' in line}  # fmt: skip
    assert f"    class {ids['shout']} failed" in lines
    assert f"    class {ids['greeting']} completed" in lines
    assert f"    class {ids['doubled']} not_run" in lines  # no state: outside the plan
    assert any(line.startswith("    classDef failed fill:") for line in lines)
    assert f'    {ids["greeting"]} -->|"out → text"| {ids["shout"]}' in lines
    assert '    i0(["input name"])' in lines

    plain = to_mermaid(bound)
    assert "classDef failed" not in plain and "classDef graph_io" in plain
    with pytest.raises(ValueError, match="direction"):
        to_mermaid(bound, direction="sideways")


def test_mermaid_labels_escape_what_mermaid_would_parse(registry):
    graph = load_graph(
        {
            "name": "odd",
            "nodes": [{"id": "a-b:c", "type": "core.add", "params": {"a": 1, "b": 2}}],
        }
    )
    bound = bind(graph, registry)
    text = to_mermaid(bound, {"a-b:c": 'weird "state"'})
    assert '    n0["a-b:c<br/>core.add<br/>weird #quot;state#quot;"]' in text
    assert "class n0 weird__state_" in text


def test_large_graphs_are_summarised_instead_of_drawn(registry):
    nodes = [{"id": f"n{i}", "type": "core.add", "params": {"a": i, "b": 1}} for i in range(301)]
    plan = make_plan(bind(load_graph({"name": "big", "nodes": nodes}), registry))
    text = diagram_markdown(plan, {}, "completed")
    assert "```mermaid" not in text and "301 nodes" in text


def test_reporting_failures_never_fail_the_run_and_a_crash_is_a_failed_event(
    registry, monkeypatch, caplog
):
    from integration.prefect import reporting

    plan = make_plan(bind(load_graph(EXAMPLES / "hello.yaml"), registry))
    sent: list[tuple[str, dict, dict]] = []

    def emit(name, resource, related, payload):
        sent.append((name, resource, payload))

    def no_server(*args, **kwargs):
        raise ConnectionError("the API is down")

    monkeypatch.setattr(reporting, "emit_event", emit)
    monkeypatch.setattr(reporting, "create_markdown_artifact", no_server)
    reporter = RunReporter(MonitoringConfig(), plan, None)
    result = RunResult("hello", RunState.COMPLETED, {}, {})
    with caplog.at_level("WARNING", logger="nodegraph.run"):
        reporter.finish(result)
        reporter.finish(result)
    assert [r.message for r in caplog.records].count(
        "nodegraph could not report to Prefect: the API is down"
    ) == 1  # once per run, however often it fails
    assert [name for name, _, _ in sent] == ["nodegraph.graph.completed"] * 2

    reporter.crashed(RuntimeError("engine bug"))
    name, resource, payload = sent[-1]
    assert name == "nodegraph.graph.failed" and resource["nodegraph.state"] == "crashed"
    assert payload["error"] == {"exception_type": "RuntimeError", "message": "engine bug"}


def test_routine_node_events_stop_at_the_limit_and_failures_still_go_out(registry, monkeypatch):
    from integration.prefect import reporting

    sent: list = []

    class Worker:
        def send(self, event):
            sent.append(event)

    monkeypatch.setattr(reporting, "should_emit_events", lambda: True)
    monkeypatch.setattr(reporting.EventsWorker, "instance", classmethod(lambda cls: Worker()))
    graph_events: list[dict] = []
    monkeypatch.setattr(
        reporting, "emit_event", lambda name, **kwargs: graph_events.append(kwargs["payload"])
    )
    plan = make_plan(bind(load_graph(EXAMPLES / "hello.yaml"), registry))
    reporter = RunReporter(MonitoringConfig(max_node_events=2), plan, None)
    error = NodeError("doubled", "core.multiply", ErrorType.RUNTIME, "boom")
    reports = [
        _report(
            "greeting", NodeState.COMPLETED, task_run_id="7f0d6f7c-05a5-4d0e-9e0c-6a1c2b1b4c11"
        ),
        _report("shout", NodeState.CACHED),
        _report("letters", NodeState.COMPLETED),
        _report("doubled", NodeState.FAILED, error=error),
    ]
    for report in reports:
        reporter.node_finished(report)
    assert [(e.event, e.resource.id) for e in sent] == [
        ("nodegraph.node.completed", "nodegraph.node.hello.greeting"),
        ("nodegraph.node.cached", "nodegraph.node.hello.shout"),
        ("nodegraph.node.failed", "nodegraph.node.hello.doubled"),
    ]
    roles = {r.role: r.id for r in sent[0].related}
    assert roles["task-run"] == "prefect.task-run.7f0d6f7c-05a5-4d0e-9e0c-6a1c2b1b4c11"
    assert sent[0].payload["node"] == "greeting" and sent[0].occurred.tzinfo is not None
    assert json.loads(sent[2].model_dump_json())["payload"]["error"]["message"] == "boom"
    reporter.finish(RunResult("hello", RunState.FAILED, {}, {r.node_id: r for r in reports}))
    assert graph_events[-1]["node_events_left_out"] == 1
    unlimited = RunReporter(MonitoringConfig(max_node_events=None), plan, None)
    for report in reports:
        unlimited.node_finished(report)
    assert len(sent) == 3 + 4
