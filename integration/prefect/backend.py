"""Prefect as the engine's backend: a task per unit on the strategy's runner.

    >>> # backend = PrefectBackend(tasks, sequential=False, flow_run_id=...)
    >>> # Scheduler(plan, backend, inputs, ...).run()

Units are Prefect tasks: a node's own task (``NodeTasks``: the plain, persisted and
refreshing variants, and its fallback's), a shared task for a fused segment or a
batch, or a ComfyUI node call (``ComfyTasks``: one task per class, each run named
``<class> #<node id>``). On the sequential strategy each is called directly in the flow's thread; on
the others it is submitted to the flow's task runner (threads, the warm process pool,
Dask), and its future is the handle consumers receive, so the runner resolves inputs
where the consumer runs. Retries and timeouts are the tasks' own settings.
"""

from __future__ import annotations

import asyncio
import copy
import queue
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from prefect import Task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.exceptions import UpstreamTaskError
from prefect.futures import PrefectFuture
from prefect.results import ResultRecord
from prefect.states import State

from integration.comfy.execution import COMFY_KIND, NodeCall, execute_call
from integration.engine.backend import Completion, Submission
from integration.engine.units import NodeOutput, locks_its_key
from integration.graph.context import running_node
from integration.graph.policy import ErrorPolicy, RetryPolicy
from integration.graph.validate import BoundNode
from integration.prefect.storage import NodeKeyPolicy, TieredResultStorage
from integration.prefect.tasks import (
    RetryCondition,
    fallback_task,
    node_tags,
    node_task,
    pack_tag,
    shared_task,
    stop_starting_nodes,
    task_context,
)


def execute_comfy_call(call: NodeCall, observe: Mapping[str, Any] | None = None) -> NodeOutput:
    """``execute_call`` with the node's context current, so that a pack's
    ``comfy.utils.ProgressBar`` and a nodegraph type's ``context`` reach the run's
    progress and preview hooks."""
    with running_node(task_context(call.node_id, call.class_type)):
        return execute_call(call, observe)


COMFY_TASK: Task[..., NodeOutput] = Task(
    fn=execute_comfy_call,
    name="comfy-node",
    # The ComfyUI program stores each node's final result under its content key: an
    # expanded node's task returns its expansion, which is not the key's result.
    cache_policy=NO_CACHE,
    persist_result=False,
)


class NodeTasks:
    """A node's Prefect task variants, built on first use.

    The plain variant neither hashes nor persists; the cached one persists its result
    under the node key through ``storage``; ``refresh`` recomputes and overwrites.
    ``error_policy`` is the node's effective policy (its own, its type's, the config's).
    With ``kill_on_timeout`` the engine kills the node's process at its timeout (see
    ``integration.timeouts``), and the Prefect task carries no timeout of its own.
    """

    __slots__ = (
        "_built",
        "error_policy",
        "key_policy",
        "kill_on_timeout",
        "node",
        "storage",
        "tag_type",
    )

    def __init__(
        self,
        node: BoundNode,
        tag_type: bool,
        storage: TieredResultStorage | None,
        key_policy: Any = None,
        error_policy: ErrorPolicy | None = None,
        kill_on_timeout: bool = False,
    ) -> None:
        self.node = node
        self.kill_on_timeout = kill_on_timeout
        self.tag_type = tag_type
        self.storage = storage
        self.key_policy = key_policy
        self.error_policy = error_policy or ErrorPolicy()
        self._built: dict[Any, Task[..., NodeOutput]] = {}

    def get(self, cached: bool, refresh: bool = False) -> Task[..., NodeOutput]:
        cached = cached and self.storage is not None
        variant = (cached, refresh and cached)
        task = self._built.get(variant)
        if task is None:
            storage = self.storage if cached else None
            policy = self.key_policy
            if policy is not None and not locks_its_key(self.node.type):
                policy = NodeKeyPolicy()  # the key without its lock
            task = node_task(
                self.node,
                self.tag_type,
                storage,
                refresh=variant[1],
                policy=policy,
                retry=self.error_policy.retry,
                timeout_seconds=self.thread_timeout,
            )
            self._built[variant] = task
        return task

    @property
    def thread_timeout(self) -> float | None:
        return None if self.kill_on_timeout else self.error_policy.timeout_seconds

    @property
    def kill_after(self) -> float | None:
        """The timeout the engine enforces by killing the node's process, if it does."""
        return self.error_policy.timeout_seconds if self.kill_on_timeout else None

    def fallback(self) -> Task[..., NodeOutput]:
        task = self._built.get("fallback")
        if task is None:
            assert self.node.fallback_type is not None
            task = fallback_task(self.node, self.node.fallback_type, self.thread_timeout)
            self._built["fallback"] = task
        return task


class ComfyTasks:
    """The Prefect tasks of ComfyUI node calls: one per class, with the run's retries
    and timeout (the config's default policy) and, with ``tag_types``, the class's
    type and pack tags. Each call takes the instruments' ``observe`` request with it,
    so the worker measures and traces the node as it does a graph node."""

    def __init__(self, policy: ErrorPolicy | None = None, tag_types: bool = True) -> None:
        policy = policy or ErrorPolicy()
        self.retry: RetryPolicy | None = policy.retry
        self.timeout = policy.timeout_seconds
        self.tag_types = tag_types
        self._tasks: dict[str, Task[..., NodeOutput]] = {}

    def get(self, call: NodeCall) -> Task[..., NodeOutput]:
        # A shallow copy per class: with_options re-reads the function source each time.
        task = self._tasks.get(call.class_type)
        if task is None:
            task = copy.copy(COMFY_TASK)
            task.name = call.class_type
            task.tags = set()
            if self.tag_types:
                task.tags.add(call.node_type.qualified_name)
                if call.node_type.pack:
                    task.tags.add(pack_tag(call.node_type.pack))
            if self.retry is not None and self.retry.attempts > 0:
                task.retries = self.retry.attempts
                task.retry_delay_seconds = self.retry.delays()
                task.retry_jitter_factor = self.retry.jitter or None
                task.retry_condition_fn = RetryCondition(self.retry)
            task.timeout_seconds = self.timeout
            self._tasks[call.class_type] = task
        named = copy.copy(task)
        named.task_run_name = call.name
        return named


class PrefectBackend:
    """Runs the engine's units as Prefect tasks inside the running flow.

    ``sequential``: each task is called in this thread when submitted, one at a
    time; otherwise tasks are submitted to the flow's runner and their futures are
    the handles. ``terminate`` stops running work where the runner can (the process
    pool's processes); ``flow_run_id`` names the run whose early-submitted tasks
    check the start gate; ``comfy`` builds the tasks of ComfyUI node calls.
    """

    def __init__(
        self,
        tasks: Mapping[str, NodeTasks],
        *,
        sequential: bool,
        refresh: bool = False,
        flow_run_id: str | None = None,
        terminate: Callable[[], None] | None = None,
        comfy: ComfyTasks | None = None,
    ) -> None:
        self.tasks = tasks
        self.comfy = comfy
        self.sequential = sequential
        self.prefetch = not sequential
        self.keeps_handles = not sequential
        self.max_in_flight: int | None = 1 if sequential else None
        self.refresh = refresh
        self.flow_run_id = flow_run_id
        self.terminate = terminate
        self._done: deque[Completion] = deque()
        self._finished: queue.SimpleQueue[tuple[str, bool, str, PrefectFuture[Any]] | None] = (
            queue.SimpleQueue()
        )

    def _task(
        self, submission: Submission, fallback: bool
    ) -> tuple[Task[..., Any], dict[str, Any]]:
        arguments = submission.arguments
        if fallback:
            return self.tasks[submission.unit].fallback(), arguments
        if submission.kind == "node":
            task = self.tasks[submission.unit].get(
                cached=arguments["cache_key"] is not None, refresh=self.refresh
            )
            return task, arguments
        if submission.kind == COMFY_KIND:
            if self.comfy is None:
                raise ValueError(
                    f"unit {submission.unit!r} is a ComfyUI node call, but this backend "
                    "was built without comfy= tasks"
                )
            call = arguments["call"]
            return self.comfy.get(call), {"call": call, "observe": arguments.get("observe")}
        spec = arguments["task"]
        tags: set[str] = set()
        for fused in spec.nodes:
            node_tasks = self.tasks[fused.node_id]
            if fused.cache_key is not None and spec.storage is None:
                spec.storage = node_tasks.storage
                spec.locks = getattr(node_tasks.key_policy, "lock_manager", None)
            tags |= node_tags(node_tasks.node, node_tasks.tag_type)
        task = shared_task(submission.unit, arguments["name"], tags)
        return task, {"task": spec, "external": arguments["external"]}

    def submit(self, submission: Submission, fallback: bool = False) -> Any:
        task, arguments = self._task(submission, fallback)
        if self.sequential:
            state = task(**arguments, return_state=True)
            completion = _completion(submission, fallback, state, None)
            self._done.append(completion)
            return completion.value if completion.ok else None
        future = task.submit(**arguments)
        unit, kind = submission.unit, submission.kind
        future.add_done_callback(lambda f: self._finished.put((unit, fallback, kind, f)))
        return future

    def wait_any(self) -> Completion | None:
        if self._done:
            return self._done.popleft()
        item = self._finished.get()
        if item is None:
            return None  # woken by a cancel
        unit, fallback, kind, future = item
        submission = Submission(unit, kind, (unit,), {})
        return _completion(submission, fallback, _final_state(future), future)

    def wake(self) -> None:
        self._finished.put(None)

    def value(self, handle: Any) -> Any:
        return _completed_value(handle.state)

    def is_handle(self, produced: Any) -> bool:
        return isinstance(produced, PrefectFuture)

    def handle_done(self, handle: Any) -> bool:
        return bool(handle.state.is_completed())

    def cancel(self, handles: list[Any]) -> None:
        for handle in handles:
            wrapped = getattr(handle, "wrapped_future", None)
            if wrapped is not None and not wrapped.done():
                wrapped.cancel()
        if self.terminate is not None:
            self.terminate()

    def stop_starting(self, stop: bool) -> None:
        if self.flow_run_id is not None:
            stop_starting_nodes(self.flow_run_id, stop)

    def forget(self, key: str) -> None:
        """Drop Prefect's in-memory copy of a persisted result (its result store keeps
        recent records in an LRU cache)."""
        flow_run = FlowRunContext.get()
        store = getattr(flow_run, "result_store", None) if flow_run else None
        cache = getattr(store, "cache", None)
        if cache is not None:
            cache.pop(key, None)


def _completion(
    submission: Submission,
    fallback: bool,
    state: State[Any] | BaseException,
    future: PrefectFuture[Any] | None,
) -> Completion:
    """What the engine needs to know of a task's end."""
    unit = submission.unit
    if isinstance(state, UpstreamTaskError) or (isinstance(state, State) and not state.is_final()):
        # Prefect did not run it: a producer handed to it early failed first.
        return Completion(unit, fallback, error=_lost(future, state), not_run=True)
    if isinstance(state, BaseException):
        return Completion(unit, fallback, error=state)
    task_run_id = state.state_details.task_run_id
    run_id = str(task_run_id) if task_run_id else None
    if state.is_completed():
        # Prefect answers "Cached" when another run stored the key meanwhile.
        from_cache = submission.kind == "node" and not fallback and state.name == "Cached"
        return Completion(
            unit, fallback, value=_completed_value(state), from_cache=from_cache, task_run_id=run_id
        )
    exc = state.result(raise_on_failure=False)
    if not isinstance(exc, BaseException):
        exc = RuntimeError(state.message or f"task ended in state {state.type.value}")
    return Completion(unit, fallback, error=exc, task_run_id=run_id)


def _lost(future: PrefectFuture[Any] | None, state: Any) -> BaseException:
    """Why a submitted task ended without a final state (a Dask worker gave up on it)."""
    wrapped = getattr(future, "wrapped_future", None)
    if wrapped is not None:
        try:
            found = wrapped.exception(timeout=0)
        except Exception as exc:  # the exception itself could not be fetched
            found = exc
        if isinstance(found, BaseException):
            return found
    return RuntimeError(f"the node's task ended without a final state ({state})")


def _final_state(future: PrefectFuture[Any]) -> State[Any] | BaseException:
    """The future's final state, or the exception that kept it from having one.

    A process pool resolves a task's inputs in the parent before sending it; when an
    upstream failed, that resolution raises ``UpstreamTaskError`` from the future itself.
    """
    try:
        future.wait()
        return future.state
    except (Exception, asyncio.CancelledError) as exc:  # Dask's is a BaseException
        return exc


def _completed_value(state: State[Any]) -> Any:
    """The value of a completed state.

    ``State.result()`` hops through Prefect's event-loop thread even for a result held
    in memory, about 1 ms a call, which doubled the flow body's own cost per node. An
    in-memory ``ResultRecord`` is read directly, as ``State.result()`` itself does; any
    other kind of data (persisted results) goes the official way.
    """
    data = state.data
    if isinstance(data, ResultRecord):
        return data.result
    return state.result()
