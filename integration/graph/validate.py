"""Bind a graph to the registry and find every problem in one pass.

    >>> from integration.graph import load_graph, NodeRegistry, bind
    >>> graph = load_graph({"name": "g", "nodes": [{"id": "a", "type": "core.ad"}]})
    >>> try:
    ...     bind(graph, NodeRegistry.default())
    ... except GraphValidationError as err:
    ...     print(err.problems[0].message)
    unknown node type 'core.ad'; did you mean core.add, core.and?

The result is a ``BoundGraph``: node types resolved, each input port bound to a
literal, an edge, a graph input or its default, and a topological order. Nothing runs
before the whole graph is valid.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from integration.errors import NodegraphError, bounded_repr
from integration.graph.gcpause import gc_paused
from integration.graph.limits import format_loc, value_problem
from integration.graph.model import GRAPH_INPUTS, Edge, Graph, GraphInput
from integration.graph.nodetype import NodeType
from integration.graph.order import CycleError, topological_order
from integration.graph.policy import ErrorPolicy, FallbackPolicy
from integration.graph.ports import MISSING, InputPort
from integration.graph.registry import NodeRegistry
from integration.graph.transforms import TransformSpec, check_spec, get_transform
from integration.graph.types import is_compatible
from integration.resources.requirements import ResourceRequirement

GRAPH = "<graph>"
"""The ``node_id`` of problems that belong to the graph rather than one node."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a graph, reported against a node (or ``<graph>``)."""

    node_id: str
    code: str
    message: str
    details: str = ""

    def to_dict(self) -> dict[str, str]:
        return {
            "node_id": self.node_id,
            "code": self.code,
            "message": self.message,
            "details": self.details,
        }


class GraphValidationError(NodegraphError):
    """Every problem found in a graph, grouped per node."""

    def __init__(
        self,
        graph_name: str,
        problems: list[Problem],
        types: Mapping[str, str],
        dependent_outputs: Mapping[str, list[str]] | None = None,
    ):
        self.graph_name = graph_name
        self.problems = problems
        self._types = dict(types)
        self._dependent_outputs = dict(dependent_outputs or {})
        lines = [
            f"{p.node_id}: {p.message}" + (f" ({p.details})" if p.details else "") for p in problems
        ]
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        super().__init__(f"graph {graph_name!r} is invalid ({count}):\n  " + "\n  ".join(lines))

    def by_node(self) -> dict[str, list[Problem]]:
        grouped: dict[str, list[Problem]] = defaultdict(list)
        for problem in self.problems:
            grouped[problem.node_id].append(problem)
        return dict(grouped)

    @property
    def node_errors(self) -> dict[str, dict[str, Any]]:
        """The problems in ComfyUI's ``node_errors`` shape."""
        return {
            node_id: {
                "errors": [
                    {
                        "type": p.code,
                        "message": p.message,
                        "details": p.details,
                        "extra_info": {},
                    }
                    for p in problems
                ],
                "dependent_outputs": self._dependent_outputs.get(node_id, []),
                "class_type": self._types.get(node_id, ""),
            }
            for node_id, problems in self.by_node().items()
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "graph": self.graph_name,
            "valid": False,
            "problems": [p.to_dict() for p in self.problems],
            "node_errors": self.node_errors,
        }


@dataclass(frozen=True)
class Binding:
    """Where one input port gets its value from.

    ``kind`` is ``edge`` (``source``/``source_port`` name the producer), ``input`` (a
    graph input named by ``source_port``), ``param`` (``value`` is the literal) or
    ``default`` (the port's own default; the port is left out of the call).
    """

    kind: Literal["edge", "input", "param", "default"]
    value: Any = None
    source: str = ""
    source_port: str = ""
    transform: TransformSpec | None = None


@dataclass
class BoundNode:
    """A node with its type resolved and every input port bound."""

    id: str
    type: NodeType
    bindings: dict[str, Binding]
    tags: list[str] = field(default_factory=list)
    policy: ErrorPolicy | None = None
    """The node's own policy over its type's default; the config's default comes last."""
    fallback_type: NodeType | None = None
    """The node type a ``fallback`` policy runs in this node's place, resolved."""
    resources: ResourceRequirement | None = None
    """What one running instance holds: the node's own amounts over its type's."""
    pin_in_memory: bool = False
    """Its outputs never spill to disk under memory pressure."""

    @property
    def upstream(self) -> list[str]:
        return sorted({b.source for b in self.bindings.values() if b.kind == "edge"})


@dataclass
class BoundGraph:
    """A valid graph: resolved nodes, a deterministic topological order, and its inputs."""

    graph: Graph
    nodes: dict[str, BoundNode]
    order: list[str]
    inputs: dict[str, GraphInput]

    @property
    def name(self) -> str:
        return self.graph.name

    def predecessors(self) -> dict[str, list[str]]:
        return {node_id: self.nodes[node_id].upstream for node_id in self.order}


def input_port(name: str, spec: GraphInput) -> InputPort:
    """The graph input as an ``InputPort``, so one checker serves ports and inputs."""
    return InputPort(
        name=name,
        type=spec.type,
        default=MISSING if spec.required else spec.default,
        nullable=not spec.required and spec.default is None,
        min=spec.min,
        max=spec.max,
        choices=tuple(spec.choices) if spec.choices is not None else None,
    )


class GraphInputError(NodegraphError, ValueError):
    """Values given for graph inputs are missing, unknown or break their input's spec."""


def resolve_inputs(bound: BoundGraph, given: Mapping[str, Any]) -> dict[str, Any]:
    """Check given input values against the graph's inputs and fill in defaults."""
    problems = []
    unknown = sorted(set(given) - set(bound.inputs))
    if unknown:
        known = ", ".join(sorted(bound.inputs)) or "none"
        shown = ", ".join(unknown)
        shown = shown if len(shown) <= 200 else shown[:197] + "..."
        problems.append(f"unknown input(s) {shown}; the graph's inputs: {known}")
    values: dict[str, Any] = {}
    for name, spec in bound.inputs.items():
        if name in given:
            problem = _not_json_like(given[name]) or input_port(name, spec).check_literal(
                given[name]
            )
            if problem:
                problems.append(f"input {bounded_repr(name)} {problem}")
            values[name] = given[name]
        elif spec.required:
            problems.append(f"input {name!r} ({spec.type}) is required and has no default")
        else:
            values[name] = spec.default
    if problems:
        raise GraphInputError(f"graph {bound.name!r}: " + "; ".join(problems))
    return values


def _bind_fallback(
    bound: BoundNode,
    fallback: FallbackPolicy,
    registry: NodeRegistry,
    report: Callable[[Problem], None],
) -> None:
    """Check that a fallback can stand in for ``bound``: same outputs, inputs it can take."""
    outputs = bound.type.outputs
    if fallback.outputs is not None:
        missing = [name for name in outputs if name not in fallback.outputs]
        unknown = [name for name in fallback.outputs if name not in outputs]
        if missing or unknown:
            report(
                Problem(
                    bound.id,
                    "bad_fallback",
                    f"fallback outputs must give exactly the outputs of "
                    f"{bound.type.qualified_name} ({_names(outputs)}); "
                    + "; ".join(
                        filter(
                            None,
                            [
                                f"missing {', '.join(missing)}" if missing else "",
                                f"unknown {', '.join(unknown)}" if unknown else "",
                            ],
                        )
                    ),
                )
            )
            return
        for problem in bound.type.check_outputs(fallback.outputs):
            report(Problem(bound.id, "bad_fallback", f"fallback {problem}"))
        return
    assert fallback.type is not None
    fallback_type = registry.find(fallback.type)
    if fallback_type is None:
        hint = registry.suggest(fallback.type)
        suffix = f"; did you mean {', '.join(hint)}?" if hint else ""
        report(
            Problem(
                bound.id,
                "bad_fallback",
                f"unknown fallback node type {bounded_repr(fallback.type)}{suffix}",
            )
        )
        return
    name = fallback_type.qualified_name
    lacking = [port for port in outputs if port not in fallback_type.outputs]
    if lacking:
        report(
            Problem(
                bound.id,
                "bad_fallback",
                f"fallback type {name} lacks output(s) {', '.join(lacking)} of "
                f"{bound.type.qualified_name}; it has {_names(fallback_type.outputs)}",
            )
        )
    for port in fallback.params:
        if port not in fallback_type.inputs:
            report(
                Problem(
                    bound.id,
                    "bad_fallback",
                    f"fallback param {bounded_repr(port)} is not an input of {name}; "
                    f"it has {_names(fallback_type.inputs)}",
                )
            )
    for port in fallback_type.inputs.values():
        given = port.name in bound.bindings or port.name in fallback.params
        if port.required and not given:
            report(
                Problem(
                    bound.id,
                    "bad_fallback",
                    f"fallback type {name} needs input {port.name!r}, which node "
                    f"{bound.id!r} does not receive; give it in the fallback's params",
                )
            )
    bound.fallback_type = fallback_type


def bind(graph: Graph, registry: NodeRegistry) -> BoundGraph:
    """Resolve and check ``graph``; raise ``GraphValidationError`` with every problem."""
    with gc_paused():
        return _bind(graph, registry)


def _bind(graph: Graph, registry: NodeRegistry) -> BoundGraph:
    problems: list[Problem] = []
    report = problems.append
    types_by_id: dict[str, str] = {}
    nodes: dict[str, BoundNode] = {}

    for name, spec in graph.inputs.items():
        if not spec.required:
            problem = input_port(name, spec).check_literal(spec.default)
            if problem:
                report(Problem(GRAPH, "bad_input_default", f"input {name!r} default {problem}"))

    for spec in graph.nodes:
        types_by_id.setdefault(spec.id, spec.type)
        if spec.id == GRAPH_INPUTS:
            report(
                Problem(
                    spec.id,
                    "reserved_id",
                    f"node id {GRAPH_INPUTS!r} is reserved "
                    "for graph inputs (edges read them as 'inputs.NAME')",
                )
            )
            continue
        if spec.id in nodes:
            report(Problem(spec.id, "duplicate_id", f"node id {spec.id!r} is used twice"))
            continue
        node_type = registry.find(spec.type)
        if node_type is None:
            hint = registry.suggest(spec.type)
            suffix = f"; did you mean {', '.join(hint)}?" if hint else ""
            shown = bounded_repr(spec.type)
            report(Problem(spec.id, "unknown_type", f"unknown node type {shown}{suffix}"))
            continue
        bindings: dict[str, Binding] = {}
        for port_name, value in spec.params.items():
            port = node_type.inputs.get(port_name)
            if port is None:
                report(_unknown_port(spec.id, node_type, port_name, "params"))
                continue
            problem = _literal_problem(port, value)
            if problem:
                report(Problem(spec.id, "bad_value", f"param {bounded_repr(port_name)} {problem}"))
            bindings[port_name] = Binding("param", value=value)
        policy = spec.on_error.merged_over(node_type.on_error) if spec.on_error else None
        resources = spec.resources.merged_over(node_type.resources) if spec.resources else None
        nodes[spec.id] = BoundNode(
            spec.id,
            node_type,
            bindings,
            list(spec.overrides.tags),
            policy or node_type.on_error,
            resources=resources or node_type.resources,
            pin_in_memory=spec.overrides.pin_in_memory,
        )

    node_ids = {spec.id for spec in graph.nodes}
    for edge in graph.edges:
        _bind_edge(edge, graph, nodes, node_ids, registry, report)

    for bound in nodes.values():
        for port in bound.type.inputs.values():
            if port.name in bound.bindings:
                continue
            if port.required:
                report(
                    Problem(
                        bound.id,
                        "missing_input",
                        f"required input {port.name!r} ({port.type}) has no edge or param",
                    )
                )
            else:
                bound.bindings[port.name] = Binding("default", value=port.default)

    for bound in nodes.values():
        if bound.policy is not None and bound.policy.fallback is not None:
            _bind_fallback(bound, bound.policy.fallback, registry, report)

    for out_name, output in graph.outputs.items():
        producer = nodes.get(output.node)
        if output.node not in node_ids:
            report(
                Problem(
                    GRAPH,
                    "dangling_output",
                    f"output {out_name!r} points at {output.from_!r}, but there is no "
                    f"node {output.node!r}",
                )
            )
        elif producer is not None and output.port not in producer.type.outputs:
            report(
                Problem(
                    GRAPH,
                    "dangling_output",
                    f"output {out_name!r} points at {output.from_!r}, but "
                    f"{producer.type.qualified_name} has no output {output.port!r}; "
                    f"it has {_names(producer.type.outputs)}",
                )
            )

    order: list[str] = []
    try:
        order = topological_order({b.id: b.upstream for b in nodes.values()})
    except CycleError as cycle:
        report(
            Problem(
                cycle.path[0],
                "cycle",
                f"cycle: {' -> '.join(cycle.path)}",
                details=" -> ".join(cycle.path),
            )
        )

    if problems:
        raise GraphValidationError(graph.name, problems, types_by_id)
    return BoundGraph(graph=graph, nodes=nodes, order=order, inputs=dict(graph.inputs))


def _bind_edge(
    edge: Edge,
    graph: Graph,
    nodes: dict[str, BoundNode],
    node_ids: set[str],
    registry: NodeRegistry,
    report: Any,
) -> None:
    target = nodes.get(edge.target)
    where = f"edge {edge.from_} -> {edge.to}"
    if edge.target not in node_ids:
        report(Problem(GRAPH, "dangling_edge", f"{where}: there is no node {edge.target!r}"))
        return
    if target is None:
        return  # the target node already has its own problem (unknown type, ...)
    target_port = target.type.inputs.get(edge.target_port)
    if target_port is None:
        report(_unknown_port(target.id, target.type, edge.target_port, where))
        return

    source_type: str | None = None
    if edge.from_graph_input:
        spec = graph.inputs.get(edge.source_port)
        if spec is None:
            known = ", ".join(sorted(graph.inputs)) or "none"
            report(
                Problem(
                    target.id,
                    "unknown_input",
                    f"{where}: the graph has no input {edge.source_port!r} (inputs: {known})",
                )
            )
            return
        source_type = spec.type
        binding = Binding("input", source_port=edge.source_port, transform=edge.transform_spec)
    else:
        if edge.source not in node_ids:
            report(
                Problem(target.id, "dangling_edge", f"{where}: there is no node {edge.source!r}")
            )
            return
        source = nodes.get(edge.source)
        if source is not None:
            out = source.type.outputs.get(edge.source_port)
            if out is None:
                report(
                    Problem(
                        target.id,
                        "unknown_port",
                        f"{where}: {source.type.qualified_name} has no output "
                        f"{edge.source_port!r}; it has {_names(source.type.outputs)}",
                    )
                )
                return
            source_type = out.type
        binding = Binding(
            "edge", source=edge.source, source_port=edge.source_port, transform=edge.transform_spec
        )

    if edge.transform_spec is not None:
        problem = check_spec(edge.transform_spec)
        if problem:
            report(Problem(target.id, "bad_transform", f"{where}: {problem}"))
            return
        transform = get_transform(edge.transform_spec.name)
        if transform is not None:
            source_type = transform.output_type

    if source_type is not None and not is_compatible(source_type, target_port.type):
        report(
            Problem(
                target.id,
                "type_mismatch",
                f"{where}: {source_type} cannot feed input {target_port.name!r} of type "
                f"{target_port.type}; add a transform or change a port type",
            )
        )

    previous = target.bindings.get(target_port.name)
    if previous is not None:
        origin = "a param" if previous.kind == "param" else "another edge"
        report(
            Problem(
                target.id,
                "input_fed_twice",
                f"{where}: input {target_port.name!r} is already fed by {origin}",
            )
        )
        return
    target.bindings[target_port.name] = binding


def _literal_problem(port: InputPort, value: Any) -> str | None:
    return _not_json_like(value) or port.check_literal(value)


def _not_json_like(value: Any) -> str | None:
    # Documents were checked as they loaded; values given from Python were not, and a
    # date or a self-containing value would only fail later, in the run.
    found = value_problem(value)
    return None if found is None else f"{format_loc(found[0])} {found[1]}".strip()


def _unknown_port(node_id: str, node_type: NodeType, port: str, where: str) -> Problem:
    return Problem(
        node_id,
        "unknown_port",
        f"{where}: {node_type.qualified_name} has no input {bounded_repr(port)}; "
        f"it has {_names(node_type.inputs)}",
    )


def _names(ports: Mapping[str, Any]) -> str:
    return ", ".join(ports) if ports else "none"
