"""Graph order: Kahn's algorithm, levels, ancestors, cycles. All iterative.

    >>> from integration.graph.order import topological_order, levels
    >>> preds = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}
    >>> topological_order(preds)
    ['a', 'b', 'c', 'd']
    >>> levels(preds, ["a", "b", "c", "d"])
    [['a'], ['b', 'c'], ['d']]

Graphs are given as ``{node: predecessors}``. Nothing here recurses, so a 100,000-node
chain is as safe as a 3-node one. Ties are broken by node id, so the order is the same
on every machine and every run.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence

from integration.errors import NodegraphError


class CycleError(NodegraphError):
    """The graph has a cycle; ``path`` lists it with the first node repeated at the end."""

    def __init__(self, path: list[str]) -> None:
        self.path = path
        super().__init__("cycle: " + " -> ".join(path))


def successors_of(predecessors: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    """Invert ``{node: predecessors}`` into ``{node: successors}`` (sorted, unique)."""
    successors: dict[str, set[str]] = {node: set() for node in predecessors}
    for node, preds in predecessors.items():
        for pred in preds:
            successors.setdefault(pred, set()).add(node)
    return {node: sorted(succ) for node, succ in successors.items()}


def topological_order(predecessors: Mapping[str, Iterable[str]]) -> list[str]:
    """Kahn's algorithm with a min-heap, so ties go to the smallest node id.

    Raises ``CycleError`` naming one real cycle if the graph is not a DAG.
    """
    indegree = {node: 0 for node in predecessors}
    successors: dict[str, list[str]] = {node: [] for node in predecessors}
    for node, preds in predecessors.items():
        for pred in set(preds):
            indegree[node] += 1
            successors.setdefault(pred, []).append(node)
            indegree.setdefault(pred, 0)
    ready = [node for node, degree in indegree.items() if degree == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        node = heapq.heappop(ready)
        order.append(node)
        for succ in successors.get(node, ()):
            indegree[succ] -= 1
            if indegree[succ] == 0:
                heapq.heappush(ready, succ)
    if len(order) != len(indegree):
        remaining = {node for node, degree in indegree.items() if degree > 0}
        raise CycleError(find_cycle(predecessors, remaining))
    return order


def find_cycle(
    predecessors: Mapping[str, Iterable[str]], candidates: Iterable[str] | None = None
) -> list[str]:
    """Return one cycle among ``candidates`` as ``[a, b, ..., a]`` in edge direction.

    Candidates that no cycle passes through (sources, and nodes that only hang off a
    cycle's upstream) are peeled off first; every node left then has a predecessor
    that is also left, so walking predecessors from any of them must revisit a node.
    ``ValueError`` if there is no cycle among the candidates.
    """
    pool = set(predecessors) if candidates is None else set(candidates)
    inside = {node: {p for p in predecessors.get(node, ()) if p in pool} for node in pool}
    successors = successors_of(inside)
    peel = [node for node, preds in inside.items() if not preds]
    while peel:
        node = peel.pop()
        pool.discard(node)
        for succ in successors.get(node, ()):
            inside[succ].discard(node)
            if not inside[succ] and succ in pool:
                peel.append(succ)
    if not pool:
        raise ValueError("no cycle among the given nodes")
    start = min(pool)
    seen: dict[str, int] = {}
    walk: list[str] = []
    node = start
    while node not in seen:
        seen[node] = len(walk)
        walk.append(node)
        node = min(inside[node])
    cycle = list(reversed(walk[seen[node] :]))
    first = cycle.index(min(cycle))  # start at the smallest id, so reports are stable
    cycle = cycle[first:] + cycle[:first]
    return [*cycle, cycle[0]]


def levels(predecessors: Mapping[str, Iterable[str]], order: Sequence[str]) -> list[list[str]]:
    """Group an order into levels: a node's level is one more than its deepest predecessor."""
    depth: dict[str, int] = {}
    grouped: list[list[str]] = []
    for node in order:
        level = 1 + max((depth[p] for p in predecessors[node] if p in depth), default=-1)
        depth[node] = level
        if level == len(grouped):
            grouped.append([])
        grouped[level].append(node)
    for group in grouped:
        group.sort()
    return grouped


def ancestors(predecessors: Mapping[str, Iterable[str]], targets: Iterable[str]) -> set[str]:
    """The targets and every node they depend on, by an explicit stack."""
    found: set[str] = set()
    stack = list(targets)
    while stack:
        node = stack.pop()
        if node in found:
            continue
        found.add(node)
        stack.extend(p for p in predecessors.get(node, ()) if p not in found)
    return found


def descendants(successors: Mapping[str, Iterable[str]], sources: Iterable[str]) -> set[str]:
    """Every node reachable from ``sources``, excluding the sources themselves."""
    found: set[str] = set()
    stack = [s for source in sources for s in successors.get(source, ())]
    while stack:
        node = stack.pop()
        if node in found:
            continue
        found.add(node)
        stack.extend(s for s in successors.get(node, ()) if s not in found)
    return found
