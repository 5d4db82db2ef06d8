"""Plan a run: which nodes the requested outputs need, in which order and levels.

    >>> from integration.graph import load_graph, bind, NodeRegistry
    >>> from integration.plan import make_plan
    >>> bound = bind(load_graph("flows/examples/hello.yaml"), NodeRegistry.default())
    >>> plan = make_plan(bound, outputs=["message"])
    >>> plan.order
    ['greeting', 'shout']

A ``Plan`` is plain data: it can be printed (``nodegraph plan``), compared and handed
to a translator. Later stages (cache keys, pruning, fusion) refine it here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from integration.errors import NodegraphError
from integration.graph.gcpause import gc_paused
from integration.graph.model import split_ref
from integration.graph.order import ancestors, levels
from integration.graph.validate import Binding, BoundGraph, BoundNode
from integration.resources.requirements import ResourceRequirement


class PlanError(NodegraphError, ValueError):
    """The requested outputs do not exist in the graph."""


@dataclass(frozen=True)
class OutputRequest:
    """One value the caller wants back: ``name`` is how it appears in the result."""

    name: str
    node: str
    port: str


@dataclass
class PlanStep:
    """One node of the plan with its place in the run."""

    node: BoundNode
    level: int
    upstream: list[str]
    consumers: list[str] = field(default_factory=list)

    @property
    def node_id(self) -> str:
        return self.node.id

    @property
    def bindings(self) -> dict[str, Binding]:
        return self.node.bindings


@dataclass
class Plan:
    """What a run will execute: steps in topological order, grouped in levels."""

    graph: BoundGraph
    steps: dict[str, PlanStep]
    order: list[str]
    levels: list[list[str]]
    outputs: list[OutputRequest]

    @property
    def name(self) -> str:
        return self.graph.name

    def resource_needs(
        self, node_ids: Iterable[str] | None = None
    ) -> dict[str, ResourceRequirement]:
        """The non-empty resource requirements of ``node_ids`` (default: every node)."""
        return {
            node_id: need
            for node_id in (self.order if node_ids is None else node_ids)
            if (need := self.steps[node_id].node.resources) is not None and not need.empty
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "graph": self.name,
            "nodes": len(self.order),
            "skipped_as_unneeded": sorted(set(self.graph.nodes) - set(self.steps)),
            "order": self.order,
            "levels": self.levels,
            "outputs": {o.name: f"{o.node}.{o.port}" for o in self.outputs},
            "steps": [
                {
                    "node_id": step.node_id,
                    "type": step.node.type.qualified_name,
                    "level": step.level,
                    "upstream": step.upstream,
                }
                for step in (self.steps[n] for n in self.order)
            ],
        }


def resolve_outputs(bound: BoundGraph, requested: Sequence[str] | None) -> list[OutputRequest]:
    """Turn output names or ``node.port`` references into ``OutputRequest`` objects.

    With nothing requested: the graph's declared outputs, or, if it declares none,
    every output port of every node that no other node consumes.
    """
    graph = bound.graph
    if not requested:
        if graph.outputs:
            return [OutputRequest(n, o.node, o.port) for n, o in graph.outputs.items()]
        consumed = {s for node in bound.nodes.values() for s in node.upstream}
        return [
            OutputRequest(f"{node_id}.{port}", node_id, port)
            for node_id in bound.order
            if node_id not in consumed
            for port in bound.nodes[node_id].type.outputs
        ]
    found: list[OutputRequest] = []
    problems: list[str] = []
    for ref in requested:
        if ref in graph.outputs:
            output = graph.outputs[ref]
            found.append(OutputRequest(ref, output.node, output.port))
            continue
        node_id, port = split_ref(ref)
        node = bound.nodes.get(node_id)
        if not port or node is None:
            known = ", ".join(graph.outputs) or "none declared"
            problems.append(
                f"{ref!r} is neither a graph output ({known}) nor a 'node.port' of this graph"
            )
        elif port not in node.type.outputs:
            problems.append(
                f"{ref!r}: node {node_id!r} ({node.type.qualified_name}) has no output "
                f"{port!r}; it has {', '.join(node.type.outputs) or 'none'}"
            )
        else:
            found.append(OutputRequest(ref, node_id, port))
    if problems:
        raise PlanError("cannot select outputs:\n  " + "\n  ".join(problems))
    return found


def make_plan(bound: BoundGraph, outputs: Sequence[str] | None = None) -> Plan:
    """Plan the nodes that ``outputs`` need. Nodes nothing asks for do not run."""
    with gc_paused():
        return _make_plan(bound, outputs)


def _make_plan(bound: BoundGraph, outputs: Sequence[str] | None) -> Plan:
    requests = resolve_outputs(bound, outputs)
    predecessors = bound.predecessors()
    if outputs or bound.graph.outputs:
        needed = ancestors(predecessors, {r.node for r in requests})
        order = [node_id for node_id in bound.order if node_id in needed]
    else:
        order = list(bound.order)
    selected = {node_id: predecessors[node_id] for node_id in order}
    grouped = levels(selected, order)
    level_of = {node_id: depth for depth, group in enumerate(grouped) for node_id in group}
    steps = {
        node_id: PlanStep(bound.nodes[node_id], level_of[node_id], selected[node_id])
        for node_id in order
    }
    for node_id in order:
        for upstream in steps[node_id].upstream:
            steps[upstream].consumers.append(node_id)
    return Plan(graph=bound, steps=steps, order=order, levels=grouped, outputs=requests)


@dataclass
class CachedPlan:
    """How a plan runs given the keys the cache holds.

    - ``execute``: nodes that must run, in plan order;
    - ``load``: cached nodes whose values are needed (by a node that runs, or as a
      requested output), in plan order;
    - ``skip``: cached nodes nothing needs; they are neither run nor loaded.
    """

    execute: list[str]
    load: list[str]
    skip: list[str]


def prune_cached(plan: Plan, cached: Mapping[str, str]) -> CachedPlan:
    """Split a plan by what ``cached`` (node id -> tier) holds, walking it backwards.

    A node is needed when it is a requested output or feeds a node that runs; a needed
    node runs unless it is cached, in which case its value is loaded instead.
    """
    # The plan's own sinks are wanted too: they include side-effect nodes without outputs.
    wanted = {request.node for request in plan.outputs}
    wanted |= {n for n, step in plan.steps.items() if not step.consumers}
    runs: set[str] = set()
    needed: set[str] = set()
    for node_id in reversed(plan.order):
        step = plan.steps[node_id]
        if node_id in wanted or any(c in runs for c in step.consumers):
            needed.add(node_id)
            if node_id not in cached:
                runs.add(node_id)
    return CachedPlan(
        execute=[n for n in plan.order if n in runs],
        load=[n for n in plan.order if n in needed and n not in runs],
        skip=[n for n in plan.order if n not in needed],
    )
