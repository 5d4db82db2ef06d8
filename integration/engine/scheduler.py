"""The scheduler: run a plan's units on a backend and collect a ``RunResult``.

    >>> # Scheduler(plan, InlineBackend(), inputs).run() -> RunResult

Units (a node, a fused segment or a batch) are submitted as their producers finish
(in-degree counters, so a run is linear in nodes plus edges). Consumers receive the
producers' handles (Prefect futures) or outputs, never copies of values. The scheduler
drops its own reference to an output once the output's last consumer has finished,
unless the caller asked for it.

When a node fails (after its retries), its policy's action decides:

- ``fail``: its descendants are ``upstream_failed``; independent branches go on.
- ``fallback``: the fallback's outputs stand in and descendants run. Neither the
  fallback's result nor anything computed from it is written to the cache under the
  node keys, which promise the real result.
- ``skip``: the node and its descendants are ``skipped``; independent branches go on.
- ``halt``: nothing new is submitted; nodes already running finish (and persist), and
  the nodes that did not run stay ``pending``.

A cancel (from any thread) starts nothing new, asks the backend to stop what it can,
and keeps every finished result. Nothing here knows Prefect or Dask: the backend
(``integration.engine.backend``) does.

The graph may grow while it runs: a ``program`` (``integration.engine.program``; the
ComfyUI layer's for prompts) adds nodes and edges through ``add_node``, ``add_cached``
and ``add_edge``, and is asked before a ready node is submitted (lazy inputs) and after
it finished (expansion). A nodegraph plan is the static case: no program, and the
loop does no work for one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
import logging
import pickle
import time
from collections.abc import Callable, Mapping
from concurrent.futures.process import BrokenProcessPool
from enum import Enum
from typing import Any

from integration.cache.keys import NodeKey
from integration.engine.backend import Backend, Completion, Submission
from integration.engine.compile import ExecutionPlan, compile_plan, consult_cache
from integration.engine.hooks import Hooks, RunHooks
from integration.engine.program import Program
from integration.engine.units import (
    FusedNode,
    NodeNotStarted,
    NodeOutput,
    SharedOutput,
    SharedTask,
    Upstream,
)
from integration.errors import ErrorType, NodeError
from integration.graph.gcpause import gc_paused
from integration.graph.order import descendants
from integration.graph.policy import ErrorPolicy
from integration.optimize import ExecutionOptimizer, Segment, Units
from integration.plan import Plan, PlanStep
from integration.resources import ResourcePool, ResourceRequirement
from integration.resources.memory import MemoryManager, Spilled
from integration.result import NodeReport, NodeState, RunResult, RunState

logger = logging.getLogger("nodegraph.run")

DEFAULT_WINDOW = 64
"""Most units in flight at once when the backend sets no bound of its own."""

CachedLoader = Callable[[str], tuple[Any, str, int] | None]
"""Loads the output stored under a key: ``(output, tier, size in bytes)`` or ``None``."""

_CANCELLED = (concurrent.futures.CancelledError, asyncio.CancelledError)
"""What a unit cancelled before it started raises (threads and processes; Dask)."""


class Outcome(Enum):
    """What a finished unit means for the nodes after it."""

    PRODUCED = "produced"  # outputs available: consumers may run
    STOPPED = "stopped"  # no outputs: consumers were marked
    RUN_FALLBACK = "run_fallback"  # the fallback node type must run first
    EXPANDED = "expanded"  # it waits for the nodes it added (a program's expansion)


class Scheduler:
    """One run of a plan on a backend.

    ``policies`` are the nodes' effective error policies; ``keys`` their cache keys,
    ``cache`` the tiers whose entries ``load_cached`` reads (both or neither).
    ``resuming`` also looks up run-scoped keys (checkpoints of ``cacheable=False``
    nodes), which only a resumed run shares with the run it continues. ``window``
    bounds how many units run ahead of their producers (prefetching backends).
    ``kill_on_timeout``: the backend kills a node's process at its timeout, so the
    node call carries ``kill_after``. ``replicate`` copies a broadcast output to every
    worker; ``lost_workers`` names the workers that died running given task runs.
    ``program`` makes the graph dynamic (see the module docstring): the plan then
    starts empty, the program adds and serves the nodes from the cache itself, and no
    unit is prefetched, fused or batched.
    """

    def __init__(
        self,
        plan: Plan,
        backend: Backend,
        inputs: Mapping[str, Any],
        *,
        policies: Mapping[str, ErrorPolicy] | None = None,
        hooks: RunHooks | None = None,
        keys: Mapping[str, NodeKey] | None = None,
        cache: Any = None,
        load_cached: CachedLoader | None = None,
        refresh: bool = False,
        resuming: bool = False,
        pool: ResourcePool | None = None,
        memory: MemoryManager | None = None,
        optimizer: ExecutionOptimizer | None = None,
        window: int | None = None,
        kill_on_timeout: bool = False,
        replicate: Callable[[Any], list[str]] | None = None,
        lost_workers: Callable[[list[str]], Mapping[str, list[str]]] | None = None,
        program: Program | None = None,
    ) -> None:
        self.plan = plan
        self.program = program
        self.backend = backend
        self.inputs = inputs
        self.policies = policies or {}
        self.hooks = hooks if isinstance(hooks, Hooks) else Hooks([hooks])
        self.keys = dict(keys or {}) if program is not None else keys or {}
        self.cache = cache
        self.load_cached = load_cached
        self.refresh = refresh
        self.resuming = resuming
        self.pool = pool
        self.memory = memory
        self.optimizer = optimizer
        self.window = window
        self.kill_on_timeout = kill_on_timeout
        self.replicate = replicate
        self.lost_workers = lost_workers
        self.sequential = backend.max_in_flight == 1
        # Fused segments and batches: nodes that share a task (set when a run starts).
        self.units = Units()
        self.execution_plan: ExecutionPlan | None = None
        self._located: dict[str, str] | None = None  # what the cache held, once consulted
        # What workers measured, and cache bytes read, by node, until the node reports.
        self._measured: dict[str, Any] = {}
        self._read_bytes: dict[str, int] = {}
        self.replicated: dict[str, list[str]] = {}
        if memory is not None:
            for node_id, step in plan.steps.items():
                if step.node.pin_in_memory:
                    memory.pin_in_memory(node_id)
        self._started: set[str] = set()
        self._reserved: dict[str, ResourceRequirement] = {}
        # The argument mappings handed to the backend, by node, until the node reports.
        self._handed: dict[str, dict[str, Any]] = {}
        self.reports: dict[str, NodeReport] = {}
        # An output (or loaded from the cache), a backend handle, or a spilled output.
        self.produced: dict[str, Any] = {}
        self.halted_at: str | None = None
        self.cancel_noticed_at: float | None = None
        # Set (from another thread) when the run is cancelled: nothing new starts.
        self.cancelled: str | None = None
        # Nodes computed from a fallback's outputs: never cached under their node keys.
        self.tainted: set[str] = set()
        self._failures: dict[str, tuple[BaseException, str | None]] = {}
        self._wanted = {request.node for request in plan.outputs}
        self._successors = {n: s.consumers for n, s in plan.steps.items()}
        # A program adds (and serves from the cache) its nodes as the run goes.
        self.executing = self._consult_cache() if program is None else self._start_cache()
        self._running = set(self.executing)
        self._consumers_left = {
            n: sum(c in self._running for c in s.consumers) for n, s in plan.steps.items()
        }
        # The run loop's counters and ready queue, which a program's nodes join.
        self._position: dict[str, int] = {}
        self._not_done: dict[str, int] = {}
        self._not_submitted: dict[str, int] = {}
        self._ready: list[tuple[int, str]] = []
        self._prepared: dict[str, Submission] = {}  # a program's submissions, until sent

    # -- the cache ----------------------------------------------------------------

    def _consult_cache(self) -> list[str]:
        """Load what the cache holds and the run needs; return the nodes that must run."""
        if self.cache is None or self.load_cached is None or not self.keys:
            return list(self.plan.order)
        self.cache.start_run()
        located = {}
        if not self.refresh:
            located = consult_cache(self.plan, self.keys, self.cache.locate, self.resuming)
        while True:
            compiled = compile_plan(self.plan, located)
            missing = [n for n in compiled.load if not self._load(n)]
            if not missing:
                break
            for node_id in missing:  # vanished or corrupt since located: run it instead
                located.pop(node_id)
        for node_id in compiled.skip:
            self._cached_report(node_id, located[node_id])
        self._located = located
        return list(compiled.execute)

    def _start_cache(self) -> list[str]:
        if self.cache is not None:
            self.cache.start_run()  # refused entries and shared tiers: warned once per run
        return []

    def _load(self, node_id: str) -> bool:
        assert self.load_cached is not None
        found = self.load_cached(self.keys[node_id].key)
        if found is None:
            return False
        self._loaded(node_id, found)
        return True

    def _loaded(self, node_id: str, found: tuple[Any, str, int]) -> None:
        output, tier, size = found
        self.produced[node_id] = output
        self._read_bytes[node_id] = size
        self._cached_report(node_id, tier)

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

    def _policy(self, node_id: str) -> ErrorPolicy:
        policy = self.policies.get(node_id)
        if policy is None:
            policy = self.plan.steps[node_id].node.policy or ErrorPolicy()
        return policy

    def _action(self, node_id: str) -> str:
        return self._policy(node_id).final_action

    # -- control ------------------------------------------------------------------

    def cancel(self, reason: str = "the run was cancelled") -> None:
        """Stop the run: start no more nodes, cancel queued ones and stop running ones
        where the backend can (processes). Nodes running on threads or Dask workers
        finish and keep their results. Safe to call from any thread."""
        if self.cancelled is not None:
            return
        self.cancelled = reason
        self.cancel_noticed_at = time.time()
        self.backend.stop_starting(True)
        is_handle = self.backend.is_handle
        self.backend.cancel([p for p in list(self.produced.values()) if is_handle(p)])
        self.backend.wake()

    @property
    def stopping(self) -> bool:
        return self.halted_at is not None or self.cancelled is not None

    # -- a dynamic graph (a program's calls, while ``run`` goes) ------------------

    def has_node(self, node_id: str) -> bool:
        return node_id in self.plan.steps

    def add_node(self, step: PlanStep) -> None:
        """Add a node to the run: it is ready once every producer that ``add_edge``
        links to it has finished."""
        node_id = step.node_id
        self._register(step)
        self._running.add(node_id)
        position = self._position[node_id] = len(self._position)
        self._not_done[node_id] = 0
        self._not_submitted[node_id] = 0
        heapq.heappush(self._ready, (position, node_id))

    def add_cached(self, step: PlanStep) -> bool:
        """Add a node served from the cache under its key (``keys``), if the cache
        holds that key; whether it did. Run-scoped keys are read only on resume."""
        key = self.keys.get(step.node_id)
        if self.load_cached is None or self.refresh or key is None:
            return False
        if not (key.shared or self.resuming):
            return False
        found = self.load_cached(key.key)
        if found is None:
            return False
        self._register(step)
        self._loaded(step.node_id, found)
        return True

    def _register(self, step: PlanStep) -> None:
        node_id = step.node_id
        if node_id in self.plan.steps:
            raise ValueError(f"node {node_id!r} is in the run already; node ids are unique")
        self.plan.steps[node_id] = step
        self.plan.order.append(node_id)
        self._successors[node_id] = step.consumers
        self._consumers_left[node_id] = 0
        # A program may link any finished node to a node it adds later: keep them all.
        self._wanted.add(node_id)

    def add_edge(self, source: str, target: str) -> None:
        """``target`` needs ``source``'s output: it waits for ``source`` to finish, or
        is marked (with what depends on it) if ``source`` failed or was skipped."""
        consumers = self._successors[source]
        if target in consumers:
            return
        consumers.append(target)
        self.plan.steps[target].upstream.append(source)
        report = self.reports.get(source)
        if report is None:
            self._not_done[target] += 1
            self._consumers_left[source] += 1
            return
        if report.state.ok:
            return
        marked = sorted(({target} | descendants(self._successors, [target])) & self._running)
        for node_id in marked:
            if report.state == NodeState.SKIPPED:
                self._skip(node_id, f"upstream node {source!r} was skipped")
            else:
                self._block(node_id, f"not run: upstream node {source!r} failed")

    def waits(self, node_id: str) -> bool:
        return self._not_done[node_id] > 0

    def output_of(self, node_id: str) -> NodeOutput:
        """A finished node's output (completed, cached or fallen back)."""
        return self._output_of(node_id)

    # -- the loop -----------------------------------------------------------------

    def run(self) -> RunResult:
        """Submit ready units at once, and look ahead while the backend has room.

        A unit is a node, a fused segment or a batch; ``units`` maps each node to its
        unit's head, and the counters below count edges from running producers in
        other units. On a prefetching backend, a unit whose producers are all
        submitted but not all finished may be submitted early: the runner resolves
        the producers' handles where the unit runs, so the unit's setup overlaps its
        producers' work instead of following it. Ready units always go first, and
        prefetching stops at ``window`` units in flight. Consumers of a node with a
        fallback are never prefetched: they must receive the fallback's outputs if the
        node fails. Batches form from ready nodes only. A backend that runs one unit
        at a time gets them in plan order (level by level when batches may form).
        """
        steps = self.plan.steps
        compiled = compile_plan(self.plan, self._located, self.optimizer, self.sequential)
        self.execution_plan = compiled
        order = list(compiled.execute)
        groups = {n: group for group in compiled.batch_groups for n in group}
        self.units = Units.of(compiled.segments)
        limit = self.backend.max_in_flight
        window = limit or self.window or DEFAULT_WINDOW
        head = self.units.head
        members = self.units.members
        position = {node_id: i for i, node_id in enumerate(order)}
        running = self._running
        heads = [n for n in order if head(n) == n]
        not_done = {
            h: sum(u in running and head(u) != h for m in members(h) for u in steps[m].upstream)
            for h in heads
        }
        not_submitted = dict(not_done)
        program = self.program
        prefetch = self.backend.prefetch and not self.sequential and program is None
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
        broadcasting: set[str] = set()
        if self.replicate is not None:
            broadcasting = {
                node_id
                for node_id in self.executing
                if any(port.broadcast for port in steps[node_id].node.type.outputs.values())
            }
            no_prefetch |= {head(c) for n in broadcasting for c in self._successors[n]}
        # Batchable nodes wait for the rest of their group (same type, params, level)
        # to be ready, then run as one batch; they are never prefetched.
        no_prefetch |= set(groups)
        held: dict[tuple[str, ...], set[str]] = {}
        waiting: list[tuple[int, str]] = []  # ready, but their resources are taken
        ready = [(position[n], n) for n in heads if not_done[n] == 0]
        heapq.heapify(ready)
        lookahead: list[tuple[int, str]] = []
        submitted: set[str] = set()
        in_flight: dict[tuple[str, bool], Any] = {}
        # What a program's nodes change while the run goes (the same objects).
        self._position, self._not_done, self._not_submitted, self._ready = (
            position,
            not_done,
            not_submitted,
            ready,
        )
        finish = self._finish if program is None else self._finish_program

        def track(unit: str, is_fallback: bool, submission: Submission) -> None:
            handle = self.backend.submit(submission, is_fallback)
            in_flight[unit, is_fallback] = handle
            for node_id in submission.nodes:
                self.produced[node_id] = handle

        def submit(unit: str) -> None:
            nodes = members(unit)
            self._started.update(nodes)
            segment = self.units.unit_of.get(unit)
            if segment is not None:
                with gc_paused():  # thousands of small objects, no cycles to collect
                    submission = self._shared(segment)
            elif program is None:
                submission = Submission(unit, "node", nodes, self._hand(steps[unit]))
            else:
                submission = self._prepared.pop(unit)
            submitted.update(nodes)
            for node_id in nodes:
                for consumer in self._successors[node_id]:
                    if consumer not in running or head(consumer) == unit:
                        continue
                    consumer = head(consumer)
                    not_submitted[consumer] -= 1
                    if (
                        prefetch
                        and not_submitted[consumer] == 0
                        and not_done[consumer] > 0
                        and consumer not in no_prefetch
                    ):
                        heapq.heappush(lookahead, (position[consumer], consumer))
            track(unit, False, submission)

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

        def full() -> bool:
            return limit is not None and len(in_flight) >= limit

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
            while ready and not full():
                entry = heapq.heappop(ready)
                node_id = entry[1]
                if node_id in submitted or self._all_reported(node_id):
                    continue
                if program is not None and not self._prepare(node_id):
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
                if node_id not in submitted and not self._all_reported(node_id):
                    submit(node_id)

        if program is not None:
            program.begin(self)
        self.hooks.run_started(self.plan.name, len(self.plan.order))
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
                completion = self.backend.wait_any()
                if completion is None:
                    continue  # woken by a cancel
                unit, is_fallback = completion.unit, completion.fallback
                handle = in_flight.pop((unit, is_fallback), None)
                reserved = self._reserved.pop(unit, None)
                if reserved is not None:
                    assert self.pool is not None
                    self.pool.release(reserved)
                if self._all_reported(unit):
                    continue  # a prefetched unit whose producer failed first
                segment = self.units.unit_of.get(unit)
                if is_fallback:
                    outcome = self._finish_fallback(unit, completion)
                elif completion.not_run:
                    # Handed over early, and not run: a producer failed, or was
                    # refused itself and goes again. A failure marks what depends on
                    # it (by its policy); the rest goes again once its producers end.
                    if not_done.get(unit, 0) > 0:
                        submitted.difference_update(members(unit))
                        continue
                    if segment is not None and any(m in self.reports for m in members(unit)):
                        submitted.difference_update(members(unit))
                        heapq.heappush(ready, (position[unit], unit))
                        pump()
                        continue
                    assert completion.error is not None
                    if segment is not None:
                        # Nothing explains it (a worker gave up on the task): every
                        # member fails, each by its own policy.
                        self._finish_shared(segment, completion)
                        self._release_units(list(segment.nodes), unit, not_done, ready, position)
                        self._relieve_memory()
                        pump()
                        continue
                    outcome = self._failed(unit, completion.error, None)
                elif segment is not None:
                    with gc_paused():
                        self._finish_shared(segment, completion)
                    # Members that failed release their consumers too: those are marked
                    # already, and the other members of their units may still run.
                    self._release_units(list(segment.nodes), unit, not_done, ready, position)
                    self._relieve_memory()
                    pump()
                    continue
                else:
                    outcome = finish(unit, completion)
                if outcome is Outcome.RUN_FALLBACK:
                    track(unit, True, self._fallback_submission(steps[unit]))
                    continue
                if outcome is Outcome.EXPANDED:
                    submitted.discard(unit)  # ready again once the nodes it added are done
                    if not_done[unit] == 0:
                        heapq.heappush(ready, (position[unit], unit))
                    pump()
                    continue
                if outcome is Outcome.PRODUCED and unit in broadcasting and handle is not None:
                    if self.produced.get(unit) is handle:
                        self._replicate(unit, handle)
                # A unit that stopped releases its consumers as well: they are marked
                # (by its policy), but a segment they belong to may hold nodes that
                # do not depend on it (sequential runs, level segments).
                self._release_units([unit], unit, not_done, ready, position)
                self._relieve_memory()
                pump()
            if program is not None and not self.stopping:
                self._stalled(program)
        finally:
            # Whatever ends the loop, the pool and the node-start gate outlive this run.
            if self.pool is not None:
                for need in self._reserved.values():
                    self.pool.release(need)
                self._reserved.clear()
            self.backend.stop_starting(False)
        return self._result()

    def _prepare(self, node_id: str) -> bool:
        """Ask the program about a ready node; whether to submit it now."""
        if self._not_done[node_id] > 0:
            return False  # queued before an edge into it was added: it waits
        assert self.program is not None
        try:
            prepared = self.program.prepare(node_id)
        except Exception as exc:  # the node's own check (ComfyUI's lazy status) failed
            self._failed(node_id, exc, None)
            self._release_units([node_id], node_id, self._not_done, self._ready, self._position)
            return False
        if prepared is None:
            return False  # it waits for what it linked to, or was marked
        if isinstance(prepared, Submission):
            observe = self._announce(self.plan.steps[node_id])
            if observe is not None:
                prepared.arguments["observe"] = observe
            self._prepared[node_id] = prepared
            return True
        # It needs no call (an expanded node's result, out of the nodes it added).
        self.produced.pop(node_id, None)
        self._finish(node_id, Completion(node_id, value=prepared), self.program.reason(node_id))
        self._release_units([node_id], node_id, self._not_done, self._ready, self._position)
        return False

    def _finish_program(self, node_id: str, completion: Completion) -> Outcome:
        """A program's node ended: it failed, it expanded, or it is done."""
        assert self.program is not None
        if completion.error is not None:
            return self._failed(node_id, completion.error, completion.task_run_id)
        try:
            expanded = self.program.finished(node_id, completion.value)
        except Exception as exc:  # what it returned breaks the program's rules
            return self._failed(node_id, exc, completion.task_run_id)
        if expanded:
            self.produced.pop(node_id, None)
            self._handed.pop(node_id, None)
            return Outcome.EXPANDED
        return self._finish(node_id, completion, self.program.reason(node_id))

    def _stalled(self, program: Program) -> None:
        """Nothing runs, yet nodes wait: they wait on each other (a cycle the program
        made while the run went). The program names the node to fail."""
        waiting = [n for n in self.plan.order if n not in self.reports]
        if waiting:
            blamed, exc = program.stalled(waiting)
            self._failed(blamed, exc, None)

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

    def _needs(self) -> dict[str, ResourceRequirement]:
        """The resource requirements the pool gates, by node (none one at a time)."""
        if self.pool is None or self.sequential:
            return {}
        return self.plan.resource_needs(self.executing)

    # -- shared tasks (fused segments and batches) ------------------------------------

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

    def _shared(self, segment: Segment) -> Submission:
        """The submission of a segment or batch: every node's own inputs, cache key and
        instruments, and the outputs of producers in other units."""
        # Members marked before the unit started (a producer of theirs failed) stay
        # out; the others do not depend on them.
        live = tuple(n for n in segment.nodes if n not in self.reports)
        inside = set(live)
        external: dict[str, Any] = {}
        fused: list[FusedNode] = []
        # Readers in order, each once (two ports may read one producer): a dict, since a
        # level segment's producer may have tens of thousands of readers.
        consumers: dict[str, dict[str, None]] = {}
        for node_id in live:
            step = self.plan.steps[node_id]

            def by_id(source: str, port: str, node_id: str = node_id) -> tuple[Any, Any]:
                if source in inside:
                    consumers.setdefault(source, {})[node_id] = None
                elif source not in external:
                    external[source] = self._producer(source)
                return source, port

            literals, upstream = self._bound_inputs(step, by_id)
            halts = self._action(node_id) == "halt"
            observe = self._announce(step)
            fused.append(
                FusedNode(
                    step.node.type, node_id, literals, upstream, self._key(node_id), observe, halts
                )
            )
        keep = {
            n
            for n in live
            if n in self._wanted
            or any(c in self._running and c not in inside for c in self._successors[n])
        }
        self._handed[segment.head] = {"upstream": external}
        readers = {source: list(found) for source, found in consumers.items()}
        spec = SharedTask(segment.kind, fused, keep, readers, refresh=self.refresh)
        return Submission(
            segment.head, "shared", live, {"task": spec, "external": external, "name": segment.name}
        )

    def _all_reported(self, unit: str) -> bool:
        return all(n in self.reports for n in self.units.members(unit))

    def _finish_shared(self, segment: Segment, completion: Completion) -> None:
        """Report every node of a shared task on its own."""
        exc = completion.error
        shared: SharedOutput | None = completion.value if exc is None else None
        if exc is not None:
            shared = getattr(exc, "shared_output", None)
        run_id = completion.task_run_id
        is_handle = self.backend.is_handle
        for node_id in segment.nodes:
            if node_id in self.reports:
                continue
            step = self.plan.steps[node_id]
            type_name = step.node.type.qualified_name
            if shared is not None and node_id in shared.outputs:
                output = shared.outputs[node_id]
                if exc is not None or not is_handle(self.produced.get(node_id)):
                    # The task failed: its handle holds no value for consumers.
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

    # -- arguments ----------------------------------------------------------------

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
        if self.kill_on_timeout:
            timeout = self._policy(step.node_id).timeout_seconds
            if timeout is not None:
                arguments["kill_after"] = timeout
        return arguments

    def _producer(self, node_id: str) -> Any:
        """A producer's output (or handle), brought back from disk if it was spilled."""
        produced = self.produced[node_id]
        if isinstance(produced, Spilled):
            assert self.memory is not None
            produced = self.produced[node_id] = self.memory.restore(produced)
        return produced

    def _output_of(self, node_id: str) -> NodeOutput:
        """A finished node's ``NodeOutput``, out of its handle or its shared task's."""
        produced = self._producer(node_id)
        if self.backend.is_handle(produced):
            produced = self.backend.value(produced)
        if isinstance(produced, SharedOutput):
            produced = produced.output_of(node_id)
        return produced  # type: ignore[no-any-return]

    def _replicate(self, node_id: str, handle: Any) -> None:
        assert self.replicate is not None
        try:
            self.replicated[node_id] = self.replicate(handle)
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
            if self.backend.is_handle(produced):
                if not self.backend.handle_done(produced):
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

        A runner may keep a task's parameters alive (Prefect keeps them in its run
        context, and some copies of that context live as long as the process). The
        ``upstream`` mapping inside is the scheduler's own object, so emptying it once
        the node is done lets the upstream outputs go when their last consumer has
        finished.
        """
        arguments = self._arguments(step)
        self._handed[step.node_id] = arguments
        observe = self._announce(step)
        if observe is not None:
            arguments["observe"] = observe
        return arguments

    def _announce(self, step: PlanStep) -> dict[str, Any] | None:
        """Tell the hooks that a node is handed to its runner; returns what the worker
        needs to measure and trace it, if anything."""
        return self.hooks.node_started(step.node_id, step.node.type.qualified_name)

    def _fallback_submission(self, step: PlanStep) -> Submission:
        """The failed node's inputs, handed to its fallback type (the ports it has)."""
        fallback_type = step.node.fallback_type
        policy = self._policy(step.node_id).fallback
        assert fallback_type is not None and policy is not None
        arguments = self._arguments(step)
        accepted = fallback_type.inputs
        literals = {p: v for p, v in arguments["literals"].items() if p in accepted}
        literals.update(policy.params)
        upstream = {p: v for p, v in arguments["upstream"].items() if p in accepted}
        arguments.update(
            node_type=fallback_type, literals=literals, upstream=upstream, cache_key=None
        )
        return Submission(step.node_id, "fallback", (step.node_id,), arguments)

    # -- outcomes -----------------------------------------------------------------

    def _finish(self, node_id: str, completion: Completion, reason: str | None = None) -> Outcome:
        """Record a node's completion and say what it means for its consumers."""
        if completion.error is not None:
            return self._failed(node_id, completion.error, completion.task_run_id)
        step = self.plan.steps[node_id]
        output: NodeOutput = completion.value
        self._keep(node_id, output)
        self._measured[node_id] = getattr(output, "measured", None)
        from_cache = completion.from_cache
        self._report(
            NodeReport(
                node_id,
                step.node.type.qualified_name,
                NodeState.CACHED if from_cache else NodeState.COMPLETED,
                None if from_cache else output.duration_s,
                task_run_id=completion.task_run_id,
                attempts=0 if from_cache else getattr(output, "attempts", 1),
                cache_tier="prefect" if from_cache else None,
                reason=reason,
            )
        )
        self._release_inputs(step)
        return Outcome.PRODUCED

    def _keep(self, node_id: str, output: Any) -> None:
        if not self.backend.is_handle(self.produced.get(node_id)):
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
            policy = self._policy(node_id).fallback
            assert policy is not None
            if policy.type is not None:
                self._failures[node_id] = (exc, task_run_id)
                return Outcome.RUN_FALLBACK
            self.produced[node_id] = NodeOutput(dict(policy.outputs or {}), 0.0, 0)
            self._fell_back(node_id, exc, task_run_id, "default outputs")
            return Outcome.PRODUCED
        type_name = self.plan.steps[node_id].node.type.qualified_name
        error = NodeError.from_exception(node_id, type_name, exc)
        skipped = action == "skip"
        self._report(
            NodeReport(
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
        )
        if action == "halt" and self.halted_at is None:
            self.halted_at = node_id
            self.backend.stop_starting(True)
        for blocked in sorted(descendants(self._successors, [node_id]) & self._running):
            if skipped:
                self._skip(blocked, f"upstream node {node_id!r} was skipped")
            else:
                self._block(blocked, f"not run: upstream node {node_id!r} failed")
        return Outcome.STOPPED

    def _finish_fallback(self, node_id: str, completion: Completion) -> Outcome:
        exc, task_run_id = self._failures.pop(node_id)
        fallback_type = self.plan.steps[node_id].node.fallback_type
        assert fallback_type is not None
        fallback_name = fallback_type.qualified_name
        if completion.ok:
            self.produced[node_id] = completion.value
            self._fell_back(node_id, exc, task_run_id, f"fallback node type {fallback_name}")
            return Outcome.PRODUCED
        note = f"; its fallback {fallback_name} failed too: {completion.error}"
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
        """Drop the runner's in-memory copy of a persisted result; the stored copy
        stays in the cache tiers."""
        key = self._key(node_id)
        if key is not None:
            self.backend.forget(key)

    # -- reporting ----------------------------------------------------------------

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
        if self.hooks.enabled:
            self.hooks.node_finished(
                report,
                len(self.reports),
                len(self.plan.order),
                self._measured.pop(report.node_id, None),
                self._read_bytes.pop(report.node_id, None),
            )

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
        if self.program is not None:
            outputs.update(self.program.outputs())
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
        if self.program is not None:
            extra.update(self.program.extra())
        return extra
