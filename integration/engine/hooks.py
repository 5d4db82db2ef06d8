"""One hooks interface for everything that watches a run.

    >>> seen = []
    >>> hooks = Hooks([ListenerHooks(lambda report, done, total: seen.append(done))])
    >>> hooks.enabled
    True

The CLI's progress line, the Prefect reporter (events, artifacts, labels), metrics,
spans, profiles and run records each implement the methods they need of ``RunHooks``;
the engine calls one ``Hooks`` that fans out to all of them, in order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from integration.result import NodeReport, RunResult

NodeListener = Callable[[NodeReport, int, int], None]
"""Called as ``listener(report, finished, total)`` each time a node finishes."""


class RunHooks:
    """What a watcher of a run may hear; every method is optional (a no-op here)."""

    def run_started(self, name: str, total: int) -> None:
        """The run begins with ``total`` nodes to account for."""

    def node_started(self, node_id: str, type_name: str) -> dict[str, Any] | None:
        """A node is handed to its runner; return what the runner needs to observe it
        (profiling, trace context), if anything."""
        return None

    def node_finished(
        self,
        report: NodeReport,
        finished: int,
        total: int,
        measured: Any = None,
        read_bytes: int | None = None,
    ) -> None:
        """A node reached its final state (``finished`` of ``total`` so far);
        ``measured`` is what its worker measured, ``read_bytes`` what its cache load
        read."""

    def run_finished(self, result: RunResult) -> None:
        """The run ended with ``result``."""


class Hooks(RunHooks):
    """Several hooks called in order; ``node_started`` merges what they return. Any
    object with the four methods of ``RunHooks`` may be one (the instruments are)."""

    def __init__(self, hooks: Iterable[RunHooks | Any] = ()) -> None:
        self.hooks = [hook for hook in hooks if hook is not None]

    @property
    def enabled(self) -> bool:
        return bool(self.hooks)

    def add(self, hook: RunHooks | Any) -> None:
        if hook is not None:
            self.hooks.append(hook)

    def run_started(self, name: str, total: int) -> None:
        for hook in self.hooks:
            hook.run_started(name, total)

    def node_started(self, node_id: str, type_name: str) -> dict[str, Any] | None:
        observe: dict[str, Any] | None = None
        for hook in self.hooks:
            found = hook.node_started(node_id, type_name)
            if found:
                observe = {**(observe or {}), **found}
        return observe

    def node_finished(
        self,
        report: NodeReport,
        finished: int,
        total: int,
        measured: Any = None,
        read_bytes: int | None = None,
    ) -> None:
        for hook in self.hooks:
            hook.node_finished(report, finished, total, measured, read_bytes)

    def run_finished(self, result: RunResult) -> None:
        for hook in self.hooks:
            hook.run_finished(result)


class ListenerHooks(RunHooks):
    """A ``NodeListener`` function as hooks: called for every finished node."""

    def __init__(self, listener: NodeListener) -> None:
        self.listener = listener

    def node_finished(
        self,
        report: NodeReport,
        finished: int,
        total: int,
        measured: Any = None,
        read_bytes: int | None = None,
    ) -> None:
        self.listener(report, finished, total)


class StartedHooks(RunHooks):
    """A function called with each node id as the node is handed to its runner."""

    def __init__(self, started: Callable[[str], None]) -> None:
        self.started = started

    def node_started(self, node_id: str, type_name: str) -> dict[str, Any] | None:
        self.started(node_id)
        return None
