"""What a run gives back: outputs and a per-node report.

    >>> from integration.result import NodeReport, NodeState, RunResult
    >>> result = RunResult("g", "completed", {"y": 2},
    ...                    {"a": NodeReport("a", "core.add", NodeState.COMPLETED, 0.001)})
    >>> result.ok, result.to_dict()["nodes"][0]["state"]
    (True, 'completed')

``RunResult.to_dict()`` is the documented ``nodegraph run --json`` object. Later
features add fields; existing fields are never renamed.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from integration.errors import NodeError


class NodeState(StrEnum):
    """Where a node ended up in a run."""

    COMPLETED = "completed"
    CACHED = "cached"
    FALLBACK = "fallback"
    """The node failed and its fallback (a node type or default outputs) stood in."""
    FAILED = "failed"
    UPSTREAM_FAILED = "upstream_failed"
    SKIPPED = "skipped"
    """Skipped by a ``skip`` policy: the node failed, or a node it depends on did."""
    PENDING = "pending"
    """Not run: the run halted first."""

    @property
    def ok(self) -> bool:
        """Whether the node's outputs are available (computed, cached or a fallback)."""
        return self in (NodeState.COMPLETED, NodeState.CACHED, NodeState.FALLBACK)


class RunState(StrEnum):
    """How a run ended; the Prefect flow run's state and the CLI's exit code follow it.

    | run state | flow run | exit code |
    | --- | --- | --- |
    | completed: every node succeeded, came from the cache or fell back | Completed | 0 |
    | partial: nodes were skipped by a ``skip`` policy | Completed, with a warning | 3 |
    | failed: a node failed and no policy absorbed it | Failed | 1 |
    | halted: a ``halt`` policy stopped the run; resume it | Failed | 4 |
    | cancelled: the flow run was cancelled; finished nodes are kept; resume it | Cancelled | 5 |
    """

    COMPLETED = "completed"
    PARTIAL = "partial"
    FAILED = "failed"
    HALTED = "halted"
    CANCELLED = "cancelled"


@dataclass
class NodeReport:
    """One node's outcome. ``duration_s`` is the node function's own wall time."""

    node_id: str
    node_type: str
    state: NodeState
    duration_s: float | None = None
    error: NodeError | None = None
    task_run_id: str | None = None
    cache_tier: str | None = None
    cache_key: str | None = None
    attempts: int = 0
    """How many times the node function ran (retries included); 0 when it did not run."""
    reason: str | None = None
    """Why a node was skipped, fell back or did not run; for a node that ran again after
    its worker died, that it was recovered (see ``lost_workers``)."""
    lost_workers: list[str] = field(default_factory=list)
    """Dask workers that died while running the node, one per extra attempt."""

    def recovered_from(self, workers: list[str]) -> None:
        """Record that the node ran again after ``workers`` died while running it."""
        self.lost_workers = [*self.lost_workers, *workers]
        self.attempts = max(self.attempts, 1) + len(workers)
        note = f"recovered from a lost worker {', '.join(workers)}"
        self.reason = f"{self.reason}; {note}" if self.reason else note

    def to_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "type": self.node_type,
            "state": str(self.state),
            "duration_s": self.duration_s,
            "error": self.error.to_dict() if self.error else None,
            "cache_tier": self.cache_tier,
            "cache_key": self.cache_key,
            "attempts": self.attempts,
            "reason": self.reason,
            "lost_workers": list(self.lost_workers),
        }


@dataclass
class RunResult:
    """The outputs of a run and what happened to each node, in plan order."""

    graph: str
    state: str
    outputs: dict[str, Any]
    nodes: dict[str, NodeReport]
    flow_run_id: str | None = None
    duration_s: float | None = None
    strategy: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    halted_at: str | None = None
    """The node whose ``halt`` policy stopped the run."""
    resume_id: str | None = None
    """The run id that ``nodegraph resume`` takes to continue this run (checkpoints of
    ``cacheable=False`` nodes are scoped to it); set when results were persisted."""
    profile: Any = None
    """The run's ``ProfileReport`` when profiling was on (``monitoring.profile``)."""

    @property
    def ok(self) -> bool:
        """Whether every node produced its outputs (computed, cached or a fallback)."""
        return self.state == RunState.COMPLETED

    @property
    def resume_hint(self) -> str | None:
        """The command that continues a halted, failed or cancelled run, if it can be
        resumed."""
        resumable = (RunState.HALTED, RunState.FAILED, RunState.CANCELLED)
        if self.state not in resumable or not self.resume_id:
            return None
        return f"nodegraph resume {self.resume_id}"

    @property
    def skipped(self) -> list[str]:
        return [n for n, r in self.nodes.items() if r.state == NodeState.SKIPPED]

    @property
    def errors(self) -> list[NodeError]:
        return [r.error for r in self.nodes.values() if r.error is not None]

    def counts(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for report in self.nodes.values():
            totals[str(report.state)] = totals.get(str(report.state), 0) + 1
        return totals

    def __getitem__(self, name: str) -> Any:
        return self.outputs[name]

    def to_dict(self) -> dict[str, Any]:
        """The ``nodegraph run --json`` object; values made JSON-safe by ``to_jsonable``."""
        return {
            "graph": self.graph,
            "state": self.state,
            "outputs": {name: to_jsonable(value) for name, value in self.outputs.items()},
            "nodes": [report.to_dict() for report in self.nodes.values()],
            "flow_run_id": self.flow_run_id,
            "duration_s": self.duration_s,
            "strategy": self.strategy,
            "halted_at": self.halted_at,
            "resume": self.resume_hint,
            **({"profile": self.profile.to_dict()} if self.profile is not None else {}),
        }


def to_jsonable(value: Any) -> Any:
    """A JSON-safe rendering of a node value.

    numpy arrays become nested lists and numpy scalars Python numbers; bytes become
    ``{"base64": ...}``; non-finite floats become strings (``"nan"``, ``"inf"``);
    sets and tuples become lists; anything else unknown becomes its ``repr``.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return to_jsonable(value.tolist())
    return repr(value)
