"""What a graph run tells Prefect: events per node and per run, and UI artifacts.

    >>> from integration.prefect.reporting import artifact_key, node_event_name
    >>> from integration.result import NodeReport, NodeState
    >>> artifact_key("My Graph_v2", "summary")
    'nodegraph-my-graph-v2-summary'
    >>> node_event_name(NodeReport("a", "core.add", NodeState.CACHED))
    'nodegraph.node.cached'

Events (``emit_event``, from the flow's own process, whatever the strategy):

- ``nodegraph.node.completed``, ``nodegraph.node.cached`` and ``nodegraph.node.failed``
  on resource ``nodegraph.node.<graph>.<node>``, once for each node that ran or was
  loaded from the cache. ``failed`` covers every node whose own function failed for
  good, including those a ``fallback`` or ``skip`` policy absorbed (``payload.state``
  and the ``nodegraph.state`` label say which). Nodes that never ran (upstream failed,
  skipped after an upstream skip, pending behind a halt) emit nothing; the graph
  event counts them. ``completed`` and ``cached`` events stop after
  ``monitoring.max_node_events`` a run (1,000 by default: Prefect's server takes
  milliseconds to store each event, which a 10,000-node fused run would wait on);
  ``failed`` ones always go out, and the graph event's ``node_events_left_out`` says
  how many were left out.
- ``nodegraph.graph.completed`` on resource ``nodegraph.graph.<graph>`` when the run's
  outputs are available: run state ``completed`` or ``partial``, as the flow run ends
  Completed. ``nodegraph.graph.failed`` otherwise: ``failed``, ``halted``, or
  ``crashed`` when the engine itself raised. The run state is also the resource label
  ``nodegraph.state``, so an automation can match ``completed`` alone.

Payloads carry names, keys, timings and counts, never output values. Artifacts are a
markdown summary table and a mermaid diagram, keyed ``nodegraph-<graph>-summary`` and
``nodegraph-<graph>-graph``; they are created before the graph event is sent, so an
automation reacting to it finds them on the flow run.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from prefect.artifacts import create_markdown_artifact
from prefect.context import FlowRunContext
from prefect.events import emit_event
from prefect.events.schemas.events import Event, RelatedResource, Resource
from prefect.events.worker import EventsWorker, should_emit_events

from integration.config import MonitoringConfig
from integration.engine.hooks import NodeListener
from integration.graph.render import to_mermaid
from integration.plan import Plan
from integration.result import NodeReport, NodeState, RunResult, RunState

logger = logging.getLogger("nodegraph.run")

MESSAGE_LIMIT = 1000
"""Characters of an error message an event carries: messages may quote input values."""
TABLE_ROWS = 500
"""Rows of the summary table; beyond it, completed and cached nodes are left out first."""
DIAGRAM_NODES = 300
"""Largest graph drawn as a diagram: mermaid refuses texts over 50,000 characters and
graphs over 500 edges by default."""
DIAGRAM_EDGES = 500

_NODE_EVENTS = {
    NodeState.COMPLETED: "nodegraph.node.completed",
    NodeState.CACHED: "nodegraph.node.cached",
    NodeState.FAILED: "nodegraph.node.failed",
    NodeState.FALLBACK: "nodegraph.node.failed",
    NodeState.SKIPPED: "nodegraph.node.failed",  # only with an error: it failed itself
}
_SUCCEEDED = {RunState.COMPLETED, RunState.PARTIAL}
_ROUTINE = (NodeState.COMPLETED, NodeState.CACHED)
GRAPH_COMPLETED = "nodegraph.graph.completed"
GRAPH_FAILED = "nodegraph.graph.failed"


def node_event_name(report: NodeReport) -> str | None:
    """The event a node report emits, or ``None`` for a node that never ran."""
    if report.state == NodeState.SKIPPED and report.error is None:
        return None
    return _NODE_EVENTS.get(report.state)


def graph_event_name(run_state: str) -> str:
    """``nodegraph.graph.completed`` when the outputs are available, else ``.failed``."""
    return GRAPH_COMPLETED if run_state in _SUCCEEDED else GRAPH_FAILED


def artifact_key(graph: str, kind: str) -> str:
    """A Prefect artifact key (lowercase letters, digits and dashes) for a graph."""
    slug = re.sub(r"[^a-z0-9]+", "-", graph.lower()).strip("-") or "graph"
    return f"nodegraph-{slug}-{kind}"


class RunReporter:
    """Sends one graph run's events and artifacts, as the configuration asks.

    ``listener`` wraps the engine's node listener so that node events go out as node
    reports arrive, ``completed`` and ``cached`` ones up to ``max_node_events`` a run
    (failures always); ``finish`` publishes the artifacts, then the graph event.
    Reporting never fails a run: an error is logged once and the run goes on.
    """

    def __init__(
        self, monitoring: MonitoringConfig, plan: Plan, context: FlowRunContext | None
    ) -> None:
        self.monitoring = monitoring
        self.plan = plan
        self.graph = plan.name
        self._failed_once = False
        self._routine_left = monitoring.max_node_events
        self.node_events_left_out = 0
        self._related: list[dict[str, str]] = []
        flow_run = context.flow_run if context else None
        if flow_run is not None:
            self._related.append(
                {
                    "prefect.resource.id": f"prefect.flow-run.{flow_run.id}",
                    "prefect.resource.role": "flow-run",
                    "prefect.resource.name": flow_run.name,
                }
            )
            self._related.append(
                {
                    "prefect.resource.id": f"prefect.flow.{flow_run.flow_id}",
                    "prefect.resource.role": "flow",
                    "prefect.resource.name": self.graph,
                }
            )
            if flow_run.deployment_id is not None:
                self._related.append(
                    {
                        "prefect.resource.id": f"prefect.deployment.{flow_run.deployment_id}",
                        "prefect.resource.role": "deployment",
                    }
                )
        self._graph_related = {
            "prefect.resource.id": f"nodegraph.graph.{self.graph}",
            "prefect.resource.role": "graph",
            "prefect.resource.name": self.graph,
        }
        # Validated once: every node event of the run names the same related resources.
        self._node_related = [
            RelatedResource.model_validate(r) for r in [*self._related, self._graph_related]
        ]
        self._new_event_id = Event.model_fields["id"].default_factory

    @classmethod
    def for_run(
        cls, monitoring: MonitoringConfig | None, plan: Plan, context: FlowRunContext | None
    ) -> RunReporter | None:
        """A reporter, or ``None`` when the configuration switches everything off."""
        monitoring = monitoring or MonitoringConfig()
        if not (monitoring.events or monitoring.artifacts):
            return None
        return cls(monitoring, plan, context)

    @property
    def node_events(self) -> bool:
        return self.monitoring.events and self.monitoring.node_events

    def listener(self, inner: NodeListener | None) -> NodeListener | None:
        """``inner`` with node events sent before it is called (``inner`` if they are off)."""
        if not self.node_events:
            return inner

        def report_node(report: NodeReport, finished: int, total: int) -> None:
            self.node_finished(report)
            if inner is not None:
                inner(report, finished, total)

        return report_node

    def node_finished(self, report: NodeReport) -> None:
        """Emit the node's event, if the node ran or came from the cache."""
        name = node_event_name(report)
        if name is None:
            return
        if report.state in _ROUTINE and self._routine_left is not None:
            if self._routine_left == 0:
                if not self.node_events_left_out:
                    logger.info(
                        "graph %r: no more node events for completed or cached nodes this "
                        "run (monitoring.max_node_events: %d); failures still go out",
                        self.graph,
                        self.monitoring.max_node_events,
                    )
                self.node_events_left_out += 1
                return
            self._routine_left -= 1
        node_type = self.plan.steps[report.node_id].node.type
        resource = {
            "prefect.resource.id": f"nodegraph.node.{self.graph}.{report.node_id}",
            "prefect.resource.name": report.node_id,
            "nodegraph.graph": self.graph,
            "nodegraph.node": report.node_id,
            "nodegraph.node.type": node_type.qualified_name,
            "nodegraph.node.pack": node_type.pack or "",
            "nodegraph.state": str(report.state),
        }
        related = list(self._node_related)  # a list of its own: the worker extends it
        if report.task_run_id:
            task_run = {
                "prefect.resource.id": f"prefect.task-run.{report.task_run_id}",
                "prefect.resource.role": "task-run",
                "prefect.resource.name": report.node_id,
            }
            related.append(RelatedResource.model_construct(root=task_run))
        payload = node_payload(self.graph, report, node_type.outputs)
        self._guard(self._send_node_event, name, resource, related, payload)

    def _send_node_event(
        self,
        name: str,
        resource: dict[str, str],
        related: list[RelatedResource],
        payload: dict[str, Any],
    ) -> None:
        """What ``emit_event`` does, without validating each event again: its
        validators read Prefect settings per resource, about 50 µs an event, which is
        most of a fused node's cost. The labels here have a fixed shape and the payload
        is bounded (``MESSAGE_LIMIT``), so the checks cannot fail."""
        if not should_emit_events():
            return
        event = Event.model_construct(
            occurred=datetime.now(UTC),
            event=name,
            resource=Resource.model_construct(root=resource),
            related=related,
            payload=payload,
            id=self._new_event_id(),
            follows=None,
        )
        EventsWorker.instance().send(event)

    def finish(self, result: RunResult) -> None:
        """Publish the run's artifacts, then its graph event."""
        if self.monitoring.artifacts:
            self._guard(self._publish_artifacts, result)
        if self.monitoring.events:
            self._emit(
                graph_event_name(result.state),
                self._graph_resource(str(result.state)),
                self._related,
                {
                    **graph_payload(self.plan, result),
                    "node_events_left_out": self.node_events_left_out,
                },
            )

    def crashed(self, exc: BaseException) -> None:
        """The engine raised before a result existed: a ``crashed`` graph event."""
        if not self.monitoring.events:
            return
        payload = {
            "graph": self.graph,
            "state": "crashed",
            "nodes": len(self.plan.order),
            "error": {"exception_type": type(exc).__name__, "message": _short(str(exc))},
        }
        self._emit(GRAPH_FAILED, self._graph_resource("crashed"), self._related, payload)

    def _graph_resource(self, state: str) -> dict[str, str]:
        return {
            "prefect.resource.id": f"nodegraph.graph.{self.graph}",
            "prefect.resource.name": self.graph,
            "nodegraph.graph": self.graph,
            "nodegraph.state": state,
        }

    def _publish_artifacts(self, result: RunResult) -> None:
        create_markdown_artifact(
            summary_markdown(result),
            key=artifact_key(self.graph, "summary"),
            description=f"nodegraph: nodes of graph {self.graph!r}, run {result.state}",
        )
        states = {node_id: str(report.state) for node_id, report in result.nodes.items()}
        create_markdown_artifact(
            diagram_markdown(self.plan, states, str(result.state)),
            key=artifact_key(self.graph, "graph"),
            description=f"nodegraph: graph {self.graph!r}, nodes coloured by state",
        )

    def _emit(
        self,
        name: str,
        resource: dict[str, str],
        related: list[dict[str, str]],
        payload: dict[str, Any],
    ) -> None:
        self._guard(emit_event, name, resource=resource, related=related, payload=payload)

    def _guard(self, action: Any, *args: Any, **kwargs: Any) -> None:
        try:
            action(*args, **kwargs)
        except Exception as exc:  # the API or the event size: the run itself is fine
            if not self._failed_once:
                self._failed_once = True
                logger.warning("nodegraph could not report to Prefect: %s", exc)


def node_payload(graph: str, report: NodeReport, outputs: Mapping[str, Any]) -> dict[str, Any]:
    """A node event's payload: timings, cache facts and output names, never values."""
    payload: dict[str, Any] = {
        "graph": graph,
        "node": report.node_id,
        "type": report.node_type,
        "state": str(report.state),
        "duration_s": report.duration_s,
        "attempts": report.attempts,
        "cache_tier": report.cache_tier,
        "cache_key": report.cache_key,
        "outputs": list(outputs),
        "task_run_id": report.task_run_id,
    }
    if report.error is not None:
        payload["error"] = {
            "error_type": str(report.error.error_type),
            "exception_type": report.error.exception_type,
            "message": _short(report.error.message),
            "recoverable": report.error.recoverable,
        }
    if report.reason:
        payload["reason"] = _short(report.reason)
    return payload


def graph_payload(plan: Plan, result: RunResult) -> dict[str, Any]:
    """A graph event's payload: the run state, node counts, timings and output keys."""
    outputs = {}
    for request in plan.outputs:
        report = result.nodes.get(request.node)
        outputs[request.name] = {
            "node": request.node,
            "port": request.port,
            "available": request.name in result.outputs,
            "cache_key": report.cache_key if report is not None else None,
        }
    failed = [n for n, r in result.nodes.items() if r.state == NodeState.FAILED]
    return {
        "graph": result.graph,
        "state": str(result.state),
        "duration_s": result.duration_s,
        "strategy": result.strategy,
        "nodes": len(result.nodes),
        "counts": result.counts(),
        "failed_nodes": failed[:20],
        "halted_at": result.halted_at,
        "resume": result.resume_hint,
        "outputs": outputs,
    }


def summary_markdown(result: RunResult, max_rows: int = TABLE_ROWS) -> str:
    """The run as a markdown table: node, type, state, time, cache tier, error."""
    counts = ", ".join(f"{n} {state.replace('_', ' ')}" for state, n in result.counts().items())
    head = [
        f"### Graph `{_cell(result.graph)}`: {result.state}",
        "",
        f"{len(result.nodes)} nodes ({counts or 'none'})"
        + (f" in {_seconds(result.duration_s)}" if result.duration_s is not None else "")
        + (f", strategy {result.strategy}" if result.strategy else "")
        + (f", halted at `{_cell(result.halted_at)}`" if result.halted_at else ""),
    ]
    if result.resume_hint:
        head.append(f"\nResume with `{result.resume_hint}`.")
    reports = list(result.nodes.values())
    shown = reports
    if len(reports) > max_rows:
        notable = [r for r in reports if r.state not in (NodeState.COMPLETED, NodeState.CACHED)]
        routine = [r for r in reports if r.state in (NodeState.COMPLETED, NodeState.CACHED)]
        keep = {r.node_id for r in [*notable, *routine][:max_rows]}
        shown = [r for r in reports if r.node_id in keep]
    rows = [
        "| node | type | state | time | cache tier | error |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for report in shown:
        if report.error is not None and report.state in (NodeState.FAILED, NodeState.FALLBACK):
            problem = f"{report.error.error_type}: {report.error.message}"
        else:
            problem = report.reason or ""
        rows.append(
            "| "
            + " | ".join(
                [
                    _cell(report.node_id),
                    _cell(report.node_type),
                    str(report.state),
                    _seconds(report.duration_s),
                    _cell(report.cache_tier or ""),
                    _cell(_short(problem, 300)),
                ]
            )
            + " |"
        )
    if len(shown) < len(reports):
        rows.append(f"\n{len(reports) - len(shown)} completed or cached nodes not shown.")
    return "\n".join(head) + "\n\n" + "\n".join(rows) + "\n"


def diagram_markdown(plan: Plan, states: Mapping[str, str], run_state: str) -> str:
    """The graph as a fenced mermaid diagram, nodes coloured by their final state."""
    bound = plan.graph
    title = f"### Graph `{_cell(bound.name)}`: {run_state}\n\n"
    edges = sum(
        1
        for node in bound.nodes.values()
        for b in node.bindings.values()
        if b.kind in ("edge", "input")
    )
    if len(bound.nodes) > DIAGRAM_NODES or edges > DIAGRAM_EDGES:
        return (
            title + f"The graph has {len(bound.nodes)} nodes and {edges} wires, more than "
            f"mermaid draws ({DIAGRAM_NODES} nodes, {DIAGRAM_EDGES} wires); see the "
            "summary artifact.\n"
        )
    return title + "```mermaid\n" + to_mermaid(bound, states) + "```\n"


def _cell(text: str) -> str:
    """Text that stays inside one markdown table cell and renders as written."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = re.sub(r"([\\`*_\[\]|#])", r"\\\1", text)
    return re.sub(r"\r\n|\r|\n", "<br>", text)


def _short(text: str, limit: int = MESSAGE_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    if value < 1:
        return f"{value * 1000:.1f} ms"
    return f"{value:.2f} s"
