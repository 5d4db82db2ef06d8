"""The backend protocol: how the engine hands units to whatever runs them.

    >>> backend = InlineBackend()
    >>> backend.prefetch, backend.keeps_handles
    (False, False)

A unit is a node, a fused segment or a batch (``Submission.kind``: ``node``,
``shared`` or ``fallback``), or a program's node (``comfy``: a ComfyUI node call).
The engine calls ``submit`` when a unit may start, and ``wait_any`` to learn that
one has ended; it never sees a Prefect state or a future.
What ``submit`` returns is the unit's *handle*: the engine passes it to consumers as
their producer, so a backend that keeps handles (Prefect's futures) lets its runner
resolve them where the consumer runs (a Dask worker) instead of in the engine.

- ``InlineBackend`` runs each unit in this thread when submitted (the engine's tests).
- ``integration.prefect.backend`` submits a Prefect task per unit on the strategy's
  runner (direct calls, threads, the warm process pool, Dask).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from integration.engine.units import (
    FusedNode,
    NodeOutput,
    SharedOutput,
    SharedRun,
    Upstream,
    execute_shared,
    invoke_node,
)


class Submission:
    """One unit for a backend to run.

    ``arguments`` are the keyword arguments of the node call (``node_type``,
    ``node_id``, ``literals``, ``upstream``, ``cache_key`` and optionally
    ``kill_after`` and ``observe``), or, for ``shared``, ``task`` (a ``SharedTask``)
    and ``external`` (the producers outside the task, by node id). Producers inside
    the arguments are handles or outputs, as the engine holds them.
    """

    __slots__ = ("arguments", "kind", "nodes", "unit")

    def __init__(
        self, unit: str, kind: str, nodes: tuple[str, ...], arguments: dict[str, Any]
    ) -> None:
        self.unit = unit
        self.kind = kind
        self.nodes = nodes
        self.arguments = arguments


class Completion:
    """How a submitted unit ended.

    - ``value``: its ``NodeOutput`` (node, fallback) or ``SharedOutput`` (shared);
    - ``error``: why it failed, after the runner's retries; a shared task's error
      carries what finished as ``shared_output``;
    - ``not_run``: the runner did not run it because a producer handed to it early
      failed first (``error`` says what the backend knows);
    - ``from_cache``: the runner served it from the cache (another run stored the key
      while this one waited), so it did not compute it.
    """

    __slots__ = ("error", "fallback", "from_cache", "not_run", "task_run_id", "unit", "value")

    def __init__(
        self,
        unit: str,
        fallback: bool = False,
        value: Any = None,
        error: BaseException | None = None,
        not_run: bool = False,
        from_cache: bool = False,
        task_run_id: str | None = None,
    ) -> None:
        self.unit = unit
        self.fallback = fallback
        self.value = value
        self.error = error
        self.not_run = not_run
        self.from_cache = from_cache
        self.task_run_id = task_run_id

    @property
    def ok(self) -> bool:
        return self.error is None and not self.not_run


class Backend(Protocol):
    """What the engine needs of a runner.

    ``prefetch``: a unit may be submitted while its producers still run (its
    arguments then hold their handles). ``keeps_handles``: consumers get the handle
    even after the producer finished (else the engine hands them its value).
    ``max_in_flight``: how many units may run at once (``1``: one after the other, in
    plan order; ``None``: the engine's window).
    """

    prefetch: bool
    keeps_handles: bool
    max_in_flight: int | None

    def submit(self, submission: Submission, fallback: bool = False) -> Any:
        """Start the unit; return its handle."""
        ...

    def wait_any(self) -> Completion | None:
        """Block until a submitted unit ends; ``None`` when woken by ``wake``."""
        ...

    def wake(self) -> None:
        """Make a blocked ``wait_any`` return ``None`` (from any thread)."""
        ...

    def value(self, handle: Any) -> Any:
        """The finished unit's value behind a handle (``NodeOutput``, ``SharedOutput``)."""
        ...

    def is_handle(self, produced: Any) -> bool:
        """Whether ``produced`` is a handle (else it is a value)."""
        ...

    def handle_done(self, handle: Any) -> bool:
        """Whether the unit behind the handle has ended (its value may be read)."""
        ...

    def cancel(self, handles: list[Any]) -> None:
        """Cancel queued units and stop running ones where the runner can."""
        ...

    def stop_starting(self, stop: bool) -> None:
        """Close (or reopen) the gate that units handed over early check before they
        start: a halt or a cancel keeps them from starting."""
        ...

    def forget(self, key: str) -> None:
        """Drop the runner's in-memory copy of the result persisted under ``key``."""
        ...


def inline_node_call(arguments: Mapping[str, Any]) -> NodeOutput:
    """A node call in this thread, with producers given as outputs."""
    return invoke_node(
        arguments["node_type"], arguments["node_id"], arguments["literals"], arguments["upstream"]
    )


def _inline_shared(arguments: Mapping[str, Any]) -> SharedOutput:
    def run_node(fused: FusedNode, upstream: dict[str, Upstream]) -> NodeOutput:
        return invoke_node(fused.node_type, fused.node_id, fused.literals, upstream)

    return execute_shared(arguments["task"], arguments["external"], SharedRun(run_node))


class InlineBackend:
    """Runs each unit in this thread as it is submitted, one at a time.

    ``node_call`` runs a node or fallback call from its arguments (by default the
    plain node function, no runner); ``shared_call`` a shared task's; ``calls`` adds
    the calls of other kinds (a program's). Nothing is persisted: the engine's own
    cache consultation serves what is stored.
    """

    prefetch = False
    keeps_handles = False
    max_in_flight: int | None = 1

    def __init__(
        self,
        node_call: Callable[[Mapping[str, Any]], NodeOutput] = inline_node_call,
        shared_call: Callable[[Mapping[str, Any]], SharedOutput] = _inline_shared,
        calls: Mapping[str, Callable[[Mapping[str, Any]], Any]] | None = None,
    ) -> None:
        self.node_call = node_call
        self.shared_call = shared_call
        self.calls: dict[str, Callable[[Mapping[str, Any]], Any]] = {
            "node": node_call,
            "fallback": node_call,
            "shared": shared_call,
            **(calls or {}),
        }
        self._done: deque[Completion] = deque()
        self.submitted: list[str] = []  # units in the order they were started

    def submit(self, submission: Submission, fallback: bool = False) -> Any:
        self.submitted.append(submission.unit)
        call = self.calls.get(submission.kind)
        if call is None:
            raise ValueError(
                f"the inline backend has no call for units of kind {submission.kind!r} "
                f"(unit {submission.unit!r}); pass one in calls="
            )
        try:
            value = call(submission.arguments)
        except Exception as exc:
            self._done.append(Completion(submission.unit, fallback, error=exc))
            return None
        self._done.append(Completion(submission.unit, fallback, value=value))
        return value

    def wait_any(self) -> Completion | None:
        return self._done.popleft() if self._done else None

    def wake(self) -> None:
        return None

    def value(self, handle: Any) -> Any:
        return handle

    def is_handle(self, produced: Any) -> bool:
        return False

    def handle_done(self, handle: Any) -> bool:
        return True

    def cancel(self, handles: list[Any]) -> None:
        return None

    def stop_starting(self, stop: bool) -> None:
        return None

    def forget(self, key: str) -> None:
        return None
