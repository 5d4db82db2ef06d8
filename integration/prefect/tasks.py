"""One Prefect task per node: the task body and how its task is configured.

    >>> from integration.prefect.tasks import node_task
    >>> # node_task(bound_node) -> a Task named after the node id, tagged with its type
    >>> pack_tag("core")
    'pack:core'

The body is a module-level function, so process pools and remote workers import it by
reference; the ``NodeType`` it receives pickles by pack reference (see the registry).
"""

from __future__ import annotations

import contextvars
import copy
import logging
from collections.abc import Iterable, Mapping
from time import perf_counter
from typing import Any

from prefect import Task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from prefect.logging import get_run_logger

from integration.errors import ErrorType, NodegraphError, NodeInputError, NodeOutputError
from integration.graph.context import ExecutionContext, ProgressHook
from integration.graph.nodetype import NodeType
from integration.graph.policy import RetryPolicy
from integration.graph.transforms import TransformSpec, apply_transform
from integration.graph.validate import BoundNode
from integration.observability.measure import Measured, NodeMeasurement
from integration.observability.tracing import current_from
from integration.prefect.storage import NodeKeyPolicy
from integration.timeouts import call_with_timeout, invoke_in_process

Upstream = tuple[Any, str | None, TransformSpec | None]
"""How an input arrives: ``(producer, port, transform)``.

The producer is an upstream ``NodeOutput`` (or a future of one, which Prefect resolves
before the body runs) read at ``port``; with ``port=None`` it is the value itself, as
for graph inputs.
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
        measured: Measured | None = None,
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


_stopped_runs: set[str] = set()
"""Flow runs that start no more nodes: a node task submitted early (prefetched) checks
this before it begins. In this process only: a process pool may still start a node it
had already received."""


def stop_starting_nodes(flow_run_id: str, stop: bool = True) -> None:
    """Close (or, with ``stop=False``, reopen) the gate of a flow run's node tasks."""
    if stop:
        _stopped_runs.add(flow_run_id)
    else:
        _stopped_runs.discard(flow_run_id)


class TransformError(NodegraphError, ValueError):
    """An edge transform could not convert the value it received."""

    error_type = NodeInputError.error_type


def execute_node(
    node_type: NodeType,
    node_id: str,
    literals: dict[str, Any],
    upstream: dict[str, Upstream],
    cache_key: str | None = None,
    kill_after: float | None = None,
    observe: dict[str, Any] | None = None,
) -> NodeOutput:
    """Gather a node's inputs, check them, run the node and time it.

    ``cache_key`` is not used here: ``NodeKeyPolicy`` reads it as the Prefect cache key.
    The task's ``timeout_seconds`` is enforced here on a thread (see
    ``integration.timeouts``); ``kill_after`` runs the node in a child process instead,
    killed after that many seconds. ``observe`` (from the run's instruments) asks for a
    profile of the call and carries the node span's trace context, made current while
    the node runs.
    """
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
    run_context = TaskRunContext.get()
    if _stopped_runs and run_context and str(run_context.task_run.flow_run_id) in _stopped_runs:
        raise NodeNotStarted(f"node {node_id!r} did not start: the run stopped scheduling")
    context = _context(node_type, node_id) if node_type.context_param else None
    attempt = run_context.task_run.run_count if run_context and run_context.task_run else 1
    timeout = run_context.task.timeout_seconds if run_context else None
    start = perf_counter()
    measurement = NodeMeasurement(
        bool(observe and observe.get("profile")), bool(observe and observe.get("size"))
    )
    try:
        with current_from(observe.get("trace") if observe else None), measurement:
            outputs = _call_node(node_type, node_id, values, context, kill_after, timeout)
    except BaseException as exc:
        _annotate(exc, perf_counter() - start, attempt)
        exc.nodegraph_measured = measurement.result  # type: ignore[attr-defined]
        raise
    elapsed = perf_counter() - start
    problems = node_type.check_outputs(outputs)
    if problems:
        error = NodeOutputError(f"node {node_id!r}: " + "; ".join(problems))
        _annotate(error, elapsed, attempt)
        raise error
    measured = measurement.finish(outputs) if observe else None
    return NodeOutput(outputs, elapsed, max(attempt, 1), measured)


def _call_node(
    node_type: NodeType,
    node_id: str,
    values: dict[str, Any],
    context: ExecutionContext | None,
    kill_after: float | None,
    timeout: float | None,
) -> dict[str, Any]:
    if kill_after is not None:
        invocation = ChildInvocation(node_type, node_id, context.execution_id if context else "")
        return invoke_in_process(invocation, values, kill_after, what=f"node {node_id!r}")
    if timeout is None:
        return node_type.invoke(values, context)
    return call_with_timeout(
        lambda: node_type.invoke(values, context),
        timeout,
        context.stop_requested.set if context else None,
        what=f"node {node_id!r}",
    )


class ChildInvocation:
    """Run a node in a child process (``kill_after``), with a context of its own
    whose logger is a plain ``logging`` logger: Prefect's run logger stays behind."""

    def __init__(self, node_type: NodeType, node_id: str, execution_id: str) -> None:
        self.node_type = node_type
        self.node_id = node_id
        self.execution_id = execution_id

    def __call__(self, values: Mapping[str, Any]) -> dict[str, Any]:
        context = None
        if self.node_type.context_param:
            context = ExecutionContext(
                execution_id=self.execution_id,
                node_id=self.node_id,
                node_type=self.node_type.qualified_name,
                logger=logging.getLogger(f"nodegraph.node.{self.node_id}"),
            )
        return self.node_type.invoke(values, context)


def _annotate(exc: BaseException, seconds: float, attempt: int) -> None:
    try:
        exc.nodegraph_duration_s = seconds  # type: ignore[attr-defined]
        exc.nodegraph_attempts = max(attempt, 1)  # type: ignore[attr-defined]
    except AttributeError:
        pass


class RetryCondition:
    """Prefect's ``retry_condition_fn`` for a ``RetryPolicy``: retry what qualifies.

    A class rather than a closure, so process pools can pickle it with the task.
    """

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy

    def __call__(self, task: Any, task_run: Any, state: Any) -> bool:
        data = state.data
        exc = data if isinstance(data, BaseException) else state.result(raise_on_failure=False)
        return isinstance(exc, BaseException) and self.policy.qualifies(exc)

    def __repr__(self) -> str:
        return f"RetryCondition(on={list(self.policy.on)})"


PROGRESS_HOOKS: dict[str, ProgressHook] = {}
"""Per flow run id, where nodes running in this process send ``context.progress``."""


def _context(node_type: NodeType, node_id: str) -> ExecutionContext:
    run_context = TaskRunContext.get()
    execution_id = str(run_context.task_run.flow_run_id) if run_context else ""
    return ExecutionContext(
        execution_id=execution_id,
        node_id=node_id,
        node_type=node_type.qualified_name,
        logger=get_run_logger(),
        progress_hook=PROGRESS_HOOKS.get(execution_id),
    )


class _EngineEnforcedTimeout(logging.Filter):
    """Drops Prefect's warning that a timeout cannot interrupt a worker thread: for node
    tasks the engine enforces the timeout itself (``integration.timeouts``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            isinstance(record.msg, str)
            and record.msg.startswith("Timeout of %s seconds configured for this task")
        )


logging.getLogger("prefect.task_runs").addFilter(_EngineEnforcedTimeout())

NODE_TASK: Task[..., NodeOutput] = Task(
    fn=execute_node,
    name="node",
    # Caching arrives with the node-key cache policy; until then nothing is hashed or
    # persisted, which also keeps unhashable values (arrays, handles) out of trouble.
    cache_policy=NO_CACHE,
    persist_result=False,
)


def node_task(
    node: BoundNode,
    tag_type: bool = True,
    storage: Any = None,
    refresh: bool = False,
    policy: Any = None,
    retry: RetryPolicy | None = None,
    timeout_seconds: float | None = None,
) -> Task[..., NodeOutput]:
    """The Prefect task of one node: named after the node, tagged with its type and
    its pack (``core.add`` and ``pack:core``).

    Equivalent to ``NODE_TASK.with_options(name=..., task_run_name=..., tags=...)``, but
    ``with_options`` re-reads the function's source (``inspect.getsource``) for every
    copy, about 1-2 ms a node; a shallow copy with the fields set costs microseconds,
    so building a 10,000-node flow stays fast.

    Prefect asks the server for tag concurrency slots for every task run that has
    tags (a round trip per node), so ``tag_type=False`` leaves the type and pack tags
    off; together they cost the same single round trip.

    With ``storage`` (a ``TieredResultStorage``), the result is persisted under the
    node's cache key; ``refresh`` recomputes and overwrites instead of reading it.
    ``retry`` sets Prefect's retries, per-retry delays, jitter and retry condition;
    ``timeout_seconds`` its timeout, which ``execute_node`` enforces on every runner.
    """
    task = copy.copy(NODE_TASK)
    task.name = node.id
    task.task_run_name = node.id
    task.tags = set(node.tags)
    if tag_type:
        task.tags.add(node.type.qualified_name)
        if node.type.pack:
            task.tags.add(pack_tag(node.type.pack))
    if storage is not None:
        task.cache_policy = policy if policy is not None else NodeKeyPolicy()
        task.persist_result = True
        task.result_storage = storage  # see integration.prefect.storage on why unsaved
        task.refresh_cache = refresh
    if retry is not None and retry.attempts > 0:
        task.retries = retry.attempts
        task.retry_delay_seconds = retry.delays()
        task.retry_jitter_factor = retry.jitter or None
        task.retry_condition_fn = RetryCondition(retry)
    task.timeout_seconds = timeout_seconds
    return task


def pack_tag(pack: str) -> str:
    """The task tag of a node pack, namespaced apart from type tags and users' own."""
    return f"pack:{pack}"


def start_tag_services(tag_sets: Iterable[frozenset[str]]) -> None:
    """Start Prefect's tag-concurrency services for these tag sets from an empty context.

    Prefect starts the service for a set of tags lazily, inside the first task run that
    has them, and the service's asyncio task keeps that run's context for the life of
    the process: its parameters, and through them that node's upstream outputs. Started
    here first, from a context of its own, no task run's context is kept.
    """
    from prefect.concurrency.services import ConcurrencySlotAcquisitionWithLeaseService

    for tags in tag_sets:
        if tags:
            names = frozenset(f"tag:{tag}" for tag in tags)
            contextvars.Context().run(ConcurrencySlotAcquisitionWithLeaseService.instance, names)


def fallback_task(
    node: BoundNode, fallback_type: NodeType, timeout_seconds: float | None = None
) -> Task[..., NodeOutput]:
    """The task that runs ``fallback_type`` in place of a failed node: no retries, and
    never persisted, since its result is not the node's own."""
    task = copy.copy(NODE_TASK)
    task.name = task.task_run_name = f"{node.id}.fallback"
    task.tags = {fallback_type.qualified_name, *node.tags}
    task.timeout_seconds = timeout_seconds
    return task
