"""The flow body: run a plan's node tasks and collect a ``RunResult``.

    >>> # inside a Prefect flow:
    >>> # result = GraphExecution(plan, tasks, input_values).run_parallel()

Nodes are submitted as their producers finish (in-degree counters, so a run is linear
in nodes plus edges). Consumers receive the producers' futures, never copies of values.
The execution drops its own reference to an output once the output's last consumer has
finished, unless the caller asked for it.

When a node fails (after its retries), its policy's action decides:

- ``fail``: its descendants are ``upstream_failed``; independent branches go on.
- ``fallback``: the fallback's outputs stand in and descendants run. Neither the
  fallback's result nor anything computed from it is written to the cache under the
  node keys, which promise the real result.
- ``skip``: the node and its descendants are ``skipped``; independent branches go on.
- ``halt``: nothing new is submitted; nodes already running finish (and persist), and
  the nodes that did not run stay ``pending``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
import logging
import pickle
import queue
import time
from collections.abc import Callable, Mapping
from concurrent.futures.process import BrokenProcessPool
from enum import Enum
from typing import Any

from prefect import Task
from prefect.context import FlowRunContext
from prefect.exceptions import UpstreamTaskError
from prefect.futures import PrefectFuture
from prefect.results import ResultRecord
from prefect.states import State

from integration.cache.hierarchy import CacheHierarchy
from integration.cache.keys import NodeKey
from integration.errors import ErrorType, NodeError
from integration.graph.gcpause import gc_paused
from integration.graph.order import descendants
from integration.graph.policy import ErrorPolicy
from integration.graph.validate import BoundNode
from integration.observability.instruments import RunInstruments
from integration.optimize import ExecutionOptimizer, Segment, Units
from integration.plan import Plan, PlanStep, prune_cached
from integration.prefect.storage import TieredResultStorage, load_cached_value
from integration.prefect.tasks import (
    FusedNode,
    NodeNotStarted,
    NodeOutput,
    SharedOutput,
    SharedTask,
    Upstream,
    fallback_task,
    node_tags,
    node_task,
    shared_task,
    stop_starting_nodes,
)
from integration.resources import ResourcePool, ResourceRequirement
from integration.resources.memory import MemoryManager, Spilled
from integration.result import NodeReport, NodeState, RunResult, RunState

logger = logging.getLogger("nodegraph.run")

DEFAULT_WINDOW = 64
"""Most nodes in flight at once when the thread pool is unbounded."""

NodeListener = Callable[[NodeReport, int, int], None]
"""Called as ``listener(report, finished, total)`` each time a node finishes."""


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
            task = node_task(
                self.node,
                self.tag_type,
                storage,
                refresh=variant[1],
                policy=self.key_policy,
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
        return self.error_policy.timeout_seconds if self.kill_on_timeout else None

    def fallback(self) -> Task[..., NodeOutput]:
        task = self._built.get("fallback")
        if task is None:
            assert self.node.fallback_type is not None
            task = fallback_task(self.node, self.node.fallback_type, self.thread_timeout)
            self._built["fallback"] = task
        return task


class Outcome(Enum):
    """What a finished task means for the nodes after it."""

    PRODUCED = "produced"  # outputs available: consumers may run
    STOPPED = "stopped"  # no outputs: consumers were marked
    RUN_FALLBACK = "run_fallback"  # the fallback node type must run first


class GraphExecution:
    """One run of a plan inside a Prefect flow.

    ``resuming`` also looks up run-scoped keys (checkpoints of ``cacheable=False``
    nodes), which only a resumed run shares with the run it continues.
    """

    def __init__(
        self,
        plan: Plan,
        tasks: Mapping[str, NodeTasks],
        inputs: Mapping[str, Any],
        listener: NodeListener | None = None,
        keys: Mapping[str, NodeKey] | None = None,
        cache: CacheHierarchy | None = None,
        refresh: bool = False,
        resuming: bool = False,
        run_id: str | None = None,
        pool: ResourcePool | None = None,
        replicate: Callable[[PrefectFuture[Any]], list[str]] | None = None,
        memory: MemoryManager | None = None,
        terminate: Callable[[], None] | None = None,
        instruments: RunInstruments | None = None,
        on_node_started: Callable[[str], None] | None = None,
        optimizer: ExecutionOptimizer | None = None,
        lost_workers: Callable[[list[str]], Mapping[str, list[str]]] | None = None,
    ) -> None:
        self.plan = plan
        self.optimizer = optimizer
        # Fused segments and batches: nodes that share a task (set when a run starts).
        self.units = Units()
        self.instruments = instruments if instruments is not None and instruments.enabled else None
        self.on_node_started = on_node_started
        # What workers measured, and cache bytes read, by node, until the node reports.
        self._measured: dict[str, Any] = {}
        self._read_bytes: dict[str, int] = {}
        self.terminate = terminate
        self.tasks = tasks
        self.inputs = inputs
        self.listener = listener
        self.keys = keys or {}
        self.cache = cache
        self.refresh = refresh
        self.resuming = resuming
        self.run_id = run_id
        self.pool = pool
        self.replicate = replicate
        # Task run id -> the workers that died running it (Dask recovered it).
        self.lost_workers = lost_workers
        self.replicated: dict[str, list[str]] = {}
        self.memory = memory
        if memory is not None:
            for node_id, step in plan.steps.items():
                if step.node.pin_in_memory:
                    memory.pin_in_memory(node_id)
        self._started: set[str] = set()
        self._reserved: dict[str, ResourceRequirement] = {}
        # The argument mappings handed to Prefect, by node, until the node is reported.
        self._handed: dict[str, dict[str, Any]] = {}
        self.reports: dict[str, NodeReport] = {}
        # NodeOutput (sequential, or loaded from the cache) or PrefectFuture (parallel)
        self.produced: dict[str, Any] = {}
        self.halted_at: str | None = None
        self.cancel_noticed_at: float | None = None
        # Set (from another thread) when the flow run is cancelled: nothing new starts.
        self.cancelled: str | None = None
        self._wake: Callable[[], None] | None = None
        # Nodes computed from a fallback's outputs: never cached under their node keys.
        self.tainted: set[str] = set()
        self._failures: dict[str, tuple[BaseException, str | None]] = {}
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
                if key.shared or self.resuming:
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
        output, tier, size = found
        self.produced[node_id] = output
        self._read_bytes[node_id] = size
        self._cached_report(node_id, tier)
        return True

    def _cached_report(self, node_id: str, tier: str) -> None:
        node_type = self.plan.steps[node_id].node.type.qualified_name
        self._report(NodeReport(node_id, node_type, NodeState.CACHED, cache_tier=tier))

    def _key(self, node_id: str) -> str | None:
        """The key a node's result is persisted under, if it is persisted at all.

        Run-scoped keys are persisted too: they are the checkpoints a resumed run reads.
        """
        key = self.keys.get(node_id)
        if self.cache is None or key is None or node_id in self.tainted:
            return None
        return key.key

    def _task(self, node_id: str) -> Task[..., NodeOutput]:
        persist = self._key(node_id) is not None
        return self.tasks[node_id].get(cached=persist, refresh=self.refresh)

    def _needs(self) -> dict[str, ResourceRequirement]:
        """The resource requirements the pool gates, by node."""
        return {} if self.pool is None else self.plan.resource_needs(self.executing)

    def _action(self, node_id: str) -> str:
        return self.tasks[node_id].error_policy.final_action

    # -- strategies ---------------------------------------------------------------

    def cancel(self, reason: str = "the flow run was cancelled") -> None:
        """Stop the run: start no more nodes, cancel queued ones (Dask and process-pool
        futures) and kill running ones where the runner can (processes). Nodes running
        on threads or Dask workers finish and keep their results. Safe to call from any
        thread."""
        if self.cancelled is not None:
            return
        self.cancelled = reason
        self.cancel_noticed_at = time.time()
        if self.run_id is not None:
            stop_starting_nodes(self.run_id)
        for produced in list(self.produced.values()):
            wrapped = getattr(produced, "wrapped_future", None)
            if wrapped is not None and not wrapped.done():
                wrapped.cancel()
        if self.terminate is not None:
            self.terminate()
        if self._wake is not None:
            self._wake()

    @property
    def stopping(self) -> bool:
        return self.halted_at is not None or self.cancelled is not None

    def run_sequential(self) -> RunResult:
        order = self.executing
        groups = self._batch_groups()
        if groups:
            # Level by level, so that every node of a batch group is ready at its first.
            level = {n: self.plan.steps[n].level for n in order}
            order = sorted(order, key=lambda n: level[n])
        if self.optimizer is not None:
            self.units = Units.of(self.optimizer.fuse_nodes(order, chains_only=False))
        for node_id in order:
            if self.stopping:
                break
            if node_id in self.reports:
                continue  # already marked by a failure upstream, or ran in a shared task
            segment = self.units.unit_of.get(node_id)
            if segment is None and node_id in groups:
                others = [m for m in groups[node_id] if m != node_id and m not in self.reports]
                segment = self._batch([node_id, *others])
            if segment is not None:
                self._started.update(segment.nodes)
                with gc_paused():  # thousands of small objects, no cycles to collect
                    task, arguments = self._shared(segment)
                state = task(**arguments, return_state=True)
                with gc_paused():
                    self._finish_shared(segment, state)
                self._relieve_memory()
                continue
            step = self.plan.steps[node_id]
            self._started.add(node_id)
            state = self._task(node_id)(**self._hand(step), return_state=True)
            if self._finish(node_id, state) is Outcome.RUN_FALLBACK:
                fallback = self.tasks[node_id].fallback()
                self._finish_fallback(
                    node_id, fallback(**self._fallback_arguments(step), return_state=True)
                )
            self._relieve_memory()
        return self._result()

    def run_parallel(self, window: int | None = None) -> RunResult:
        """Submit ready units at once, and look ahead while the pool has room.

        A unit is a node, a fused segment or a batch; ``units`` maps each node to its
        unit's head, and the counters below count edges from running producers in
        other units. A unit whose producers are all submitted but not all finished may
        be submitted early ("prefetched"): Prefect resolves the producers' futures
        inside the worker, so the unit's task-run setup overlaps its producers' work
        instead of following it. That keeps chains as fast as hand-written Prefect
        code. Ready units always go first, and prefetching stops at ``window`` units in
        flight, so waiting units never hold more than the pool's idle threads.
        Consumers of a node with a fallback are never prefetched: they must receive the
        fallback's outputs if the node fails. Batches form from ready nodes only.
        """
        window = window or DEFAULT_WINDOW
        steps = self.plan.steps
        if self.optimizer is not None:
            self.units = Units.of(self.optimizer.fuse_nodes(self.executing, chains_only=True))
        head = self.units.head
        members = self.units.members
        position = {node_id: i for i, node_id in enumerate(self.plan.order)}
        finished: queue.SimpleQueue[tuple[str, bool, PrefectFuture[Any]]] = queue.SimpleQueue()
        running = self._running
        heads = [n for n in self.executing if head(n) == n]
        not_done = {
            h: sum(u in running and head(u) != h for m in members(h) for u in steps[m].upstream)
            for h in heads
        }
        not_submitted = dict(not_done)
        no_prefetch = {
            head(consumer)
            for node_id in self.executing
            if self._action(node_id) == "fallback"
            for consumer in self._successors[node_id]
        }
        # A unit that holds resources reserves them when submitted: it must not wait
        # for its producers while holding them.
        needs = {head(n): need for n, need in self._needs().items()}
        no_prefetch |= set(needs)
        # Broadcast outputs are copied to every worker before their consumers start.
        broadcasting = set()
        if self.replicate is not None:
            broadcasting = {
                node_id
                for node_id in self.executing
                if any(port.broadcast for port in steps[node_id].node.type.outputs.values())
            }
            no_prefetch |= {head(c) for n in broadcasting for c in self._successors[n]}
        # Batchable nodes wait for the rest of their group (same type, params, level)
        # to be ready, then run as one batch; they are never prefetched.
        groups = self._batch_groups()
        no_prefetch |= set(groups)
        held: dict[tuple[str, ...], set[str]] = {}
        waiting: list[tuple[int, str]] = []  # ready, but their resources are taken
        ready = [(position[n], n) for n in heads if not_done[n] == 0]
        heapq.heapify(ready)
        lookahead: list[tuple[int, str]] = []
        submitted: set[str] = set()
        in_flight: dict[tuple[str, bool], PrefectFuture[Any]] = {}

        def track(unit: str, is_fallback: bool, future: PrefectFuture[Any]) -> None:
            in_flight[unit, is_fallback] = future
            for node_id in members(unit):
                self.produced[node_id] = future
            future.add_done_callback(lambda f: finished.put((unit, is_fallback, f)))

        def submit(unit: str) -> None:
            nodes = members(unit)
            self._started.update(nodes)
            segment = self.units.unit_of.get(unit)
            if segment is not None:
                with gc_paused():  # thousands of small objects, no cycles to collect
                    task, arguments = self._shared(segment)
                track(unit, False, task.submit(**arguments))
            else:
                track(unit, False, self._task(unit).submit(**self._hand(steps[unit])))
            submitted.update(nodes)
            for node_id in nodes:
                for consumer in self._successors[node_id]:
                    if consumer not in running or head(consumer) == unit:
                        continue
                    consumer = head(consumer)
                    not_submitted[consumer] -= 1
                    if (
                        not_submitted[consumer] == 0
                        and not_done[consumer] > 0
                        and consumer not in no_prefetch
                    ):
                        heapq.heappush(lookahead, (position[consumer], consumer))

        def complete(group: tuple[str, ...]) -> bool:
            return all(m in held[group] or m in self.reports for m in group)

        def take_batch(node_id: str) -> None:
            """Make ``node_id`` the head of a batch of its group's held nodes."""
            group = groups[node_id]
            batch = [node_id] + [
                m for m in group if m != node_id and m in held[group] and m not in self.reports
            ]
            del held[group]
            self._batch(batch)

        def pump() -> None:
            if self.stopping:
                return
            if waiting:
                ready.extend(waiting)
                heapq.heapify(ready)
                waiting.clear()
            for group, ready_members in list(held.items()):
                # A member was marked (its producer failed): the rest need not wait.
                pending = sorted(m for m in ready_members if m not in self.reports)
                if complete(group) and pending and pending[0] not in submitted:
                    heapq.heappush(ready, (position[pending[0]], pending[0]))
            while ready:
                entry = heapq.heappop(ready)
                node_id = entry[1]
                if node_id in submitted or node_id in self.reports:
                    continue
                group = groups.get(node_id)
                if group is not None:
                    held.setdefault(group, set()).add(node_id)
                    if not complete(group):
                        continue  # held until its group is ready
                need = needs.get(node_id)
                if need is not None:
                    assert self.pool is not None
                    if not self.pool.reserve(need):
                        waiting.append(entry)
                        continue
                    self._reserved[node_id] = need
                if group is not None:
                    take_batch(node_id)
                submit(node_id)
            while lookahead and len(in_flight) < window:
                _, node_id = heapq.heappop(lookahead)
                if node_id not in submitted and node_id not in self.reports:
                    submit(node_id)

        # A cancel from another thread wakes the loop below; the marker is not a node.
        self._wake = lambda: finished.put(("", False, None))  # type: ignore[arg-type]
        try:
            pump()
            while in_flight or waiting:
                if self.cancelled is not None and not in_flight:
                    break  # what waits for resources never starts
                if not in_flight:
                    # Another run of the same flow holds the pool: wait for room.
                    entry = waiting.pop(0)
                    need = needs[entry[1]]
                    assert self.pool is not None
                    self.pool.wait_for_resources(need)
                    self._reserved[entry[1]] = need
                    if entry[1] in groups and groups[entry[1]] in held:
                        take_batch(entry[1])
                    submit(entry[1])
                    continue
                unit, is_fallback, future = finished.get()
                if future is None:
                    continue  # the cancel marker
                in_flight.pop((unit, is_fallback), None)
                reserved = self._reserved.pop(unit, None)
                if reserved is not None:
                    assert self.pool is not None
                    self.pool.release(reserved)
                nodes = members(unit)
                if all(n in self.reports for n in nodes):
                    continue  # a prefetched unit whose producer failed first
                state = _final_state(future)
                segment = self.units.unit_of.get(unit)
                if is_fallback:
                    outcome = self._finish_fallback(unit, state)
                elif isinstance(state, UpstreamTaskError) or (
                    isinstance(state, State) and not state.is_final()
                ):
                    if not_done.get(unit, 0) > 0:
                        # A prefetched unit whose producer failed: the producer's
                        # failure marks it (by its policy) when it is processed.
                        continue
                    outcome = self._failed(unit, _lost(future, state), None)
                elif segment is not None:
                    with gc_paused():
                        produced = self._finish_shared(segment, state)
                    self._release_units(produced, unit, not_done, ready, position)
                    self._relieve_memory()
                    pump()
                    continue
                elif isinstance(state, BaseException):
                    outcome = self._failed(unit, state, None)
                else:
                    outcome = self._finish(unit, state)
                if outcome is Outcome.RUN_FALLBACK:
                    step = steps[unit]
                    fallback = self.tasks[unit].fallback()
                    track(unit, True, fallback.submit(**self._fallback_arguments(step)))
                    continue
                if outcome is Outcome.PRODUCED:
                    if unit in broadcasting and self.produced.get(unit) is future:
                        self._replicate(unit, future)
                    self._release_units([unit], unit, not_done, ready, position)
                self._relieve_memory()
                pump()
        finally:
            self._wake = None
            # Whatever ends the loop, the pool and the node-start gate outlive this run.
            if self.pool is not None:
                for need in self._reserved.values():
                    self.pool.release(need)
                self._reserved.clear()
            if self.run_id is not None:
                stop_starting_nodes(self.run_id, stop=False)
        return self._result()

    def _release_units(
        self,
        produced: list[str],
        unit: str,
        not_done: dict[str, int],
        ready: list[tuple[int, str]],
        position: dict[str, int],
    ) -> None:
        """Count ``produced`` nodes as done for the units that consume them."""
        head = self.units.head
        for node_id in produced:
            for consumer in self._successors[node_id]:
                if consumer not in self._running or head(consumer) == unit:
                    continue
                consumer = head(consumer)
                not_done[consumer] -= 1
                if not_done[consumer] == 0:
                    heapq.heappush(ready, (position[consumer], consumer))

    # -- shared tasks (fused segments and batches) ------------------------------------

    def _batch_groups(self) -> dict[str, tuple[str, ...]]:
        """Each batchable node's group: the nodes that may share its batch call."""
        if self.optimizer is None:
            return {}
        return {
            node_id: batch.nodes
            for batch in self.optimizer.batch_similar_operations(self.executing)
            for node_id in batch.nodes
        }

    def _batch(self, members: list[str]) -> Segment | None:
        """A batch of ``members`` (the first is its head), or ``None`` for fewer than
        two: a lone node runs its plain function in a task of its own."""
        if len(members) < 2:
            return None
        segment = Segment(tuple(members), kind="batch")
        for member in members:
            self.units.unit_of[member] = segment
        self.units.segments.append(segment)
        return segment

    def _shared(self, segment: Segment) -> tuple[Task[..., SharedOutput], dict[str, Any]]:
        """The task of a segment or batch and its arguments: every node's own inputs,
        cache key and instruments, and the outputs of producers in other tasks."""
        inside = set(segment.nodes)
        external: dict[str, Any] = {}
        fused: list[FusedNode] = []
        consumers: dict[str, list[str]] = {}
        tags: set[str] = set()
        storage = locks = None
        for node_id in segment.nodes:
            step = self.plan.steps[node_id]
            node_tasks = self.tasks[node_id]

            def by_id(source: str, port: str, node_id: str = node_id) -> tuple[Any, Any]:
                if source in inside:
                    readers = consumers.setdefault(source, [])
                    if node_id not in readers:  # two ports may read one producer
                        readers.append(node_id)
                elif source not in external:
                    external[source] = self._producer(source)
                return source, port

            literals, upstream = self._bound_inputs(step, by_id)
            key = self._key(node_id)
            if key is not None:
                storage = node_tasks.storage
                locks = getattr(node_tasks.key_policy, "lock_manager", None)
            halts = node_tasks.error_policy.final_action == "halt"
            observe = self._announce(step)
            fused.append(
                FusedNode(step.node.type, node_id, literals, upstream, key, observe, halts)
            )
            tags |= node_tags(step.node, node_tasks.tag_type)
        keep = {
            n
            for n in segment.nodes
            if n in self._wanted
            or any(c in self._running and c not in inside for c in self._successors[n])
        }
        self._handed[segment.head] = {"upstream": external}
        task = shared_task(segment.head, segment.name, tags)
        spec = SharedTask(segment.kind, fused, keep, consumers, storage, locks, self.refresh)
        return task, {"task": spec, "external": external}

    def _finish_shared(self, segment: Segment, state: State[Any] | BaseException) -> list[str]:
        """Report every node of a shared task on its own; return those that produced."""
        exc: BaseException | None = None
        task_run_id = None
        if isinstance(state, State):
            task_run_id = state.state_details.task_run_id
            if state.is_completed():
                shared = _completed_value(state)
            else:
                found = state.result(raise_on_failure=False)
                exc = found if isinstance(found, BaseException) else RuntimeError(str(found))
                shared = getattr(exc, "shared_output", None)
        else:
            exc, shared = state, getattr(state, "shared_output", None)
        run_id = str(task_run_id) if task_run_id else None
        produced: list[str] = []
        for node_id in segment.nodes:
            if node_id in self.reports:
                continue
            step = self.plan.steps[node_id]
            type_name = step.node.type.qualified_name
            if shared is not None and node_id in shared.outputs:
                output = shared.outputs[node_id]
                if exc is not None or not isinstance(self.produced.get(node_id), PrefectFuture):
                    # The task failed: its future holds no value for consumers.
                    self.produced[node_id] = output
                tier = shared.cached.get(node_id)
                self._measured[node_id] = None if tier else output.measured
                self._report(
                    NodeReport(
                        node_id,
                        type_name,
                        NodeState.CACHED if tier else NodeState.COMPLETED,
                        None if tier else output.duration_s,
                        task_run_id=run_id,
                        attempts=0 if tier else output.attempts,
                        cache_tier=tier,
                    )
                )
                self._release_inputs(step)
                produced.append(node_id)
            elif shared is not None and node_id in shared.failures:
                self._failed(node_id, shared.failures[node_id], run_id)
            elif shared is not None:
                self._block(node_id, "not run: the run stopped scheduling")
            else:
                # The task itself failed (a crash, a lost worker): its first node is
                # blamed, and the failure's policy marks the rest.
                assert exc is not None
                self._failed(node_id, exc, run_id)
        self._handed.pop(segment.head, {"upstream": {}})["upstream"].clear()
        return produced

    # -- bookkeeping --------------------------------------------------------------

    def _bound_inputs(
        self, step: PlanStep, producer: Callable[[str, str], tuple[Any, Any]]
    ) -> tuple[dict[str, Any], dict[str, Upstream]]:
        """A node's literal inputs, and its upstream inputs as ``producer(source node,
        port)`` says to reach them (graph inputs with a transform are upstream too)."""
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
                source, source_port = producer(binding.source, binding.source_port)
                upstream[port] = (source, source_port, binding.transform)
        return literals, upstream

    def _arguments(self, step: PlanStep) -> dict[str, Any]:
        def producer(source: str, port: str) -> tuple[Any, Any]:
            produced = self._producer(source)
            if source in self.units.unit_of and not isinstance(produced, NodeOutput):
                return produced, (source, port)  # a SharedOutput's values
            return produced, port

        literals, upstream = self._bound_inputs(step, producer)
        arguments: dict[str, Any] = {
            "node_type": step.node.type,
            "node_id": step.node_id,
            "literals": literals,
            "upstream": upstream,
            "cache_key": self._key(step.node_id),
        }
        kill_after = self.tasks[step.node_id].kill_after
        if kill_after is not None:
            arguments["kill_after"] = kill_after
        return arguments

    def _producer(self, node_id: str) -> Any:
        """A producer's output (or future), brought back from disk if it was spilled."""
        produced = self.produced[node_id]
        if isinstance(produced, Spilled):
            assert self.memory is not None
            produced = self.produced[node_id] = self.memory.restore(produced)
        return produced

    def _output_of(self, node_id: str) -> NodeOutput:
        """A finished node's ``NodeOutput``, out of its future or its shared task's."""
        produced = self._producer(node_id)
        if isinstance(produced, PrefectFuture):
            produced = _completed_value(produced.state)
        if isinstance(produced, SharedOutput):
            produced = produced.output_of(node_id)
        return produced  # type: ignore[no-any-return]

    def _replicate(self, node_id: str, future: PrefectFuture[Any]) -> None:
        assert self.replicate is not None
        try:
            self.replicated[node_id] = self.replicate(future)
        except Exception as exc:  # consumers fetch it themselves instead
            logger.warning("could not replicate the output of %r: %s", node_id, exc)

    def _relieve_memory(self) -> None:
        """Above the memory threshold, spill outputs no started consumer holds yet."""
        if self.memory is None or not self.memory.over_threshold():
            return
        for node_id, produced in list(self.produced.items()):
            if isinstance(produced, Spilled) or self.memory.pinned(node_id):
                continue
            if node_id not in self.reports:
                continue  # not finished (or not yet processed): nothing to spill
            if any(c in self._started for c in self._successors[node_id]):
                continue  # a consumer received it already; spilling would not free it
            if isinstance(produced, PrefectFuture):
                if not produced.state.is_completed():
                    continue
                produced = self._output_of(node_id)
            try:
                spilled = self.memory.spill(node_id, produced)
            except (pickle.PicklingError, TypeError, AttributeError, OSError) as exc:
                logger.warning("cannot spill the output of %r, keeping it: %s", node_id, exc)
                self.memory.pin_in_memory(node_id)
                continue
            self.produced[node_id] = spilled
            self._forget_persisted(node_id)
            if not self.memory.over_threshold():
                return

    def _hand(self, step: PlanStep) -> dict[str, Any]:
        """The node's arguments, remembered so that ``_report`` can empty them.

        Prefect keeps a task's parameters in its run context, and some copies of that
        context live as long as the process: a Prefect service (tag concurrency, events)
        started during a task run keeps the context it started in. The ``upstream``
        mapping inside is the engine's own object, so emptying it once the node is done
        lets the upstream outputs go when their last consumer has finished.
        """
        arguments = self._arguments(step)
        self._handed[step.node_id] = arguments
        observe = self._announce(step)
        if observe is not None:
            arguments["observe"] = observe
        return arguments

    def _announce(self, step: PlanStep) -> dict[str, Any] | None:
        """Tell the instruments and the caller that a node is handed to its runner;
        returns what the worker needs to measure and trace it, if anything."""
        observe = None
        if self.instruments is not None:
            observe = self.instruments.node_submitted(step.node_id, step.node.type.qualified_name)
        if self.on_node_started is not None:
            self.on_node_started(step.node_id)
        return observe

    def _fallback_arguments(self, step: PlanStep) -> dict[str, Any]:
        """The failed node's inputs, handed to its fallback type (the ports it has)."""
        fallback_type = step.node.fallback_type
        policy = self.tasks[step.node_id].error_policy.fallback
        assert fallback_type is not None and policy is not None
        arguments = self._arguments(step)
        accepted = fallback_type.inputs
        literals = {p: v for p, v in arguments["literals"].items() if p in accepted}
        literals.update(policy.params)
        upstream = {p: v for p, v in arguments["upstream"].items() if p in accepted}
        return {
            **arguments,
            "node_type": fallback_type,
            "literals": literals,
            "upstream": upstream,
            "cache_key": None,
        }

    def _finish(self, node_id: str, state: State[Any]) -> Outcome:
        """Record a node's final task state and say what it means for its consumers."""
        step = self.plan.steps[node_id]
        type_name = step.node.type.qualified_name
        task_run_id = state.state_details.task_run_id
        if state.is_completed():
            output: NodeOutput = _completed_value(state)
            self._keep(node_id, output)
            self._measured[node_id] = getattr(output, "measured", None)
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
            return Outcome.PRODUCED

        if not state.is_final():
            # Prefect leaves a task whose upstream future failed in Pending/NotReady.
            self._block(node_id, state.message or "an upstream node failed")
            return Outcome.STOPPED
        exc = state.result(raise_on_failure=False)
        if not isinstance(exc, BaseException):
            exc = RuntimeError(state.message or f"task ended in state {state.type.value}")
        return self._failed(node_id, exc, str(task_run_id) if task_run_id else None)

    def _keep(self, node_id: str, output: NodeOutput) -> None:
        if not isinstance(self.produced.get(node_id), PrefectFuture):
            self.produced[node_id] = output

    def _failed(self, node_id: str, exc: BaseException, task_run_id: str | None) -> Outcome:
        """A node failed for good (its retries are spent): apply its policy's action."""
        self._measured[node_id] = getattr(exc, "nodegraph_measured", None)
        if isinstance(exc, NodeNotStarted) or (
            self.cancelled is not None and isinstance(exc, (*_CANCELLED, BrokenProcessPool))
        ):
            self._block(node_id, str(exc))
            return Outcome.STOPPED
        action = self._action(node_id)
        if action == "fallback":
            policy = self.tasks[node_id].error_policy.fallback
            assert policy is not None
            if policy.type is not None:
                self._failures[node_id] = (exc, task_run_id)
                return Outcome.RUN_FALLBACK
            output = NodeOutput(dict(policy.outputs or {}), 0.0, 0)
            self.produced[node_id] = output
            self._fell_back(node_id, exc, task_run_id, "default outputs")
            return Outcome.PRODUCED
        step = self.plan.steps[node_id]
        type_name = step.node.type.qualified_name
        error = NodeError.from_exception(node_id, type_name, exc)
        skipped = action == "skip"
        report = NodeReport(
            node_id,
            type_name,
            NodeState.SKIPPED if skipped else NodeState.FAILED,
            getattr(exc, "nodegraph_duration_s", None),
            error=error,
            task_run_id=task_run_id,
            attempts=getattr(exc, "nodegraph_attempts", 1),
            reason=f"skipped by policy after {error.error_type}: {error.message}"
            if skipped
            else None,
        )
        self._report(report)
        if action == "halt" and self.halted_at is None:
            self.halted_at = node_id
            if self.run_id is not None:
                stop_starting_nodes(self.run_id)
        for blocked in sorted(descendants(self._successors, [node_id]) & self._running):
            if skipped:
                self._skip(blocked, f"upstream node {node_id!r} was skipped")
            else:
                self._block(blocked, f"not run: upstream node {node_id!r} failed")
        return Outcome.STOPPED

    def _finish_fallback(self, node_id: str, state: State[Any] | BaseException) -> Outcome:
        exc, task_run_id = self._failures.pop(node_id)
        fallback_name = self.tasks[node_id].node.fallback_type.qualified_name  # type: ignore[union-attr]
        if isinstance(state, State) and state.is_completed():
            self.produced[node_id] = _completed_value(state)
            self._fell_back(node_id, exc, task_run_id, f"fallback node type {fallback_name}")
            return Outcome.PRODUCED
        if isinstance(state, State):
            fallback_exc = state.result(raise_on_failure=False)
        else:
            fallback_exc = state
        note = f"; its fallback {fallback_name} failed too: {fallback_exc}"
        self._policy_free_failure(node_id, exc, task_run_id, note)
        return Outcome.STOPPED

    def _policy_free_failure(
        self, node_id: str, exc: BaseException, task_run_id: str | None, note: str
    ) -> None:
        type_name = self.plan.steps[node_id].node.type.qualified_name
        error = NodeError.from_exception(node_id, type_name, exc)
        error.message += note
        self._report(
            NodeReport(
                node_id,
                type_name,
                NodeState.FAILED,
                getattr(exc, "nodegraph_duration_s", None),
                error=error,
                task_run_id=task_run_id,
                attempts=getattr(exc, "nodegraph_attempts", 1),
            )
        )
        for blocked in sorted(descendants(self._successors, [node_id]) & self._running):
            self._block(blocked, f"not run: upstream node {node_id!r} failed")

    def _fell_back(
        self, node_id: str, exc: BaseException, task_run_id: str | None, source: str
    ) -> None:
        step = self.plan.steps[node_id]
        type_name = step.node.type.qualified_name
        error = NodeError.from_exception(node_id, type_name, exc)
        self.tainted |= descendants(self._successors, [node_id])
        self._report(
            NodeReport(
                node_id,
                type_name,
                NodeState.FALLBACK,
                getattr(exc, "nodegraph_duration_s", None),
                error=error,
                task_run_id=task_run_id,
                attempts=getattr(exc, "nodegraph_attempts", 1),
                reason=f"{source} stood in after {error.error_type}: {error.message}",
            )
        )
        self._release_inputs(step)

    def _block(self, node_id: str, reason: str) -> None:
        if node_id in self.reports:
            return
        node_type = self.plan.steps[node_id].node.type.qualified_name
        if self.halted_at is not None or self.cancelled is not None:
            self._report(
                NodeReport(node_id, node_type, NodeState.PENDING, reason=self._halt_reason())
            )
            return
        error = NodeError(node_id, node_type, ErrorType.DEPENDENCY, reason)
        self._report(
            NodeReport(node_id, node_type, NodeState.UPSTREAM_FAILED, error=error, reason=reason)
        )

    def _skip(self, node_id: str, reason: str) -> None:
        if node_id in self.reports:
            return
        node_type = self.plan.steps[node_id].node.type.qualified_name
        self._report(NodeReport(node_id, node_type, NodeState.SKIPPED, reason=reason))

    def _halt_reason(self) -> str:
        if self.halted_at is None:
            return f"not run: {self.cancelled}"
        return f"not run: the run halted after node {self.halted_at!r} failed"

    def _release_inputs(self, step: PlanStep) -> None:
        for upstream in step.upstream:
            self._consumers_left[upstream] -= 1
            if self._consumers_left[upstream] == 0 and upstream not in self._wanted:
                dropped = self.produced.pop(upstream, None)
                if isinstance(dropped, Spilled):
                    dropped.path.unlink(missing_ok=True)
                self._forget_persisted(upstream)

    def _forget_persisted(self, node_id: str) -> None:
        """Drop Prefect's in-memory copy of a persisted result (its result store keeps
        recent records in an LRU cache); the stored copy stays in the cache tiers."""
        key = self._key(node_id)
        if key is None:
            return
        flow_run = FlowRunContext.get()
        store = getattr(flow_run, "result_store", None) if flow_run else None
        cache = getattr(store, "cache", None)
        if cache is not None:
            cache.pop(key, None)

    def _report(self, report: NodeReport) -> None:
        handed = self._handed.pop(report.node_id, None)
        if handed is not None:
            handed["upstream"].clear()
        # Every report carries its node's key, whatever the path that made it; a node
        # computed from a fallback has no key: its result is not the key's.
        key = self.keys.get(report.node_id)
        if report.cache_key is None and key is not None and report.node_id not in self.tainted:
            if report.state != NodeState.FALLBACK:
                report.cache_key = key.key
        self.reports[report.node_id] = report
        if self.instruments is not None:
            self.instruments.node_finished(
                report,
                self._measured.pop(report.node_id, None),
                self._read_bytes.pop(report.node_id, None),
            )
        if self.listener is not None:
            self.listener(report, len(self.reports), len(self.plan.order))

    def _result(self) -> RunResult:
        for node_id in self.plan.order:
            if node_id not in self.reports:  # behind a halt
                self._block(node_id, "not run")
        if self.lost_workers is not None:
            self._note_lost_workers(self.lost_workers)
        outputs: dict[str, Any] = {}
        for request in self.plan.outputs:
            report = self.reports.get(request.node)
            if report is None or not report.state.ok:
                continue
            outputs[request.name] = self._output_of(request.node).values[request.port]
        states = {r.state for r in self.reports.values()}
        if self.cancelled is not None and NodeState.PENDING in states:
            run_state = RunState.CANCELLED
        elif self.halted_at is not None:
            run_state = RunState.HALTED
        elif states & {NodeState.FAILED, NodeState.UPSTREAM_FAILED, NodeState.PENDING}:
            run_state = RunState.FAILED
        elif NodeState.SKIPPED in states:
            run_state = RunState.PARTIAL
        else:
            run_state = RunState.COMPLETED
        ordered = {n: self.reports[n] for n in self.plan.order}
        return RunResult(
            graph=self.plan.name,
            state=run_state,
            outputs=outputs,
            nodes=ordered,
            halted_at=self.halted_at,
            extra=self._extra(),
        )

    def _note_lost_workers(
        self, lost_workers: Callable[[list[str]], Mapping[str, list[str]]]
    ) -> None:
        """Nodes that ran again after their worker died say so, with their attempts.

        Best effort: the outputs are right either way, only the report would miss it.
        """
        by_task_run: dict[str, list[NodeReport]] = {}
        for report in self.reports.values():
            if report.task_run_id and report.state.ok:
                by_task_run.setdefault(report.task_run_id, []).append(report)
        if not by_task_run:
            return
        try:
            lost = lost_workers(list(by_task_run))
        except Exception as exc:
            logger.warning("cannot tell which nodes were recovered from lost workers: %s", exc)
            return
        for task_run_id, workers in lost.items():
            for report in by_task_run.get(task_run_id, ()):
                report.recovered_from(list(workers))

    def _extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.replicated:
            extra["replicated_to"] = dict(self.replicated)
        if self.memory is not None and self.memory.spilled:
            extra["spilled"] = list(self.memory.spilled)
        if self.units.segments:
            extra["shared_tasks"] = [
                {"name": s.name, "kind": s.kind, "nodes": list(s.nodes)}
                for s in self.units.segments
            ]
        if self.cancel_noticed_at is not None:
            # When the run saw the cancel: later than the request by one check, or more
            # while the server is slow to answer.
            extra["cancel_noticed_at"] = self.cancel_noticed_at
        return extra


def _lost(future: PrefectFuture[Any], state: Any) -> BaseException:
    """Why a submitted node ended without a final state (a Dask worker gave up on it)."""
    wrapped = getattr(future, "wrapped_future", None)
    if wrapped is not None:
        try:
            found = wrapped.exception(timeout=0)
        except Exception as exc:  # the exception itself could not be fetched
            found = exc
        if isinstance(found, BaseException):
            return found
    return RuntimeError(f"the node's task ended without a final state ({state})")


_CANCELLED = (concurrent.futures.CancelledError, asyncio.CancelledError)
"""What a future cancelled before its node started raises (threads and processes;
Dask)."""


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
