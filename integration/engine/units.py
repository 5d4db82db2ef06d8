"""What the engine hands a backend and gets back: node outputs and shared tasks.

    >>> output = NodeOutput({"value": 3}, duration_s=0.001)
    >>> output.values["value"]
    3

Everything here is plain Python: a backend (inline, Prefect's) runs these units, and a
process pool or a Dask worker unpickles them without the engine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager as ContextManager
from time import perf_counter
from typing import Any

from integration.errors import ErrorType, NodegraphError, NodeInputError, NodeOutputError
from integration.graph.gcpause import gc_paused
from integration.graph.nodetype import NodeType
from integration.graph.transforms import TransformSpec, apply_transform

Upstream = tuple[Any, str | None, TransformSpec | None]
"""How an input arrives: ``(producer, port, transform)``.

The producer is an upstream ``NodeOutput`` (or a backend's handle of one, which the
backend resolves before the node runs) read at ``port``; with ``port=None`` it is the
value itself, as for graph inputs.
"""


class NodeOutput:
    """A node's output values by port, with the node function's own wall time and the
    attempt (1 for the first try) that produced them."""

    __slots__ = ("attempts", "duration_s", "measured", "values")

    def __init__(
        self,
        values: dict[str, Any],
        duration_s: float,
        attempts: int = 1,
        measured: Any = None,
    ) -> None:
        self.values = values
        self.duration_s = duration_s
        self.attempts = attempts
        self.measured = measured  # CPU time, peak memory, output size (when profiling)

    def __repr__(self) -> str:
        return f"NodeOutput(ports={list(self.values)}, duration_s={self.duration_s:.6f})"


class NodeNotStarted(NodegraphError):
    """The run stopped scheduling (a halt) before this already-submitted node began."""

    error_type = ErrorType.DEPENDENCY


class TransformError(NodegraphError, ValueError):
    """An edge transform could not convert the value it received."""

    error_type = NodeInputError.error_type


def gather_inputs(
    node_type: NodeType, node_id: str, literals: dict[str, Any], upstream: dict[str, Upstream]
) -> dict[str, Any]:
    """A node's input values: literals, plus upstream outputs read at their ports and
    transformed; raises ``NodeInputError`` for values outside their ports' constraints."""
    values = dict(literals)
    for port, (producer, source_port, transform) in upstream.items():
        value = producer if source_port is None else producer.values[source_port]
        if transform is not None:
            try:
                value = apply_transform(transform, value)
            except Exception as exc:
                raise TransformError(
                    f"node {node_id!r}: transform {transform.name!r} on input {port!r} "
                    f"failed on {type(value).__name__}: {exc}"
                ) from exc
        values[port] = value
    problems = node_type.check_inputs(values)
    if problems:
        raise NodeInputError(f"node {node_id!r}: " + "; ".join(problems))
    return values


def output_error(
    node_type: NodeType, node_id: str, outputs: Mapping[str, Any]
) -> NodeOutputError | None:
    """The error for outputs that do not match their declared types, if any."""
    problems = node_type.check_outputs(outputs)
    return NodeOutputError(f"node {node_id!r}: " + "; ".join(problems)) if problems else None


def annotate(exc: BaseException, seconds: float, attempt: int) -> None:
    """Attach how long a failed call took and which attempt it was, for its report."""
    try:
        exc.nodegraph_duration_s = seconds  # type: ignore[attr-defined]
        exc.nodegraph_attempts = max(attempt, 1)  # type: ignore[attr-defined]
    except AttributeError:  # an exception type with __slots__
        pass


def invoke_node(
    node_type: NodeType, node_id: str, literals: dict[str, Any], upstream: dict[str, Upstream]
) -> NodeOutput:
    """Run one node in this thread with no runner around it: inputs gathered and
    checked, outputs checked, the call timed (the inline backend's node call)."""
    values = gather_inputs(node_type, node_id, literals, upstream)
    start = perf_counter()
    try:
        outputs = node_type.invoke(values)
    except BaseException as exc:
        annotate(exc, perf_counter() - start, 1)
        raise
    elapsed = perf_counter() - start
    error = output_error(node_type, node_id, outputs)
    if error is not None:
        annotate(error, elapsed, 1)
        raise error
    return NodeOutput(outputs, elapsed)


class FusedNode:
    """One node of a shared task (a fused segment or a batch), as the engine hands it.

    ``upstream`` is shaped like ``Upstream`` but names producers by node id: one run
    earlier in the same task, or one in the task's ``external`` mapping. A graph input
    with a transform arrives as ``(value, None, transform)``.
    """

    __slots__ = ("cache_key", "halts", "literals", "node_id", "node_type", "observe", "upstream")

    def __init__(
        self,
        node_type: NodeType,
        node_id: str,
        literals: dict[str, Any],
        upstream: dict[str, Upstream],
        cache_key: str | None,
        observe: dict[str, Any] | None,
        halts: bool,
    ) -> None:
        self.node_type = node_type
        self.node_id = node_id
        self.literals = literals
        self.upstream = upstream
        self.cache_key = cache_key
        self.observe = observe
        self.halts = halts


class SharedTask:
    """What a shared task runs: its nodes in order, whether they are a ``chain`` or a
    ``batch``, the result storage their cache entries go to, and which outputs the
    engine needs back (``keep``); other intermediate values are dropped once their
    last consumer inside the task has run. ``locks`` is the node-key lock manager of
    the run's cache policy, if it locks; ``refresh`` recomputes and overwrites what
    the cache holds, as the run asked. The backend fills in ``storage`` and ``locks``."""

    __slots__ = ("consumers", "keep", "kind", "locks", "nodes", "refresh", "storage")

    def __init__(
        self,
        kind: str,
        nodes: list[FusedNode],
        keep: set[str],
        consumers: dict[str, list[str]],
        storage: Any = None,
        locks: Any = None,
        refresh: bool = False,
    ) -> None:
        self.kind = kind
        self.nodes = nodes
        self.keep = keep
        self.consumers = consumers  # consumers inside the task, by node id
        self.storage = storage
        self.locks = locks if storage is not None else None
        self.refresh = refresh


class SharedOutput:
    """The nodes of a shared task that finished (``outputs``) and failed (``failures``);
    ``cached`` names the tier of those another run stored while this one waited for
    their locks (their outputs are the stored ones).

    Its ``values`` look up ``(node id, port)`` pairs, so a consumer in another task reads
    a shared task's result as it reads a ``NodeOutput``.
    """

    __slots__ = ("cached", "failures", "outputs")

    def __init__(self) -> None:
        self.outputs: dict[str, NodeOutput] = {}
        self.failures: dict[str, BaseException] = {}
        self.cached: dict[str, str] = {}

    @property
    def values(self) -> _PairLookup:
        return _PairLookup(self.outputs)

    def output_of(self, node_id: str) -> NodeOutput:
        return self.outputs[node_id]


class _PairLookup:
    __slots__ = ("outputs",)

    def __init__(self, outputs: dict[str, NodeOutput]) -> None:
        self.outputs = outputs

    def __getitem__(self, pair: tuple[str, str]) -> Any:
        return self.outputs[pair[0]].values[pair[1]]


class SharedTaskFailed(NodegraphError):
    """A node of a shared task failed. ``shared_output`` holds what finished, and the
    failures by node; the engine reports each node on its own."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.shared_output: SharedOutput | None = None


def locks_its_key(node_type: NodeType) -> bool:
    """Whether a node of this type holds its key's lock while it computes and stores.

    A node declared ``cost="cheap"`` does not: its lock (a lock file, a Redis round
    trip) costs more than computing it, so two runs that meet on its key both compute
    it rather than one waiting. Its entry is written atomically all the same.
    """
    return node_type.cost != "cheap"


def _lock_key(fused: FusedNode) -> str | None:
    return fused.cache_key if locks_its_key(fused.node_type) else None


RunNode = Callable[[FusedNode, dict[str, Upstream]], NodeOutput]
"""Runs one node of a shared task with its inputs resolved (the backend's node call)."""

Hold = Callable[[Iterable[str | None]], ContextManager[None]]
"""Holds the node-key locks of the keys for a block (a no-op without locks)."""


_UNLOCKED = contextlib.nullcontext()


def _no_locks(keys: Iterable[str | None]) -> ContextManager[None]:
    return _UNLOCKED


class SharedRun:
    """How a backend runs a shared task's nodes: the node call, the lock holder, the
    halt gate, and the cache reads and writes of its nodes' entries."""

    __slots__ = ("hold", "run_node", "stopped", "store", "stored_meanwhile")

    def __init__(
        self,
        run_node: RunNode,
        hold: Hold = _no_locks,
        stopped: Callable[[], bool] = lambda: False,
        store: Callable[[FusedNode, NodeOutput], None] = lambda fused, output: None,
        stored_meanwhile: Callable[[FusedNode], tuple[NodeOutput, str] | None] = lambda f: None,
    ) -> None:
        self.run_node = run_node
        self.hold = hold
        self.stopped = stopped
        self.store = store
        self.stored_meanwhile = stored_meanwhile


def execute_shared(task: SharedTask, external: Mapping[str, Any], how: SharedRun) -> SharedOutput:
    """Run the nodes of a fused segment inline, in order, or a batch as one call.

    Every node keeps its own input and output checks, timing and error: a failure is
    recorded against its node, the nodes inside the task that depend on it do not run,
    and the others go on (a ``halt`` node's failure stops the task). Each finished node
    is stored under its own cache key. If any node failed this raises
    ``SharedTaskFailed`` (so a runner shows the task failed), carrying what finished.

    With node-key locks, as Prefect's SERIALIZABLE isolation does for a task of its
    own, a node runs and stores while holding its key's lock, and after taking the lock
    it reads the key first: another run may have stored it meanwhile. A chain holds one
    lock at a time; a batch takes its keys in sorted order.
    """
    result = SharedOutput()
    if task.kind == "batch":
        with how.hold([_lock_key(fused) for fused in task.nodes]):
            _run_batch(task, external, result, how)
    else:
        with gc_paused():  # the nodes' own objects are collected after, if need be
            _run_chain(task, external, result, how)
    for node_id, output in result.outputs.items():
        if node_id not in task.keep:
            output.values = {}
    if result.failures:
        failed = ", ".join(
            f"node {n!r}: {type(e).__name__}: {e}" for n, e in result.failures.items()
        )
        error = SharedTaskFailed(f"{len(result.failures)} node(s) failed in this task: {failed}")
        error.shared_output = result
        raise error
    return result


def _producer_output(
    node_id: str, done: dict[str, NodeOutput], external: Mapping[str, Any]
) -> NodeOutput:
    found = done.get(node_id)
    if found is not None:
        return found
    produced = external[node_id]
    return produced.output_of(node_id) if isinstance(produced, SharedOutput) else produced


def _upstream_of(
    fused: FusedNode, done: dict[str, NodeOutput], external: Mapping[str, Any]
) -> dict[str, Upstream]:
    """A fused node's inputs as a node call takes them: producers named by id replaced
    by their outputs."""
    return {
        port: (
            (producer, None, transform)
            if source_port is None
            else (_producer_output(producer, done, external), source_port, transform)
        )
        for port, (producer, source_port, transform) in fused.upstream.items()
    }


def _meanwhile(fused: FusedNode, result: SharedOutput, how: SharedRun) -> bool:
    found = how.stored_meanwhile(fused)
    if found is None:
        return False
    result.outputs[fused.node_id], result.cached[fused.node_id] = found
    return True


def _finished(fused: FusedNode, output: NodeOutput, result: SharedOutput, how: SharedRun) -> None:
    result.outputs[fused.node_id] = output
    if fused.cache_key is not None:
        how.store(fused, output)


def _run_chain(
    task: SharedTask, external: Mapping[str, Any], result: SharedOutput, how: SharedRun
) -> None:
    done = result.outputs
    blocked: set[str] = set()
    left = {n: len(c) for n, c in task.consumers.items()}
    for fused in task.nodes:
        node_id = fused.node_id
        if node_id in blocked:
            blocked.update(task.consumers.get(node_id, ()))
            continue
        if how.stopped():
            return  # the rest stays unreported here: the engine marks it pending
        locked = _lock_key(fused)
        with _UNLOCKED if locked is None else how.hold([locked]):
            if locked is None or not _meanwhile(fused, result, how):
                try:
                    output = how.run_node(fused, _upstream_of(fused, done, external))
                except Exception as exc:
                    result.failures[node_id] = exc
                    blocked.update(task.consumers.get(node_id, ()))
                    if fused.halts:
                        return
                    continue
                _finished(fused, output, result, how)
        # Release producers inside the task whose last consumer here has run.
        for producer in {p for p, port, _ in fused.upstream.values() if port is not None}:
            if producer in left:
                left[producer] -= 1
                if left[producer] == 0 and producer not in task.keep and producer in done:
                    done[producer].values = {}


def _run_batch(
    task: SharedTask, external: Mapping[str, Any], result: SharedOutput, how: SharedRun
) -> None:
    node_type = task.nodes[0].node_type
    if how.stopped():
        return
    # A batch function sees every port, as the node function would with its defaults.
    defaults = {name: p.default for name, p in node_type.inputs.items() if not p.required}
    ready: list[tuple[FusedNode, dict[str, Any]]] = []
    for fused in task.nodes:
        if _lock_key(fused) is not None and _meanwhile(fused, result, how):
            continue
        try:
            upstream = _upstream_of(fused, {}, external)
            values = gather_inputs(node_type, fused.node_id, fused.literals, upstream)
            ready.append((fused, {**defaults, **values}))
        except Exception as exc:
            result.failures[fused.node_id] = exc
    if not ready:
        return
    assert node_type.batch is not None
    start = perf_counter()
    try:
        returned = list(node_type.batch([values for _, values in ready]))
        if len(returned) != len(ready):
            raise NodeOutputError(
                f"batch function of {node_type.qualified_name!r} returned {len(returned)} "
                f"result(s) for {len(ready)} input set(s)"
            )
    except Exception as exc:
        elapsed = perf_counter() - start
        for fused, _ in ready:
            annotate(exc, elapsed, 1)
            result.failures[fused.node_id] = exc
        return
    share = (perf_counter() - start) / len(ready)
    for (fused, _), value in zip(ready, returned, strict=True):
        try:
            outputs = node_type.split_outputs(value)
        except Exception as exc:
            result.failures[fused.node_id] = exc
            continue
        error = output_error(node_type, fused.node_id, outputs)
        if error is not None:
            result.failures[fused.node_id] = error
            continue
        _finished(fused, NodeOutput(outputs, share), result, how)
