"""Programs: the semantics of a dynamic graph, which the scheduler runs.

    >>> # Scheduler(empty_plan, backend, {}, program=ComfyProgram(...)).run()

A nodegraph document is a static graph: its plan holds every node and edge before the
run starts, and no program is needed. A ComfyUI prompt grows while it runs: lazy
inputs add edges to a node that was ready (ComfyUI's ``check_lazy_status``), and a
node may expand into new nodes whose results become its own. The ComfyUI layer says
what happens at those points through a ``Program``; the scheduler keeps the ready
queue, the node states, the policies, cancel and the reports, as for every graph.

The scheduler calls the program from its own thread only, while ``run`` goes:

1. ``begin``: add the first nodes and edges (``Scheduler.add_node``, ``add_edge``,
   ``add_cached``).
2. ``prepare`` for each node that became ready: the ``Submission`` to run, a
   ``NodeOutput`` that stands for the node with no call (an expanded node resolved),
   or ``None`` when the node now waits for producers it linked to (lazy inputs).
3. ``finished`` for each node that ran: ``True`` when it expanded, so that it waits
   for the nodes it added and ``prepare`` resolves it once they are done.
4. ``stalled`` when nothing runs but nodes wait (a cycle made at run time).
5. ``outputs`` and ``extra`` for the ``RunResult``.
"""

from __future__ import annotations

from typing import Any, Protocol

from integration.cache.keys import NodeKey
from integration.engine.backend import Submission
from integration.engine.units import NodeOutput
from integration.plan import PlanStep
from integration.result import NodeReport


class RunningGraph(Protocol):
    """The scheduler's side, as a program sees it (``Scheduler`` implements it)."""

    keys: dict[str, NodeKey]
    reports: dict[str, NodeReport]

    def add_node(self, step: PlanStep) -> None:
        """A node to run once its producers (linked by ``add_edge``) are done."""
        ...

    def add_cached(self, step: PlanStep) -> bool:
        """A node served from the cache under its key, if the cache holds it."""
        ...

    def add_edge(self, source: str, target: str) -> None:
        """``target`` needs ``source``: it waits for it, or is marked if it failed."""
        ...

    def has_node(self, node_id: str) -> bool: ...

    def waits(self, node_id: str) -> bool:
        """Whether the node waits for a producer that has not finished."""
        ...

    def output_of(self, node_id: str) -> NodeOutput:
        """A finished node's output."""
        ...


class Program(Protocol):
    """What a dynamic graph supplies to the scheduler (see the module docstring)."""

    def begin(self, graph: RunningGraph) -> None:
        """Add the nodes the run starts with."""
        ...

    def prepare(self, node_id: str) -> Submission | NodeOutput | None:
        """A ready node's submission, its output if it needs no call, or ``None`` when
        it waits again (or was marked by an edge to a failed producer)."""
        ...

    def finished(self, node_id: str, output: NodeOutput) -> bool:
        """A node ran; ``True`` when it expanded and waits for the nodes it added."""
        ...

    def reason(self, node_id: str) -> str | None:
        """A note for the finished node's report, if any."""
        ...

    def stalled(self, waiting: list[str]) -> tuple[str, BaseException]:
        """Nodes wait on each other: the node to fail, and why."""
        ...

    def outputs(self) -> dict[str, Any]:
        """The run's outputs."""
        ...

    def extra(self) -> dict[str, Any]:
        """What the ``RunResult``'s ``extra`` says of the run."""
        ...
