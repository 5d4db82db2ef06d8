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

from integration.engine.units import (
    FusedNode,
    NodeNotStarted,
    NodeOutput,
    SharedOutput,
    SharedRun,
    SharedTask,
    Upstream,
    annotate,
    gather_inputs,
    output_error,
)
from integration.engine.units import execute_shared as run_shared
from integration.graph.context import ExecutionContext, NodeHooks
from integration.graph.nodetype import NodeType
from integration.graph.policy import RetryPolicy
from integration.graph.validate import BoundNode
from integration.observability.measure import NodeMeasurement
from integration.observability.tracing import current_from
from integration.prefect.locking import holding
from integration.prefect.storage import NodeKeyPolicy, load_cached_value, store_result
from integration.timeouts import call_with_timeout, invoke_in_process

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
    values = gather_inputs(node_type, node_id, literals, upstream)
    run_context = TaskRunContext.get()
    if _stopped_runs and run_context and str(run_context.task_run.flow_run_id) in _stopped_runs:
        raise NodeNotStarted(f"node {node_id!r} did not start: the run stopped scheduling")
    context = task_context(node_id, node_type.qualified_name) if node_type.context_param else None
    attempt = run_context.task_run.run_count if run_context and run_context.task_run else 1
    timeout = run_context.task.timeout_seconds if run_context else None
    start = perf_counter()
    measurement = None
    try:
        if observe is None:  # nothing to measure or trace: fused nodes run this way
            outputs = _call_node(node_type, node_id, values, context, kill_after, timeout)
        else:
            measurement = NodeMeasurement(bool(observe.get("profile")), bool(observe.get("size")))
            with current_from(observe.get("trace")), measurement:
                outputs = _call_node(node_type, node_id, values, context, kill_after, timeout)
    except BaseException as exc:
        annotate(exc, perf_counter() - start, attempt)
        exc.nodegraph_measured = measurement.result if measurement else None  # type: ignore[attr-defined]
        raise
    elapsed = perf_counter() - start
    error = output_error(node_type, node_id, outputs)
    if error is not None:
        annotate(error, elapsed, attempt)
        raise error
    measured = measurement.finish(outputs) if measurement else None
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


NODE_HOOKS: dict[str, NodeHooks] = {}
"""Per flow run id, where nodes running in this process send ``context.progress`` and
``context.preview``."""


def task_context(node_id: str, node_type: str) -> ExecutionContext:
    """The ``ExecutionContext`` of a node running in the current Prefect task run."""
    run_context = TaskRunContext.get()
    execution_id = str(run_context.task_run.flow_run_id) if run_context else ""
    hooks = NODE_HOOKS.get(execution_id) or NodeHooks()
    return ExecutionContext(
        execution_id=execution_id,
        node_id=node_id,
        node_type=node_type,
        logger=get_run_logger(),
        progress_hook=hooks.progress,
        preview_hook=hooks.preview,
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
    task.tags = node_tags(node, tag_type)
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


def node_tags(node: BoundNode, tag_type: bool = True) -> set[str]:
    """A node's task-run tags: its own, and with ``tag_type`` its type's and pack's."""
    tags = set(node.tags)
    if tag_type:
        tags.add(node.type.qualified_name)
        if node.type.pack:
            tags.add(pack_tag(node.type.pack))
    return tags


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


def execute_shared(task: SharedTask, external: dict[str, Any]) -> SharedOutput:
    """Run a fused segment or a batch (see ``integration.engine.units.execute_shared``)
    inside its Prefect task: each node through ``execute_node``, under the node-key
    locks of the run's cache policy, gated by the run's halt, and stored under its own
    key in the run's result storage."""
    hierarchy = task.storage.hierarchy() if task.storage is not None else None
    run_context = TaskRunContext.get()
    flow_run_id = str(run_context.task_run.flow_run_id) if run_context else None

    def run_node(fused: FusedNode, upstream: dict[str, Upstream]) -> NodeOutput:
        return execute_node(
            fused.node_type, fused.node_id, fused.literals, upstream, observe=fused.observe
        )

    def store(fused: FusedNode, output: NodeOutput) -> None:
        if hierarchy is not None and fused.cache_key is not None:
            _store(hierarchy, fused.cache_key, output)

    def stored_meanwhile(fused: FusedNode) -> tuple[NodeOutput, str] | None:
        key = fused.cache_key
        if task.locks is None or hierarchy is None or key is None or task.refresh:
            return None
        if hierarchy.locate(key) is None:
            return None
        found = load_cached_value(hierarchy, key)
        return None if found is None else (found[0], found[1])

    how = SharedRun(
        run_node,
        stopped=lambda: _stopped(flow_run_id),
        store=store,
        stored_meanwhile=stored_meanwhile,
    )
    if task.locks is not None:  # else SharedRun's shared no-op
        locks = task.locks
        how.hold = lambda keys: holding(locks, keys)
    return run_shared(task, external, how)


def _store(hierarchy: Any, key: str, output: NodeOutput) -> None:
    try:
        store_result(hierarchy, key, output)
    except Exception as exc:  # an unpicklable output: the node is done, uncached
        logging.getLogger("nodegraph.cache").warning("could not cache %s: %s", key, exc)


def _stopped(flow_run_id: str | None) -> bool:
    return bool(_stopped_runs) and flow_run_id in _stopped_runs


SHARED_TASK: Task[..., SharedOutput] = Task(
    fn=execute_shared, name="segment", cache_policy=NO_CACHE, persist_result=False
)


def shared_task(head: str, run_name: str, tags: Iterable[str]) -> Task[..., SharedOutput]:
    """The Prefect task of a fused segment or a batch: its task runs are named after
    its nodes (``a→b→c``); the task itself after its first node, under which the Dask
    runner finds the resources that every node of the task shares."""
    task = copy.copy(SHARED_TASK)
    task.name = head
    task.task_run_name = run_name
    task.tags = set(tags)
    return task
