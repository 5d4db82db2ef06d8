"""The compile stage: what runs, what is loaded, and which nodes share a unit.

    >>> # located = consult_cache(plan, keys, hierarchy.locate)
    >>> # compiled = compile_plan(plan, located, optimizer, sequential=False)
    >>> # compiled.execute, compiled.load, compiled.segments

``compile_plan`` turns a ``Plan`` and the keys the cache holds into an
``ExecutionPlan``: plain data, fixed before anything runs. ``nodegraph plan`` prints
it; the scheduler only reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from integration.cache.keys import NodeKey
from integration.optimize import ExecutionOptimizer, Segment
from integration.plan import Plan, prune_cached


@dataclass(frozen=True)
class ExecutionPlan:
    """How a plan runs.

    - ``execute``: the nodes that run, in the order units are handed out;
    - ``load``: cached nodes whose values are needed, in plan order;
    - ``skip``: cached nodes nothing needs (neither run nor loaded);
    - ``segments``: fused segments (two nodes or more) sharing one unit;
    - ``batch_groups``: nodes that may share one batch call, once all are ready;
    - ``reasons``: why each node that runs is fused or has a unit of its own.
    """

    execute: tuple[str, ...]
    load: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()
    segments: tuple[Segment, ...] = ()
    batch_groups: tuple[tuple[str, ...], ...] = ()
    reasons: Mapping[str, str] = field(default_factory=dict)

    @property
    def units(self) -> int:
        """How many units the nodes that run form (a batch counted once)."""
        grouped = {n for s in self.segments for n in s.nodes}
        grouped |= {n for g in self.batch_groups for n in g}
        return len(self.execute) - len(grouped) + len(self.segments) + len(self.batch_groups)

    def to_dict(self) -> dict[str, Any]:
        return {
            "execute": list(self.execute),
            "load": list(self.load),
            "skip": list(self.skip),
            "units": self.units,
            "segments": [
                {"name": s.name, "kind": s.kind, "nodes": list(s.nodes)} for s in self.segments
            ],
            "batch_groups": [list(g) for g in self.batch_groups],
            "reasons": dict(self.reasons),
        }


def consult_cache(
    plan: Plan,
    keys: Mapping[str, NodeKey],
    locate: Callable[[str], str | None],
    resuming: bool = False,
) -> dict[str, str]:
    """The tier holding each node's key, for the nodes whose key is found.

    Run-scoped keys (``cacheable=False`` nodes) are looked up only when ``resuming``:
    a resumed run is the only one that shares them with the run it continues.
    """
    located: dict[str, str] = {}
    for node_id in plan.order:
        key = keys[node_id]
        if key.shared or resuming:
            tier = locate(key.key)
            if tier is not None:
                located[node_id] = tier
    return located


def compile_plan(
    plan: Plan,
    located: Mapping[str, str] | None,
    optimizer: ExecutionOptimizer | None = None,
    sequential: bool = False,
) -> ExecutionPlan:
    """The ``ExecutionPlan`` of ``plan`` given what the cache holds (``located``).

    Cached nodes prune their ancestors (``located=None``: no cache, every node of the
    plan runs); the nodes that run are fused and grouped by
    ``optimizer`` (none: one unit per node). One at a time (``sequential``) a segment
    is any run of consecutive fusible nodes, and batchable nodes go level by level;
    otherwise segments are chains, so that fusion never serialises branches.
    """
    if located is None:
        order, load, skip = list(plan.order), [], []
    else:
        pruned = prune_cached(plan, located)
        order, load, skip = list(pruned.execute), pruned.load, pruned.skip
    segments: list[Segment] = []
    groups: list[tuple[str, ...]] = []
    reasons: dict[str, str] = {}
    if optimizer is not None:
        groups = [batch.nodes for batch in optimizer.batch_similar_operations(order)]
        if sequential and groups:
            # Level by level, so that every node of a batch group is ready at its first.
            order.sort(key=lambda n: plan.steps[n].level)
        segments = optimizer.fuse_nodes(order, chains_only=not sequential)
        reasons = {n: optimizer.decisions[n].reason for n in order}
    return ExecutionPlan(
        execute=tuple(order),
        load=tuple(load),
        skip=tuple(skip),
        segments=tuple(segments),
        batch_groups=tuple(groups),
        reasons=reasons,
    )
