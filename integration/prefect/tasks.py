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
from collections.abc import Callable, Iterable, Mapping
from time import perf_counter
from typing import Any

from prefect import Task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from prefect.logging import get_run_logger

from integration.errors import ErrorType, NodegraphError, NodeInputError, NodeOutputError
from integration.graph.context import ExecutionContext, ProgressHook
from integration.graph.gcpause import gc_paused
from integration.graph.nodetype import NodeType
from integration.graph.policy import RetryPolicy
from integration.graph.transforms import TransformSpec, apply_transform
from integration.graph.validate import BoundNode
from integration.observability.measure import Measured, NodeMeasurement
from integration.observability.tracing import current_from
from integration.prefect.locking import holding
from integration.prefect.storage import NodeKeyPolicy, load_cached_value, store_result
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
    values = gather_inputs(node_type, node_id, literals, upstream)
    run_context = TaskRunContext.get()
    if _stopped_runs and run_context and str(run_context.task_run.flow_run_id) in _stopped_runs:
        raise NodeNotStarted(f"node {node_id!r} did not start: the run stopped scheduling")
    context = _context(node_type, node_id) if node_type.context_param else None
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
        _annotate(exc, perf_counter() - start, attempt)
        exc.nodegraph_measured = measurement.result if measurement else None  # type: ignore[attr-defined]
        raise
    elapsed = perf_counter() - start
    error = output_error(node_type, node_id, outputs)
    if error is not None:
        _annotate(error, elapsed, attempt)
        raise error
    measured = measurement.finish(outputs) if measurement else None
    return NodeOutput(outputs, elapsed, max(attempt, 1), measured)


def output_error(
    node_type: NodeType, node_id: str, outputs: Mapping[str, Any]
) -> NodeOutputError | None:
    """The error for outputs that do not match their declared types, if any."""
    problems = node_type.check_outputs(outputs)
    return NodeOutputError(f"node {node_id!r}: " + "; ".join(problems)) if problems else None


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
    the cache holds, as the run asked."""

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
    """A fused node's inputs as ``execute_node`` takes them: producers named by id
    replaced by their outputs."""
    return {
        port: (
            (producer, None, transform)
            if source_port is None
            else (_producer_output(producer, done, external), source_port, transform)
        )
        for port, (producer, source_port, transform) in fused.upstream.items()
    }


def execute_shared(task: SharedTask, external: dict[str, Any]) -> SharedOutput:
    """Run the nodes of a fused segment inline, in order, or a batch as one call.

    Every node keeps its own input and output checks, timing and error: a failure is
    recorded against its node, the nodes inside the task that depend on it do not run,
    and the others go on (a ``halt`` node's failure stops the task). Each finished node
    is stored under its own cache key. If any node failed the task raises
    ``SharedTaskFailed`` (so the Prefect UI shows it failed), carrying what finished.

    With node-key locks (``task.locks``), as Prefect's SERIALIZABLE isolation does for
    a task of its own, a node runs and stores while holding its key's lock, and after
    taking the lock it reads the key first: another run may have stored it meanwhile.
    A chain holds one lock at a time; a batch takes its keys in sorted order.
    """
    result = SharedOutput()
    hierarchy = task.storage.hierarchy() if task.storage is not None else None
    run_context = TaskRunContext.get()
    flow_run_id = str(run_context.task_run.flow_run_id) if run_context else None

    def finished(fused: FusedNode, output: NodeOutput) -> None:
        result.outputs[fused.node_id] = output
        if hierarchy is not None and fused.cache_key is not None:
            _store(hierarchy, fused.cache_key, output)

    def stored_meanwhile(fused: FusedNode) -> bool:
        key = fused.cache_key
        if task.locks is None or hierarchy is None or key is None or task.refresh:
            return False
        if hierarchy.locate(key) is None:
            return False
        found = load_cached_value(hierarchy, key)
        if found is None:
            return False
        result.outputs[fused.node_id], result.cached[fused.node_id], _ = found
        return True

    if task.kind == "batch":
        with holding(task.locks, [fused.cache_key for fused in task.nodes]):
            _run_batch(task, external, result, flow_run_id, finished, stored_meanwhile)
    else:
        with gc_paused():  # the nodes' own objects are collected after, if need be
            _run_chain(task, external, result, flow_run_id, finished, stored_meanwhile)
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


def _store(hierarchy: Any, key: str, output: NodeOutput) -> None:
    try:
        store_result(hierarchy, key, output)
    except Exception as exc:  # an unpicklable output: the node is done, uncached
        logging.getLogger("nodegraph.cache").warning("could not cache %s: %s", key, exc)


Finished = Callable[[FusedNode, NodeOutput], None]
StoredMeanwhile = Callable[[FusedNode], bool]


def _stopped(flow_run_id: str | None) -> bool:
    return bool(_stopped_runs) and flow_run_id in _stopped_runs


def _run_chain(
    task: SharedTask,
    external: dict[str, Any],
    result: SharedOutput,
    flow_run_id: str | None,
    finished: Finished,
    stored_meanwhile: StoredMeanwhile,
) -> None:
    done = result.outputs
    blocked: set[str] = set()
    left = {n: len(c) for n, c in task.consumers.items()}
    for fused in task.nodes:
        node_id = fused.node_id
        if node_id in blocked:
            blocked.update(task.consumers.get(node_id, ()))
            continue
        if _stopped(flow_run_id):
            return  # the rest stays unreported here: the engine marks it pending
        with holding(task.locks, [fused.cache_key]):
            if not stored_meanwhile(fused):
                try:
                    upstream = _upstream_of(fused, done, external)
                    output = execute_node(
                        fused.node_type, node_id, fused.literals, upstream, observe=fused.observe
                    )
                except Exception as exc:
                    result.failures[node_id] = exc
                    blocked.update(task.consumers.get(node_id, ()))
                    if fused.halts:
                        return
                    continue
                finished(fused, output)
        # Release producers inside the task whose last consumer here has run.
        for producer in {p for p, port, _ in fused.upstream.values() if port is not None}:
            if producer in left:
                left[producer] -= 1
                if left[producer] == 0 and producer not in task.keep and producer in done:
                    done[producer].values = {}


def _run_batch(
    task: SharedTask,
    external: dict[str, Any],
    result: SharedOutput,
    flow_run_id: str | None,
    finished: Finished,
    stored_meanwhile: StoredMeanwhile,
) -> None:
    node_type = task.nodes[0].node_type
    if _stopped(flow_run_id):
        return
    # A batch function sees every port, as the node function would with its defaults.
    defaults = {name: p.default for name, p in node_type.inputs.items() if not p.required}
    ready: list[tuple[FusedNode, dict[str, Any]]] = []
    for fused in task.nodes:
        if stored_meanwhile(fused):
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
            _annotate(exc, elapsed, 1)
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
        finished(fused, NodeOutput(outputs, share))


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
