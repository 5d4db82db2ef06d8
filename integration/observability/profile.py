"""The profile of a run: what each node cost, the critical path, and the top nodes.

>>> rows = [NodeProfile("a", "t", "completed", 1.0), NodeProfile("b", "t", "completed", 2.0),
...         NodeProfile("c", "t", "completed", 0.5)]
>>> report = ProfileReport.build("g", rows, {"a": [], "b": ["a"], "c": ["a"]})
>>> report.critical_path, report.critical_path_s
(['a', 'b'], 3.0)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class NodeProfile:
    """One node's costs in a run. Times in seconds, sizes in bytes; ``None`` where
    the node did not run (cached, skipped) or the number was not measured."""

    node_id: str
    node_type: str
    state: str
    wall_s: float | None = None
    cpu_s: float | None = None
    peak_memory_bytes: int | None = None
    output_bytes: int | None = None
    cache: str | None = None
    """``hit:<tier>``, ``miss``, or ``None`` without caching."""
    cache_read_bytes: int | None = None
    cache_written_bytes: int | None = None


@dataclass
class ProfileReport:
    """Every node's profile, the critical path (the chain of dependent nodes with the
    most wall time) and the top nodes by time and by memory."""

    graph: str
    nodes: list[NodeProfile]
    critical_path: list[str] = field(default_factory=list)
    critical_path_s: float = 0.0
    top_time: list[str] = field(default_factory=list)
    top_memory: list[str] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        graph: str,
        nodes: Iterable[NodeProfile],
        predecessors: Mapping[str, Iterable[str]],
        top: int = 5,
    ) -> ProfileReport:
        rows = list(nodes)
        by_id = {row.node_id: row for row in rows}
        # Longest path by wall time, in topological order (predecessors come first
        # in ``rows`` only by luck, so resolve by memoised depth-first search).
        best: dict[str, tuple[float, str | None]] = {}

        def longest(node_id: str) -> float:
            found = best.get(node_id)
            if found is not None:
                return found[0]
            stack = [node_id]
            while stack:
                current = stack[-1]
                if current in best:
                    stack.pop()
                    continue
                waiting = [p for p in predecessors.get(current, ()) if p in by_id and p not in best]
                if waiting:
                    stack.extend(waiting)
                    continue
                stack.pop()
                own = by_id[current].wall_s or 0.0
                before = [(best[p][0], p) for p in predecessors.get(current, ()) if p in best]
                head = max(before, default=(0.0, None))
                best[current] = (own + head[0], head[1])
            return best[node_id][0]

        end = max(by_id, key=longest, default=None)
        path: list[str] = []
        node: str | None = end
        while node is not None:
            path.append(node)
            node = best[node][1]
        path.reverse()
        timed = sorted((r for r in rows if r.wall_s), key=lambda r: -(r.wall_s or 0))
        heavy = sorted(
            (r for r in rows if r.peak_memory_bytes), key=lambda r: -(r.peak_memory_bytes or 0)
        )
        return cls(
            graph=graph,
            nodes=rows,
            critical_path=path,
            critical_path_s=best[end][0] if end is not None else 0.0,
            top_time=[r.node_id for r in timed[:top]],
            top_memory=[r.node_id for r in heavy[:top]],
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "graph": self.graph,
            "critical_path": self.critical_path,
            "critical_path_s": self.critical_path_s,
            "top_time": self.top_time,
            "top_memory": self.top_memory,
            "nodes": [asdict(n) for n in self.nodes],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProfileReport:
        return cls(
            graph=data["graph"],
            nodes=[NodeProfile(**n) for n in data.get("nodes", [])],
            critical_path=list(data.get("critical_path", [])),
            critical_path_s=float(data.get("critical_path_s", 0.0)),
            top_time=list(data.get("top_time", [])),
            top_memory=list(data.get("top_memory", [])),
        )
