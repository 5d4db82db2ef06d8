"""Deployments of graphs: the ``run_graph`` flow they point at, schedules and triggers.

    >>> from integration.prefect.deploy import graph_deployment
    >>> deployment = graph_deployment("flows/examples/hello.yaml", name="hello", cron="0 * * * *")

``run_graph`` is one module-level flow for every graph: its ``graph`` parameter is the
document itself, a path, or an fsspec URL (``s3://bucket/graph.yaml``). It runs the
graph as a subflow named after the graph (one task run per node), so a deployment run
shows the graph's own flow run under it.

``graph_deployment`` builds a ``RunnerDeployment`` of ``run_graph`` for one graph:

- the graph travels inline in the deployment's parameters, unless it is a URL, so a
  worker elsewhere needs only nodegraph and the node packs;
- the parameter schema's ``inputs`` is the graph's own typed inputs, so the Prefect UI
  shows a form and the server rejects bad parameters (``enforce_parameter_schema``);
- triggers (``EventTriggerSpec``) fire it on events, with parameters templated from the
  event (``{{ event.payload.path }}``); ``after`` chains it on another graph's
  ``nodegraph.graph.completed`` event.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import fsspec
from prefect import flow
from prefect import serve as prefect_serve
from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.states import Cancelled
from prefect.utilities.callables import parameter_schema
from pydantic import ValidationError

from integration.config import NodegraphConfig, load_config
from integration.errors import ConfigError, GraphLoadError, NodegraphError
from integration.graph.load import load_graph, parse_graph_text
from integration.graph.model import Graph
from integration.graph.validate import BoundGraph, resolve_inputs
from integration.prefect.flow import GraphRunFailed, flow_signature, prepare, run
from integration.prefect.reporting import GRAPH_COMPLETED
from integration.result import RunState

# Prefect event names: dotted words; ``*`` stands for any suffix.
_EVENT_NAME = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*(\.\*|\*)?$|^\*$")
_LABEL = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")


class DeploymentError(NodegraphError, ValueError):
    """A deployment, schedule or trigger that cannot be created as given."""


def is_url(source: object) -> bool:
    """Whether a graph source is an fsspec URL (``s3://…``), not a path or text."""
    return isinstance(source, str) and "://" in source.split("\n", 1)[0]


def read_graph(source: Graph | Mapping[str, Any] | str | Path) -> Graph:
    """A graph from a document, JSON/YAML text, a path, or an fsspec URL."""
    if is_url(source):
        try:
            with fsspec.open(source, "rt", encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, ValueError, ImportError) as exc:
            raise GraphLoadError(source, [(source, f"cannot read: {exc}")]) from None
        return parse_graph_text(text, source)
    return load_graph(source)


def graph_document(graph: Graph) -> dict[str, Any]:
    """A graph as the JSON document a ``graph`` parameter carries."""
    return graph.model_dump(mode="json", exclude_none=True)


def graph_parameter(source: Graph | Mapping[str, Any] | str | Path) -> dict[str, Any] | str:
    """What ``run_graph``'s ``graph`` parameter gets for ``source``: URLs by reference
    (workers read them), anything else as the document itself."""
    if is_url(source):
        return source  # type: ignore[return-value]
    return graph_document(read_graph(source))


def config_with(overrides: Mapping[str, Any] | None) -> NodegraphConfig:
    """The loaded configuration with ``overrides`` (nested like the YAML) applied."""
    base = load_config()
    if not overrides:
        return base
    merged = _deep_merge(base.model_dump(), overrides)
    try:
        return NodegraphConfig.model_validate(merged)
    except ValueError as exc:
        raise ConfigError(f"config overrides: {exc}") from None


def _deep_merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@flow(name="run-graph", persist_result=True, validate_parameters=True)
def run_graph(
    graph: dict[str, Any] | str,
    inputs: dict[str, Any] | None = None,
    outputs: list[str] | None = None,
    strategy: str | None = None,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run a nodegraph graph: a document, a path or an fsspec URL.

    ``inputs`` are the graph's inputs, ``outputs`` the outputs to compute (default:
    the graph's), ``strategy`` sequential, parallel or distributed, and ``config``
    overrides the configuration, nested as in the YAML file.
    """
    # Bad inputs raise before any node runs, with the graph's own message.
    result = run(read_graph(graph), inputs, outputs, strategy, config=config_with(config))
    if result.state == RunState.CANCELLED:
        return Cancelled(message=f"graph {result.graph!r} cancelled", data=result.outputs)  # type: ignore[return-value]
    if result.state in (RunState.FAILED, RunState.HALTED):
        raise GraphRunFailed(result)
    return result.outputs


@dataclass
class EventTriggerSpec:
    """Run a deployment when an event matches.

    ``match`` filters on the event's resource labels (``prefect.resource.id``, …),
    ``parameters`` are templated from the event, e.g. ``{"path": "{{ event.payload.path }}"}``
    (graph inputs by name).
    """

    event: str
    match: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _EVENT_NAME.match(self.event or ""):
            raise DeploymentError(
                f"trigger event {self.event!r} is not an event name: use dotted words "
                "such as 'files.landed' or 'nodegraph.graph.*'"
            )
        for key, value in self.match.items():
            if not _LABEL.match(key):
                raise DeploymentError(
                    f"trigger match {key!r}={value!r}: the key is a resource label such as "
                    "'prefect.resource.id'"
                )
            if not isinstance(value, str) or not value:
                raise DeploymentError(f"trigger match {key!r} needs a value")

    def to_prefect(self, inputs: Mapping[str, Any]) -> DeploymentEventTrigger:
        parameters: dict[str, Any] = {}
        templated = {**inputs, **self.parameters}
        if templated:
            parameters["inputs"] = templated
        return DeploymentEventTrigger(
            expect={self.event},
            match=dict(self.match),
            parameters=parameters or None,
        )


def after_graph(graph_name: str, parameters: Mapping[str, Any] | None = None) -> EventTriggerSpec:
    """A trigger on another graph's successful completion."""
    return EventTriggerSpec(
        GRAPH_COMPLETED,
        {"prefect.resource.id": f"nodegraph.graph.{graph_name}"},
        dict(parameters or {}),
    )


def parse_match(pairs: Sequence[str]) -> dict[str, str]:
    """``["k=v", …]`` from the command line, with a clear error for anything else."""
    match: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise DeploymentError(f"--match {pair!r}: expected LABEL=VALUE")
        match[key.strip()] = value.strip()
    return match


def inputs_schema(bound: BoundGraph) -> dict[str, Any]:
    """The JSON schema of a graph's inputs: the same types as ``to_flow``'s parameters."""

    def graph_inputs(**kwargs: Any) -> None:  # only its signature is read
        return None

    graph_inputs.__signature__ = flow_signature(bound)  # type: ignore[attr-defined]
    schema = parameter_schema(graph_inputs).model_dump(mode="json", exclude_none=True)
    return {
        "title": "inputs",
        "type": "object",
        "properties": schema.get("properties", {}),
        "required": schema.get("required", []),
        "additionalProperties": False,
        "position": 1,
        **({"definitions": schema["definitions"]} if schema.get("definitions") else {}),
    }


def graph_deployment(
    source: Graph | Mapping[str, Any] | str | Path,
    *,
    name: str,
    cron: str | None = None,
    interval: float | None = None,
    triggers: Sequence[EventTriggerSpec] = (),
    inputs: Mapping[str, Any] | None = None,
    strategy: str | None = None,
    config: Mapping[str, Any] | None = None,
    work_pool: str | None = None,
    tags: Sequence[str] = (),
    by_reference: bool | None = None,
    settings: NodegraphConfig | None = None,
) -> RunnerDeployment:
    """A deployment of ``run_graph`` for one graph; ``.apply()`` it or ``serve`` it.

    The graph is embedded in the parameters unless ``by_reference`` (default: for
    URLs), in which case workers read it from ``source`` at each run. ``inputs`` are
    default graph inputs, checked against the graph now. The graph is validated with
    ``settings`` (default: the loaded configuration with ``config`` applied).
    """
    if not name or "/" in name:
        raise DeploymentError(f"deployment name {name!r}: give a name without '/'")
    if cron is not None:
        try:
            CronSchedule(cron=cron)
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
            raise DeploymentError(f"--cron {cron!r}: {reason.strip()}") from None
    if interval is not None and interval <= 0:
        raise DeploymentError(f"--interval {interval}: give a positive number of seconds")
    graph = read_graph(source)
    # Deploying validates the graph against this machine's packs and configuration.
    bound = prepare(graph, None, None, settings or config_with(config)).graph
    reference = isinstance(source, str | Path) and (
        by_reference if by_reference is not None else is_url(source)
    )
    defaults = dict(inputs or {})
    if defaults:
        resolve_inputs(bound, defaults)
    parameters: dict[str, Any] = {"graph": str(source) if reference else graph_document(graph)}
    if defaults:
        parameters["inputs"] = defaults
    if strategy:
        parameters["strategy"] = strategy
    if config:
        parameters["config"] = dict(config)
    deployment = run_graph.to_deployment(
        name=name,
        cron=cron,
        interval=timedelta(seconds=interval) if interval else None,
        parameters=parameters,
        triggers=[spec.to_prefect(defaults) for spec in triggers],
        description=graph.description or f"Run the graph {graph.name!r}.",
        tags=["nodegraph", f"graph:{graph.name}", *tags],
        enforce_parameter_schema=True,
        work_pool_name=work_pool,
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    schema = copy.deepcopy(deployment._parameter_openapi_schema)
    schema.properties["inputs"] = inputs_schema(bound)
    deployment._parameter_openapi_schema = schema
    return deployment


def serve(*deployments: RunnerDeployment) -> None:
    """Serve deployments in the foreground until interrupted: their schedules and
    triggers start runs in this process."""
    prefect_serve(*deployments, print_starting_message=True)
