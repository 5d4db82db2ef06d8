"""The execution optimizer: which nodes share a Prefect task, and what runs side by side.

    >>> from integration.graph import load_graph, bind, NodeRegistry
    >>> from integration.plan import make_plan
    >>> bound = bind(load_graph("flows/examples/hello.yaml"), NodeRegistry.default())
    >>> plan = make_plan(bound, outputs=["message"])
    >>> optimizer = ExecutionOptimizer(plan, mode="aggressive")
    >>> [segment.nodes for segment in optimizer.fuse_nodes(plan.order, chains_only=True)]
    [('greeting', 'shout')]

A Prefect task costs milliseconds; a string format costs microseconds. Three stages cut
the difference, none of which changes what a node is (its key, cache entry, state,
events and errors stay its own):

- ``fuse_nodes``: connected runs of cheap, policy-compatible nodes become a
  ``Segment``, one task whose nodes run inline. On parallel strategies a segment is a
  chain (each node the only consumer of the one before it), so fusion never serialises
  branches that could run side by side; the cheap nodes of one plan level that no
  chain took (a fan's branches) are then split into at most ``workers`` level
  segments, so a wide level costs a task per worker, not per node, and keeps its
  parallelism. On the sequential strategy, where nothing runs side by side, a segment
  is any run of consecutive nodes in execution order.
- ``batch_similar_operations``: nodes of a batchable type with equal params, at the
  same level (so independent of each other), become one call of up to ``max_batch``.
- ``parallelize_branches``: the critical path and the width of every level, for
  ``nodegraph plan``; the engine already starts every ready unit at once.

A node is *fusible* when its policy needs nothing a task of its own gives it (retries,
a timeout, a fallback), it holds no GPU, and it is cheap: it says so
(``cost="cheap"``) or, in ``auto`` mode, its recorded median duration is under
``max_node_ms``. Durations are recorded per node type, version and params after every
run (``NodeDurations``), so fusion improves by itself.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from integration.cache.besteffort import describe, folder_cause, warn_once
from integration.config import CachingConfig, FusionConfig
from integration.graph.policy import ErrorPolicy
from integration.graph.validate import BoundNode
from integration.plan import Plan

logger = logging.getLogger("nodegraph.optimize")

DURATIONS_FILE = ".durations.json"
SAMPLES_KEPT = 9
SIGNATURES_KEPT = 5000
NAME_SHOWN = 3


@dataclass(frozen=True)
class Segment:
    """Nodes that run as one Prefect task, in this order.

    ``kind`` is ``chain`` (fused: each node runs inline after the one before it),
    ``level`` (fused too: independent nodes of one plan level, run inline one after
    another) or ``batch`` (one call of the type's batch function over every node's
    inputs). ``reason`` says why the nodes share a task, for ``nodegraph plan``.
    """

    nodes: tuple[str, ...]
    kind: str = "chain"
    reason: str = field(default="", compare=False)

    @property
    def head(self) -> str:
        return self.nodes[0]

    @property
    def name(self) -> str:
        """The task-run name: the nodes in order, shortened with a count when long."""
        joiner = "→" if self.kind == "chain" else "+"
        if len(self.nodes) <= NAME_SHOWN:
            return joiner.join(self.nodes)
        shown = joiner.join(self.nodes[: NAME_SHOWN - 1])
        return f"{shown}{joiner}…{joiner}{self.nodes[-1]} ({len(self.nodes)} nodes)"


@dataclass
class BranchReport:
    """What can run side by side: level widths and the critical path."""

    widths: list[int]
    critical_path: list[str]
    critical_path_ms: float | None
    """The critical path's recorded duration, when every node on it has one."""

    @property
    def max_parallelism(self) -> int:
        return max(self.widths, default=0)


@dataclass
class FusionDecision:
    """Why a node may or may not share a task (for ``nodegraph plan``)."""

    fusible: bool
    reason: str
    compat: Any = None
    median_ms: float | None = None
    """The recorded median duration the decision rests on, if it rests on one."""


def _params(node: BoundNode) -> dict[str, Any]:
    """A node's literal params by port."""
    return {port: b.value for port, b in node.bindings.items() if b.kind == "param"}


def node_signature(node: BoundNode) -> str:
    """What durations are recorded under: the type, its version and the node's params.

    Inputs are left out on purpose: a node's cost follows its code and settings far
    more than its data, and this way every node of a type learns from the others.
    """
    params = _params(node)
    text = json.dumps(params, sort_keys=True, default=repr) if params else ""
    digest = hashlib.sha256(text.encode()).hexdigest()[:12] if text else "-"
    return f"{node.type.qualified_name}@{node.type.version[:12]}#{digest}"


class NodeDurations:
    """Recorded node durations, ``<folder>/.durations.json``: the last ``SAMPLES_KEPT``
    per-run medians of every node signature. Reading and writing are best effort: a
    missing or unreadable file means no history, and a run never fails on it."""

    def __init__(self, folder: Path | None) -> None:
        self.path = Path(folder) / DURATIONS_FILE if folder is not None else None
        self._samples: dict[str, list[float]] | None = None

    def _load(self) -> dict[str, list[float]]:
        if self._samples is None:
            self._samples = {}
            if self.path is not None and self.path.exists():
                try:
                    data = json.loads(self.path.read_text())
                    if isinstance(data, dict):
                        self._samples = {
                            k: [float(x) for x in v] for k, v in data.items() if isinstance(v, list)
                        }
                except (OSError, ValueError, TypeError) as exc:
                    logger.warning("ignoring unreadable duration history %s: %s", self.path, exc)
        return self._samples

    def median_ms(self, signature: str) -> float | None:
        samples = self._load().get(signature)
        return statistics.median(samples) * 1000 if samples else None

    def record(self, durations: Iterable[tuple[str, float]]) -> None:
        """Add one run's durations (signature, seconds): their median per signature."""
        by_signature: dict[str, list[float]] = {}
        for signature, seconds in durations:
            by_signature.setdefault(signature, []).append(seconds)
        if not by_signature or self.path is None:
            return
        self._samples = None  # another run may have written meanwhile: merge into that
        samples = self._load()
        for signature, values in by_signature.items():
            kept = samples.pop(signature, [])
            kept.append(statistics.median(values))
            samples[signature] = kept[-SAMPLES_KEPT:]  # re-inserted: most recent last
        if len(samples) > SIGNATURES_KEPT:  # the most recent; one slice, not a pop each
            samples = dict(list(samples.items())[-SIGNATURES_KEPT:])
            self._samples = samples
        temporary = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
            with os.fdopen(handle, "w") as out:
                json.dump(samples, out)
            os.replace(temporary, self.path)
        except OSError as exc:
            if temporary is not None:  # a full disk: no half-written file left behind
                Path(temporary).unlink(missing_ok=True)
            warn_once(
                folder_cause(self.path.parent, exc),
                "cache folder %s: could not record node durations in %s (%s)",
                self.path.parent,
                self.path.name,
                describe(exc),
            )


class ExecutionOptimizer:
    """Fusion, batching and branch analysis for one plan.

    ``policies`` are the nodes' effective error policies (their own over the
    configuration's); ``durations`` the recorded history. Node-key locks do not keep
    nodes apart: a shared task takes each node's lock around its execution.
    """

    def __init__(
        self,
        plan: Plan,
        mode: str = "auto",
        max_node_ms: float = 2.0,
        policies: Mapping[str, ErrorPolicy] | None = None,
        durations: NodeDurations | None = None,
        batching: bool = True,
        workers: int | None = None,
    ) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"ExecutionOptimizer: workers must be at least 1, not {workers}")
        self.plan = plan
        self.mode = mode
        self.max_node_ms = max_node_ms
        self.policies = policies or {}
        self.durations = durations
        self.batching = batching
        # How many units of one level may run side by side: wide levels are split into
        # this many segments (the parallel strategy's pool size, CPUs by default).
        self.workers = workers or os.cpu_count() or 1
        self.decisions = {n: self._decide(plan.steps[n].node) for n in plan.order}
        self._batch_keys: dict[str, Any] = {}

    # -- fusion ---------------------------------------------------------------------

    def _decide(self, node: BoundNode) -> FusionDecision:
        if self.mode == "off":
            return FusionDecision(False, "fusion is off")
        policy = self.policies.get(node.id) or node.policy or ErrorPolicy()
        own_task = [
            reason
            for reason, applies in (
                ("retries", policy.retry is not None and policy.retry.attempts > 0),
                ("a timeout", policy.timeout_seconds is not None),
                ("a fallback", policy.final_action == "fallback"),
                ("a GPU", node.resources is not None and node.resources.gpu_count > 0),
                ("a batch function", node.type.batch is not None and self.batching),
                ("a broadcast output", any(p.broadcast for p in node.type.outputs.values())),
            )
            if applies
        ]
        if own_task:
            return FusionDecision(False, "has " + " and ".join(own_task))
        if node.type.cost == "expensive":
            return FusionDecision(False, "declared expensive")
        compat = node.resources if node.resources is not None and not node.resources.empty else None
        if node.type.cost == "cheap":
            return FusionDecision(True, "declared cheap", compat)
        if self.mode == "aggressive":
            return FusionDecision(True, "aggressive", compat)
        median = self.durations.median_ms(node_signature(node)) if self.durations else None
        if median is None:
            return FusionDecision(False, "no recorded duration yet")
        if median >= self.max_node_ms:
            return FusionDecision(False, f"median {median:.2f} ms >= {self.max_node_ms:g} ms")
        return FusionDecision(True, f"median {median:.3f} ms", compat, median)

    def fusible(self, node_id: str) -> bool:
        return self.decisions[node_id].fusible

    def fuse_nodes(
        self, executing: Sequence[str], chains_only: bool, workers: int | None = None
    ) -> list[Segment]:
        """Segments (two nodes or more) among ``executing`` (in execution order).

        ``chains_only`` (parallel strategies): a node joins the one before it only if
        each is the other's only running neighbour on that side; the fusible nodes of
        one level that no chain took are then split into at most ``workers`` (the
        optimizer's by default) level segments of compatible nodes. Otherwise
        (sequential) any run of consecutive fusible, compatible nodes is one segment.

        No two units wait on each other: a unit's inputs from other units enter at a
        chain's head, or at a level segment's members, whose producers all sit at lower
        levels, so every unit's producers finish before it starts.
        """
        if self.mode == "off":
            return []
        if not chains_only:
            return self._consecutive_runs(executing)
        chains = self._chains(executing)
        taken = {n for chain in chains for n in chain.nodes}
        loose = [n for n in executing if n not in taken and self.decisions[n].fusible]
        return chains + self._level_segments(loose, workers or self.workers)

    def _consecutive_runs(self, executing: Sequence[str]) -> list[Segment]:
        decisions = self.decisions
        segments: list[Segment] = []
        run: list[str] = []

        def close() -> None:
            if len(run) > 1:
                segments.append(Segment(tuple(run), reason=_shared_reason(run, decisions)))

        for node_id in executing:
            decision = decisions[node_id]
            if run and (not decision.fusible or decision.compat != decisions[run[0]].compat):
                close()
                run = []
            if decision.fusible:
                run.append(node_id)
        close()
        return segments

    def _chains(self, executing: Sequence[str]) -> list[Segment]:
        decisions = self.decisions
        running = set(executing)
        steps = self.plan.steps
        producers = {n: [u for u in steps[n].upstream if u in running] for n in executing}
        consumers = {n: [c for c in steps[n].consumers if c in running] for n in executing}

        def joins_previous(node_id: str) -> bool:
            if not decisions[node_id].fusible or len(producers[node_id]) != 1:
                return False
            previous = producers[node_id][0]
            return (
                decisions[previous].fusible
                and len(consumers[previous]) == 1
                and decisions[previous].compat == decisions[node_id].compat
            )

        segments: list[Segment] = []
        for node_id in executing:
            if joins_previous(node_id):
                continue  # inside a chain that starts earlier
            chain = [node_id]
            while decisions[chain[-1]].fusible and len(consumers[chain[-1]]) == 1:
                following = consumers[chain[-1]][0]
                if not joins_previous(following):
                    break
                chain.append(following)
            if len(chain) > 1:
                reason = "a chain: " + _shared_reason(chain, decisions)
                segments.append(Segment(tuple(chain), reason=reason))
        return segments

    def _level_segments(self, loose: Sequence[str], workers: int) -> list[Segment]:
        """Fusible nodes of one level and compat, in order, cut into at most ``workers``
        segments of nearly equal size (a level's nodes never depend on each other)."""
        groups: dict[tuple[int, Any], list[str]] = {}
        for node_id in loose:
            key = (self.plan.steps[node_id].level, self.decisions[node_id].compat)
            groups.setdefault(key, []).append(node_id)
        segments: list[Segment] = []
        for (level, _), members in groups.items():
            parts = min(workers, len(members) // 2)
            if parts == 0:
                continue
            reason = (
                f"level {level}: {len(members)} independent nodes in {parts} task(s) "
                f"for {workers} worker(s); " + _shared_reason(members, self.decisions)
            )
            size, extra = divmod(len(members), parts)
            start = 0
            for part in range(parts):
                end = start + size + (part < extra)
                segments.append(Segment(tuple(members[start:end]), "level", reason))
                start = end
        return segments

    # -- batching -------------------------------------------------------------------

    def batch_key(self, node_id: str) -> Any:
        """Nodes with equal keys may share one batch call; ``None``: not batchable."""
        if node_id not in self._batch_keys:
            self._batch_keys[node_id] = self._batch_key(node_id)
        return self._batch_keys[node_id]

    def _batch_key(self, node_id: str) -> Any:
        node = self.plan.steps[node_id].node
        if not self.batching or node.type.batch is None:
            return None
        policy = self.policies.get(node_id) or node.policy or ErrorPolicy()
        if policy.final_action == "fallback":
            return None
        params = _params(node)
        try:
            params_text = json.dumps(params, sort_keys=True)
        except (TypeError, ValueError):
            params_text = repr(sorted(params.items()))
        resources = node.resources.amounts() if node.resources is not None else {}
        return (
            node.type.qualified_name,
            node.type.version,
            params_text,
            json.dumps(resources, sort_keys=True),
            policy.model_dump_json(),
        )

    def batch_similar_operations(self, executing: Sequence[str]) -> list[Segment]:
        """Batches of two nodes or more: same batch key and same level, so the nodes
        of a batch never depend on each other; each batch holds at most the type's
        ``max_batch`` nodes."""
        groups: dict[tuple[int, Any], list[str]] = {}
        for node_id in executing:
            key = self.batch_key(node_id)
            if key is not None:
                groups.setdefault((self.plan.steps[node_id].level, key), []).append(node_id)
        batches = []
        for members in groups.values():
            size = self.plan.steps[members[0]].node.type.max_batch
            for start in range(0, len(members), size):
                chunk = members[start : start + size]
                if len(chunk) > 1:
                    reason = f"same batchable type, params and level (up to {size} a call)"
                    batches.append(Segment(tuple(chunk), kind="batch", reason=reason))
        return batches

    # -- branches -------------------------------------------------------------------

    def parallelize_branches(self) -> BranchReport:
        """Level widths and the critical path (weighted by recorded durations where
        every node has one, by node count otherwise)."""
        plan = self.plan
        weights: dict[str, float] = {}
        for node_id in plan.order:
            median = (
                self.durations.median_ms(node_signature(plan.steps[node_id].node))
                if self.durations
                else None
            )
            if median is not None:
                weights[node_id] = median
        timed = len(weights) == len(plan.order)
        best: dict[str, float] = {}
        via: dict[str, str | None] = {}
        for node_id in plan.order:
            step = plan.steps[node_id]
            previous = max(step.upstream, key=lambda u: best[u], default=None)
            own = weights[node_id] if timed else 1.0
            best[node_id] = own + (best[previous] if previous is not None else 0.0)
            via[node_id] = previous
        path: list[str] = []
        end = max(plan.order, key=lambda n: best[n], default=None)
        while end is not None:
            path.append(end)
            end = via[end]
        path.reverse()
        return BranchReport(
            widths=[len(level) for level in plan.levels],
            critical_path=path,
            critical_path_ms=best[path[-1]] if timed and path else None,
        )


def _shared_reason(nodes: Sequence[str], decisions: Mapping[str, FusionDecision]) -> str:
    """Why fusible nodes may share a task: their decisions' reasons, most common first
    (``declared cheap``, ``aggressive``), and the range of recorded medians."""
    counts: dict[str, int] = {}
    medians: list[float] = []
    for node_id in nodes:
        decision = decisions[node_id]
        if decision.median_ms is not None:
            medians.append(decision.median_ms)
        else:
            counts[decision.reason] = counts.get(decision.reason, 0) + 1
    parts = sorted(counts, key=lambda reason: -counts[reason])
    if medians:
        low, high = min(medians), max(medians)
        parts.append(f"median {low:.3f} ms" if low == high else f"medians {low:.3f}-{high:.3f} ms")
    return ", ".join(parts)


def effective_policy(node: BoundNode, default: ErrorPolicy) -> ErrorPolicy:
    """A node's policy as it applies: its own (over its type's) over the default."""
    return (node.policy or ErrorPolicy()).merged_over(default)


def effective_policies(plan: Plan, default: ErrorPolicy) -> dict[str, ErrorPolicy]:
    """Every node's effective policy; nodes without a policy of their own share one
    object (building a pydantic policy per node costs microseconds each)."""
    plain = ErrorPolicy().merged_over(default)
    return {
        node_id: plain
        if (node := plan.steps[node_id].node).policy is None
        else effective_policy(node, default)
        for node_id in plan.order
    }


def optimizer_for(
    plan: Plan,
    fusion: FusionConfig,
    default_policy: ErrorPolicy,
    durations: NodeDurations | None,
    caching: CachingConfig | None,
    policies: Mapping[str, ErrorPolicy] | None = None,
    workers: int | None = None,
) -> ExecutionOptimizer:
    """The plan's optimizer as configured: nodes judged by their effective policies
    (``policies``, computed from ``default_policy`` if not given) and their recorded
    ``durations``; wide levels split for ``workers`` (CPUs by default)."""
    return ExecutionOptimizer(
        plan,
        mode=fusion.mode,
        max_node_ms=fusion.max_node_ms,
        policies=policies if policies is not None else effective_policies(plan, default_policy),
        durations=durations,
        batching=fusion.batching,
        workers=workers,
    )


@dataclass
class Units:
    """How the nodes of a run group into tasks: ``unit_of`` maps every fused or batched
    node to its segment; every other node is a unit of its own."""

    segments: list[Segment] = field(default_factory=list)
    unit_of: dict[str, Segment] = field(default_factory=dict)

    @classmethod
    def of(cls, segments: Iterable[Segment]) -> Units:
        units = cls()
        for segment in segments:
            units.segments.append(segment)
            for node_id in segment.nodes:
                units.unit_of[node_id] = segment
        return units

    def head(self, node_id: str) -> str:
        segment = self.unit_of.get(node_id)
        return node_id if segment is None else segment.head

    def members(self, head: str) -> tuple[str, ...]:
        segment = self.unit_of.get(head)
        return (head,) if segment is None else segment.nodes


def optimization_report(optimizer: ExecutionOptimizer, strategy: str) -> dict[str, Any]:
    """What ``nodegraph plan`` shows of the optimizer, as if nothing were cached: every
    unit (a fused chain or level, a batch, a node alone) with why it was formed or why
    its node runs alone, the same grouped by kind, and the branches."""
    plan = optimizer.plan
    segments = optimizer.fuse_nodes(plan.order, chains_only=strategy != "sequential")
    batches = [
        batch for level in plan.levels for batch in optimizer.batch_similar_operations(level)
    ]
    shared = Units.of([*segments, *batches])
    own_task: dict[str, list[str]] = {}
    units: list[dict[str, Any]] = []
    for node_id in plan.order:
        segment = shared.unit_of.get(node_id)
        if segment is not None:
            if segment.head == node_id:
                units.append(_unit(segment.name, segment.kind, segment.nodes, segment.reason))
            continue
        decision = optimizer.decisions[node_id]
        reason = "no fusible neighbour" if decision.fusible else decision.reason
        own_task.setdefault(reason, []).append(node_id)
        units.append(_unit(node_id, "node", (node_id,), reason))
    branches = optimizer.parallelize_branches()
    return {
        "fusion": optimizer.mode,
        "strategy": strategy,
        "workers": optimizer.workers,
        "tasks": len(units),
        "units": units,
        "segments": [_unit(s.name, s.kind, s.nodes, s.reason) for s in segments],
        "batches": [_unit(b.name, b.kind, b.nodes, b.reason) for b in batches],
        "own_task": own_task,
        "parallelism": branches.widths,
        "critical_path": branches.critical_path,
        "critical_path_ms": branches.critical_path_ms,
    }


def _unit(name: str, kind: str, nodes: Sequence[str], reason: str) -> dict[str, Any]:
    return {"name": name, "kind": kind, "nodes": list(nodes), "reason": reason}
