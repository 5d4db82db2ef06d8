"""The flow body: run a plan's node tasks and collect a ``RunResult``.

    >>> # inside a Prefect flow:
    >>> # result = GraphExecution(plan, tasks, input_values).run_parallel()

Nodes are submitted as their producers finish (in-degree counters, so a run is linear
in nodes plus edges). Consumers receive the producers' futures, never copies of values.
A failed node marks its descendants ``upstream_failed`` and independent branches go on.
The execution drops its own reference to an output once the output's last consumer has
finished, unless the caller asked for it.
"""

from __future__ import annotations

import heapq
import queue
from collections.abc import Callable, Mapping
from typing import Any

from prefect import Task
from prefect.exceptions import UpstreamTaskError
from prefect.futures import PrefectFuture
from prefect.results import ResultRecord
from prefect.states import State

from integration.cache.hierarchy import CacheHierarchy
from integration.cache.keys import NodeKey
from integration.errors import ErrorType, NodeError
from integration.graph.order import descendants
from integration.graph.policy import RetryPolicy
from integration.graph.validate import BoundNode
from integration.plan import Plan, PlanStep, prune_cached
from integration.prefect.storage import TieredResultStorage, load_cached_value
from integration.prefect.tasks import NodeOutput, Upstream, node_task
from integration.result import NodeReport, NodeState, RunResult, RunState

DEFAULT_WINDOW = 64
"""Most nodes in flight at once when the thread pool is unbounded."""

NodeListener = Callable[[NodeReport, int, int], None]
"""Called as ``listener(report, finished, total)`` each time a node finishes."""


class NodeTasks:
    """A node's Prefect task variants, built on first use.

    The plain variant neither hashes nor persists; the cached one persists its result
    under the node key through ``storage``; ``refresh`` recomputes and overwrites.
    """

    __slots__ = ("_built", "node", "policy", "retry", "storage", "tag_type")

    def __init__(
        self,
        node: BoundNode,
        tag_type: bool,
        storage: TieredResultStorage | None,
        policy: Any = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.node = node
        self.tag_type = tag_type
        self.storage = storage
        self.policy = policy
        self.retry = retry
        self._built: dict[tuple[bool, bool], Task[..., NodeOutput]] = {}

    def get(self, cached: bool, refresh: bool = False) -> Task[..., NodeOutput]:
        cached = cached and self.storage is not None
        variant = (cached, refresh and cached)
        task = self._built.get(variant)
        if task is None:
            storage = self.storage if cached else None
            task = node_task(
                self.node,
                self.tag_type,
                storage,
                refresh=variant[1],
                policy=self.policy,
                retry=self.retry,
            )
            self._built[variant] = task
        return task


class GraphExecution:
    """One run of a plan inside a Prefect flow."""

    def __init__(
        self,
        plan: Plan,
        tasks: Mapping[str, NodeTasks],
        inputs: Mapping[str, Any],
        listener: NodeListener | None = None,
        keys: Mapping[str, NodeKey] | None = None,
        cache: CacheHierarchy | None = None,
        refresh: bool = False,
    ) -> None:
        self.plan = plan
        self.tasks = tasks
        self.inputs = inputs
        self.listener = listener
        self.keys = keys or {}
        self.cache = cache
        self.refresh = refresh
        self.reports: dict[str, NodeReport] = {}
        # NodeOutput (sequential, or loaded from the cache) or PrefectFuture (parallel)
        self.produced: dict[str, Any] = {}
        self._wanted = {request.node for request in plan.outputs}
        self._successors = {n: s.consumers for n, s in plan.steps.items()}
        self.executing = self._consult_cache()
        self._running = set(self.executing)
        self._consumers_left = {
            n: sum(c in self._running for c in s.consumers) for n, s in plan.steps.items()
        }

    # -- the cache ----------------------------------------------------------------

    def _consult_cache(self) -> list[str]:
        """Load what the cache holds and the run needs; return the nodes that must run."""
        if self.cache is None or not self.keys:
            return list(self.plan.order)
        self.cache.start_run()
        located: dict[str, str] = {}
        if not self.refresh:
            for node_id in self.plan.order:
                key = self.keys[node_id]
                if key.shared:
                    tier = self.cache.locate(key.key)
                    if tier is not None:
                        located[node_id] = tier
        while True:
            decision = prune_cached(self.plan, located)
            missing = [n for n in decision.load if not self._load(n)]
            if not missing:
                break
            for node_id in missing:  # vanished or corrupt since located: run it instead
                located.pop(node_id)
        for node_id in decision.skip:
            self._cached_report(node_id, located[node_id])
        return decision.execute

    def _load(self, node_id: str) -> bool:
        assert self.cache is not None
        found = load_cached_value(self.cache, self.keys[node_id].key)
        if found is None:
            return False
        output, tier = found
        self.produced[node_id] = output
        self._cached_report(node_id, tier)
        return True

    def _cached_report(self, node_id: str, tier: str) -> None:
        node_type = self.plan.steps[node_id].node.type.qualified_name
        self._report(NodeReport(node_id, node_type, NodeState.CACHED, cache_tier=tier))

    def _task(self, node_id: str) -> Task[..., NodeOutput]:
        key = self.keys.get(node_id)
        persist = self.cache is not None and key is not None and key.shared
        return self.tasks[node_id].get(cached=persist, refresh=self.refresh)

    # -- strategies ---------------------------------------------------------------

    def run_sequential(self) -> RunResult:
        for node_id in self.executing:
            if node_id in self.reports:
                continue  # already marked upstream_failed
            step = self.plan.steps[node_id]
            state = self._task(node_id)(**self._arguments(step), return_state=True)
            self._finish(node_id, state)
        return self._result()

    def run_parallel(self, window: int | None = None) -> RunResult:
        """Submit ready nodes at once, and look ahead while the pool has room.

        A node whose producers are all submitted but not all finished may be submitted
        early ("prefetched"): Prefect resolves the producers' futures inside the
        worker, so the node's task-run setup overlaps its producers' work instead of
        following it. That keeps chains as fast as hand-written Prefect code. Ready
        nodes always go first, and prefetching stops at ``window`` nodes in flight, so
        waiting nodes never hold more than the pool's idle threads.
        """
        window = window or DEFAULT_WINDOW
        steps = self.plan.steps
        position = {node_id: i for i, node_id in enumerate(self.plan.order)}
        finished: queue.SimpleQueue[tuple[str, PrefectFuture[NodeOutput]]] = queue.SimpleQueue()
        running = self._running
        not_done = {n: sum(u in running for u in steps[n].upstream) for n in self.executing}
        not_submitted = dict(not_done)
        ready = [(position[n], n) for n in self.executing if not_done[n] == 0]
        lookahead: list[tuple[int, str]] = []
        submitted: set[str] = set()
        in_flight: dict[str, PrefectFuture[NodeOutput]] = {}

        def submit(node_id: str) -> None:
            future = self._task(node_id).submit(**self._arguments(steps[node_id]))
            submitted.add(node_id)
            in_flight[node_id] = future
            self.produced[node_id] = future
            future.add_done_callback(lambda f, n=node_id: finished.put((n, f)))
            for consumer in self._successors[node_id]:
                if consumer not in running:
                    continue
                not_submitted[consumer] -= 1
                if not_submitted[consumer] == 0 and not_done[consumer] > 0:
                    heapq.heappush(lookahead, (position[consumer], consumer))

        def pump() -> None:
            while ready:
                _, node_id = heapq.heappop(ready)
                if node_id not in submitted and node_id not in self.reports:
                    submit(node_id)
            while lookahead and len(in_flight) < window:
                _, node_id = heapq.heappop(lookahead)
                if node_id not in submitted and node_id not in self.reports:
                    submit(node_id)

        total = len(self.plan.order)
        pump()
        while len(self.reports) < total:
            node_id, future = finished.get()
            in_flight.pop(node_id, None)
            if node_id in self.reports:
                continue  # a prefetched node whose producer failed first
            state = _final_state(future)
            if isinstance(state, UpstreamTaskError):
                self._block(node_id, str(state))
                ok = False
            elif isinstance(state, BaseException):
                self._fail(node_id, state, None)
                ok = False
            else:
                ok = self._finish(node_id, state)
            if ok:
                for consumer in self._successors[node_id]:
                    if consumer not in running:
                        continue
                    not_done[consumer] -= 1
                    if not_done[consumer] == 0:
                        heapq.heappush(ready, (position[consumer], consumer))
            pump()
        # Prefetched nodes behind a failure end as NotReady; let them settle.
        for future in list(in_flight.values()):
            _final_state(future)
        return self._result()

    # -- bookkeeping --------------------------------------------------------------

    def _arguments(self, step: PlanStep) -> dict[str, Any]:
        literals: dict[str, Any] = {}
        upstream: dict[str, Upstream] = {}
        for port, binding in step.bindings.items():
            if binding.kind == "param":
                literals[port] = binding.value
            elif binding.kind == "input":
                value = self.inputs[binding.source_port]
                if binding.transform is None:
                    literals[port] = value
                else:
                    upstream[port] = (value, None, binding.transform)
            elif binding.kind == "edge":
                producer = self.produced[binding.source]
                upstream[port] = (producer, binding.source_port, binding.transform)
        key = self.keys.get(step.node_id)
        return {
            "node_type": step.node.type,
            "node_id": step.node_id,
            "literals": literals,
            "upstream": upstream,
            "cache_key": key.key if key is not None and key.shared else None,
        }

    def _finish(self, node_id: str, state: State[Any]) -> bool:
        """Record a finished node; return whether it produced its outputs."""
        step = self.plan.steps[node_id]
        type_name = step.node.type.qualified_name
        task_run_id = state.state_details.task_run_id
        if state.is_completed():
            output: NodeOutput = _completed_value(state)
            if node_id not in self.produced or not isinstance(
                self.produced[node_id], PrefectFuture
            ):
                self.produced[node_id] = output
            # Prefect answers "Cached" when another run stored the key meanwhile.
            from_cache = state.name == "Cached"
            report = NodeReport(
                node_id,
                type_name,
                NodeState.CACHED if from_cache else NodeState.COMPLETED,
                None if from_cache else output.duration_s,
                task_run_id=str(task_run_id) if task_run_id else None,
                attempts=0 if from_cache else getattr(output, "attempts", 1),
                cache_tier="prefect" if from_cache else None,
            )
            self._report(report)
            self._release_inputs(step)
            return True

        if not state.is_final():
            # Prefect leaves a task whose upstream future failed in Pending/NotReady.
            self._block(node_id, state.message or "an upstream node failed")
            return False
        exc = state.result(raise_on_failure=False)
        if not isinstance(exc, BaseException):
            exc = RuntimeError(state.message or f"task ended in state {state.type.value}")
        self._fail(node_id, exc, str(task_run_id) if task_run_id else None)
        return False

    def _fail(self, node_id: str, exc: BaseException, task_run_id: str | None) -> None:
        type_name = self.plan.steps[node_id].node.type.qualified_name
        report = NodeReport(
            node_id,
            type_name,
            NodeState.FAILED,
            getattr(exc, "nodegraph_duration_s", None),
            error=NodeError.from_exception(node_id, type_name, exc),
            task_run_id=task_run_id,
            attempts=getattr(exc, "nodegraph_attempts", 1),
        )
        self._report(report)
        for blocked in sorted(descendants(self._successors, [node_id]) & self._running):
            self._block(blocked, f"not run: upstream node {node_id!r} failed")

    def _block(self, node_id: str, reason: str) -> None:
        if node_id in self.reports:
            return
        node_type = self.plan.steps[node_id].node.type.qualified_name
        error = NodeError(node_id, node_type, ErrorType.DEPENDENCY, reason)
        self._report(NodeReport(node_id, node_type, NodeState.UPSTREAM_FAILED, error=error))

    def _release_inputs(self, step: PlanStep) -> None:
        for upstream in step.upstream:
            self._consumers_left[upstream] -= 1
            if self._consumers_left[upstream] == 0 and upstream not in self._wanted:
                self.produced.pop(upstream, None)

    def _report(self, report: NodeReport) -> None:
        # Every report carries its node's key, whatever the path that made it.
        key = self.keys.get(report.node_id)
        if report.cache_key is None and key is not None:
            report.cache_key = key.key
        self.reports[report.node_id] = report
        if self.listener is not None:
            self.listener(report, len(self.reports), len(self.plan.order))

    def _result(self) -> RunResult:
        outputs: dict[str, Any] = {}
        for request in self.plan.outputs:
            report = self.reports.get(request.node)
            if report is None or not report.state.ok:
                continue
            produced = self.produced[request.node]
            if isinstance(produced, PrefectFuture):
                produced = _completed_value(produced.state)
            output: NodeOutput = produced
            outputs[request.name] = output.values[request.port]
        failed = any(not r.state.ok for r in self.reports.values())
        ordered = {n: self.reports[n] for n in self.plan.order}
        return RunResult(
            graph=self.plan.name,
            state=RunState.FAILED if failed else RunState.COMPLETED,
            outputs=outputs,
            nodes=ordered,
        )


def _final_state(future: PrefectFuture[Any]) -> State[Any] | BaseException:
    """The future's final state, or the exception that kept it from having one.

    A process pool resolves a task's inputs in the parent before sending it; when an
    upstream failed, that resolution raises ``UpstreamTaskError`` from the future itself.
    """
    try:
        future.wait()
        return future.state
    except Exception as exc:
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
