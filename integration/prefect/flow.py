"""Translate a plan into a Prefect flow, and run graphs from Python.

    >>> import integration
    >>> result = integration.run("flows/examples/hello.yaml", inputs={"name": "Ada"})
    >>> result.outputs["message"]
    'HELLO, ADA!'
    >>> hello = integration.to_flow("flows/examples/hello.yaml")
    >>> hello(name="Ada")["letters_doubled"]
    6

A graph becomes a flow named after the graph whose parameters are the graph's inputs,
with one task per node. Calling the flow returns ``{output name: value}`` and raises
``GraphRunFailed`` if a node failed, so it composes as a subflow in a user's own flow.
``run`` calls the same flow and returns the full ``RunResult`` instead.
"""

from __future__ import annotations

import inspect
import logging
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.states import Cancelled, Completed, Crashed

from integration.cache import besteffort
from integration.cache.factory import cache_folder, hierarchy_for, signing_key_for
from integration.cache.hierarchy import CacheHierarchy
from integration.cache.history import record_run
from integration.cache.keys import graph_keys
from integration.comfy.signatures import Signatures
from integration.config import (
    CachingConfig,
    FusionConfig,
    MonitoringConfig,
    NodegraphConfig,
    ResourceManagementConfig,
    caching_for,
    load_config,
)
from integration.engine import Hooks, ListenerHooks, NodeListener, Scheduler, StartedHooks
from integration.errors import ConfigError, NodegraphError
from integration.graph.context import NodeHooks, PreviewHook, ProgressHook
from integration.graph.gcpause import heap_frozen
from integration.graph.load import GraphSource, load_graph
from integration.graph.policy import ErrorPolicy, default_policy
from integration.graph.registry import NodeRegistry, PackSource
from integration.graph.validate import BoundGraph, bind, resolve_inputs
from integration.observability.instruments import RunInstruments
from integration.observability.metrics import serve_metrics
from integration.optimize import (
    ExecutionOptimizer,
    NodeDurations,
    effective_policies,
    node_signature,
    optimizer_for,
)
from integration.plan import Plan, make_plan
from integration.prefect.backend import ComfyTasks, NodeTasks, PrefectBackend
from integration.prefect.client import reused_client
from integration.prefect.heartbeat import flow_run_heartbeats, prefect_heartbeats_off
from integration.prefect.monitor import Progress, publish_progress, run_monitor
from integration.prefect.placement import place
from integration.prefect.prompt import ComfyPrompt, is_comfy_graph, prepare_prompt
from integration.prefect.reporting import RunReporter
from integration.prefect.runners import DaskSettings, dask_settings, task_runner_for
from integration.prefect.secrets import key_for_workers, resolve_secret_block
from integration.prefect.storage import (
    TieredResultStorage,
    key_policy,
    load_cached_value,
    store_result,
)
from integration.prefect.tasks import NODE_HOOKS, node_tags, start_tag_services
from integration.resources import ResourcePool
from integration.resources.memory import MemoryManager
from integration.resources.pool import machine_memory_mb
from integration.result import NodeReport, NodeState, RunResult, RunState
from integration.runs import RunRecord, abandoned_runs, load_record, runs_folder, save_record

logger = logging.getLogger("nodegraph.run")

_PYTHON_TYPES: dict[str, Any] = {
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "list": list,
    "dict": dict,
}


class GraphRunFailed(NodegraphError):
    """A graph flow failed or halted; ``result`` holds the full report."""

    def __init__(self, result: RunResult) -> None:
        self.result = result
        failed = [
            r.error
            for r in result.nodes.values()
            if r.error is not None and r.state == NodeState.FAILED
        ]
        lines = [f"{e.node_id} ({e.node_type}): {e.error_type}: {e.message}" for e in failed]
        if result.state == RunState.HALTED:
            head = f"graph {result.graph!r} halted at node {result.halted_at!r}"
        else:
            head = f"graph {result.graph!r} failed"
        hint = f"\n(resume with: {result.resume_hint})" if result.resume_hint else ""
        super().__init__(f"{head}:\n  " + "\n  ".join(lines) + hint)


@dataclass
class RunSession:
    """Per-call state that the caller of a run shares with the flow body: the
    callbacks it wants, and where it learns the flow run id and can cancel."""

    listener: NodeListener | None = None
    results: list[RunResult] = field(default_factory=list)
    # Where a caller waiting on another thread learns the flow run id and can cancel.
    flow_run_id: str | None = None
    execution: Scheduler | None = None
    running: threading.Event = field(default_factory=threading.Event)

    def started(self, flow_run_id: str | None, execution: Scheduler) -> None:
        self.flow_run_id, self.execution = flow_run_id, execution
        self.running.set()

    # Set when the caller switched Prefect's heartbeat thread off: the body sends them.
    heartbeat_seconds: int | None = None
    # Told each node id as the node is handed to its runner (the CLI's running list).
    on_node_started: Callable[[str], None] | None = None
    # Told ``context.progress`` calls of nodes running in this process.
    on_node_progress: ProgressHook | None = None
    # Told ``context.preview`` images of nodes running in this process.
    on_node_preview: PreviewHook | None = None
    # The final progress of the run, published after the flow run ends.
    progress: tuple[str | None, Progress] | None = None


_session: ContextVar[RunSession | None] = ContextVar("nodegraph_session", default=None)


def _current_session() -> RunSession | None:
    # Flow bodies reach the ContextVar through this module-level function: process
    # pools pickle the flow with every task, and a ContextVar cannot be pickled.
    return _session.get()


def registry_from_config(config: NodegraphConfig) -> NodeRegistry:
    """``NodeRegistry.from_config``, under the name earlier callers know."""
    return NodeRegistry.from_config(config)


def prepare(
    graph: GraphSource,
    outputs: Sequence[str] | None = None,
    registry: NodeRegistry | None = None,
    config: NodegraphConfig | None = None,
) -> Plan:
    """Load, bind and plan a graph; every stage before Prefect is involved."""
    config = config or load_config()
    registry = registry or NodeRegistry.from_config(config)
    bound: BoundGraph = bind(load_graph(graph), registry)
    return make_plan(bound, outputs)


def flow_from_plan(
    plan: Plan,
    *,
    strategy: str = "sequential",
    processes: bool = False,
    max_workers: int | None = None,
    tag_node_types: bool = True,
    caching: CachingConfig | None = None,
    refresh: bool = False,
    default_policy: ErrorPolicy | None = None,
    resume: RunRecord | None = None,
    dask: DaskSettings | None = None,
    resource_management: ResourceManagementConfig | None = None,
    monitoring: MonitoringConfig | None = None,
    cancel_check_seconds: float = 1.0,
    fusion: FusionConfig | None = None,
    durations: NodeDurations | None = None,
) -> Flow[..., dict[str, Any]]:
    """The Prefect flow that runs ``plan``.

    Nodes' resource requirements are checked first against what the strategy offers
    (``resource_management`` locally, ``dask`` for the distributed strategy); a node
    that could never run raises ``GraphValidationError``.

    ``default_policy`` fills what nodes' own policies leave unset. ``resume``
    continues a recorded run: the new run shares that run's checkpoints of
    ``cacheable=False`` nodes.

    With ``caching`` (enabled), node results are keyed by content and stored in the
    configured tiers; cached nodes are loaded instead of run. ``refresh`` recomputes
    every node and overwrites what the cache held.

    ``monitoring`` says which events and artifacts runs publish (default: all).

    ``fusion`` (default: off here; ``auto`` from the configuration) lets cheap nodes
    share tasks and batchable ones share calls (``integration.optimize``), judged by
    the recorded ``durations``, which every run adds to.
    """
    dask = _dask_for(strategy, dask, max_workers)
    pool, placement = place(plan, strategy, dask, resource_management)
    runner = task_runner_for(
        strategy,
        processes=processes,
        max_workers=max_workers,
        dask=dask,
        resources=placement,
        packs=_packs(plan),
    )
    processes = processes and strategy == "parallel"
    label = f"{strategy}{'+processes' if processes else ''}"
    caching = _resolved(caching)
    storage = None
    if caching is not None:
        address = dask.address if strategy == "distributed" and dask else None
        workers_key = key_for_workers(signing_key_for(caching), address)
        storage = TieredResultStorage.for_config(caching, workers_key)
    policy = key_policy(caching) if caching is not None else None
    defaults = default_policy or ErrorPolicy()
    policies = effective_policies(plan, defaults)
    tasks = {
        n: NodeTasks(
            plan.steps[n].node,
            tag_node_types,
            storage,
            policy,
            policies[n],
            kill_on_timeout=processes,
        )
        for n in plan.order
    }
    state = _FlowState(plan, tasks, label, max_workers, caching, refresh, resume)
    state.durations = durations
    state.policies = policies
    state.kill_on_timeout = processes
    if fusion is not None and (fusion.mode != "off" or fusion.batching):
        state.optimizer = optimizer_for(
            plan, fusion, defaults, durations, caching, policies, workers=max_workers
        )
    state.pool = pool
    _watch(state, strategy, cancel_check_seconds, monitoring, resource_management)
    if strategy != "distributed":
        # From the nodes, not their tasks: building a task per node costs ~15 µs each.
        state.tag_sets = {frozenset(node_tags(t.node, t.tag_type)) for t in tasks.values()} - {
            frozenset()
        }
    bound = plan.graph

    def run_graph_flow(**inputs: Any) -> dict[str, Any]:
        return _run_body(state, inputs)

    run_graph_flow.__signature__ = flow_signature(bound)  # type: ignore[attr-defined]
    run_graph_flow.__doc__ = bound.graph.description or f"Run the graph {bound.name!r}."
    return Flow(
        fn=run_graph_flow,
        name=bound.name,
        description=bound.graph.description or None,
        task_runner=runner,
        validate_parameters=True,
    )


def flow_from_prompt(
    prompt: ComfyPrompt,
    *,
    strategy: str = "sequential",
    processes: bool = False,
    max_workers: int | None = None,
    tag_node_types: bool = True,
    caching: CachingConfig | None = None,
    refresh: bool = False,
    default_policy: ErrorPolicy | None = None,
    resume: RunRecord | None = None,
    dask: DaskSettings | None = None,
    resource_management: ResourceManagementConfig | None = None,
    monitoring: MonitoringConfig | None = None,
    cancel_check_seconds: float = 1.0,
) -> Flow[..., dict[str, Any]]:
    """The Prefect flow that runs a ComfyUI prompt: the same body as a plan's
    (``_run_body``), with the ComfyUI program adding the nodes as the run goes, and a
    task per node call (``ComfyTasks``: the default policy's retries and timeout).
    The flow takes no parameters: the prompt's inputs were applied when it was
    checked. The settings mean what they mean for ``flow_from_plan``."""
    dask = _dask_for(strategy, dask, max_workers)
    runner = task_runner_for(
        strategy, processes=processes, max_workers=max_workers, dask=dask, packs=prompt.packs()
    )
    processes = processes and strategy == "parallel"
    label = f"{strategy}{'+processes' if processes else ''}"
    policy = default_policy or ErrorPolicy()
    template = prompt.program(None, policy, None).plan()
    state = _FlowState(template, {}, label, max_workers, _resolved(caching), refresh, resume)
    state.comfy = prompt
    state.comfy_policy = policy
    state.comfy_tasks = ComfyTasks(policy, tag_node_types)
    _watch(state, strategy, cancel_check_seconds, monitoring, resource_management)

    def run_comfy_workflow() -> dict[str, Any]:
        return _run_body(state, {})

    run_comfy_workflow.__doc__ = f"Run the ComfyUI workflow {prompt.name!r}."
    return Flow(fn=run_comfy_workflow, name=prompt.name, task_runner=runner)


def _dask_for(
    strategy: str, dask: DaskSettings | None, max_workers: int | None
) -> DaskSettings | None:
    """The Dask settings a strategy runs with: none but for ``distributed``, whose
    local cluster gets ``max_workers`` workers unless the settings say otherwise."""
    if strategy != "distributed":
        return None
    dask = dask or DaskSettings()
    dask.workers = dask.workers or max_workers
    return dask


def _resolved(caching: CachingConfig | None) -> CachingConfig | None:
    """``caching`` when enabled, its secret block read; ``None`` when off."""
    return resolve_secret_block(caching) if caching is not None and caching.enable else None


def _watch(
    state: _FlowState,
    strategy: str,
    cancel_check_seconds: float,
    monitoring: MonitoringConfig | None,
    resource_management: ResourceManagementConfig | None,
) -> None:
    """What a flow's body watches while it runs: cancels, what it publishes, and (in
    this machine's processes) memory."""
    state.cancel_check_seconds = cancel_check_seconds
    state.monitoring = monitoring
    if strategy != "distributed":
        rm = resource_management or ResourceManagementConfig()
        state.memory_limit = (rm.memory_mb or machine_memory_mb(), rm.offload_threshold)


def _packs(plan: Plan) -> list[PackSource]:
    """The packs whose types the plan runs (fallback types included), for workers."""
    sources: dict[PackSource, None] = {}
    for node_id in plan.order:
        node = plan.steps[node_id].node
        for node_type in (node.type, node.fallback_type):
            if node_type is not None and node_type.pack_source is not None:
                sources[node_type.pack_source] = None
    return list(sources)


class _FlowState:
    """What a graph flow's body needs: the plan and its node tasks.

    Process pools pickle the running flow with every task they submit; the state
    pickles as a light placeholder, so submits stay O(1) in graph size. Only the
    process that built the flow runs its body.
    """

    __slots__ = (
        "caching",
        "cancel_check_seconds",
        "comfy",
        "comfy_policy",
        "comfy_tasks",
        "durations",
        "kill_on_timeout",
        "max_workers",
        "memory_limit",
        "monitoring",
        "optimizer",
        "pool",
        "plan",
        "policies",
        "refresh",
        "resume",
        "tag_sets",
        "strategy",
        "tasks",
    )

    def __init__(
        self,
        plan: Plan,
        tasks: dict[str, NodeTasks],
        strategy: str,
        max_workers: int | None = None,
        caching: CachingConfig | None = None,
        refresh: bool = False,
        resume: RunRecord | None = None,
    ) -> None:
        self.caching = caching
        self.refresh = refresh
        self.plan = plan
        self.tasks = tasks
        self.strategy = strategy
        self.max_workers = max_workers
        self.resume = resume
        self.pool: ResourcePool | None = None
        self.monitoring: MonitoringConfig | None = None
        self.memory_limit: tuple[float, float] | None = None  # (MB, spill fraction)
        # Node task tag sets whose Prefect services start before each run (local runners)
        self.tag_sets: set[frozenset[str]] = set()
        self.cancel_check_seconds = 1.0
        self.optimizer: ExecutionOptimizer | None = None
        self.durations: NodeDurations | None = None
        # The nodes' effective error policies, and whether a timeout kills the process.
        self.policies: dict[str, ErrorPolicy] = {}
        self.kill_on_timeout = False
        # A ComfyUI prompt instead of a plan: its program, policy and node call tasks.
        self.comfy: ComfyPrompt | None = None
        self.comfy_policy: ErrorPolicy | None = None
        self.comfy_tasks: ComfyTasks | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (_state_elsewhere, (self.plan.name,))


def _state_elsewhere(graph_name: str) -> None:
    return None


def _both(first: NodeListener, second: NodeListener | None) -> NodeListener:
    if second is None:
        return first

    def both(report: NodeReport, finished: int, total: int) -> None:
        first(report, finished, total)
        second(report, finished, total)

    return both


def _run_body(state: _FlowState | None, inputs: dict[str, Any]) -> Any:
    """The one flow body: graph runs and ComfyUI prompts (``state.comfy``) alike get
    the run record (and so ``nodegraph resume``), crash marking, events and artifacts,
    metrics, spans and profiles, progress, cancel, heartbeats and memory relief."""
    if state is None:
        raise RuntimeError("a graph flow body runs only in the process that built the flow")
    session = _current_session()
    comfy = state.comfy
    if comfy is None:
        values = resolve_inputs(state.plan.graph, inputs)
    else:
        values = dict(comfy.inputs)  # applied to the prompt when it was checked
    flow_run = FlowRunContext.get()
    flow_run_id = str(flow_run.flow_run.id) if flow_run and flow_run.flow_run else None
    # Runs without a flow run (no API) still need an id for their record.
    run_id = flow_run_id
    record = None
    keys = None
    scope = None
    recorded = writable = False
    if state.caching:
        writable = _check_cache_folder(cache_folder(state.caching))
        folder = runs_folder(cache_folder(state.caching))
        _mark_crashed(folder)
        run_id = run_id or uuid.uuid4().hex
        scope = state.resume.scope if state.resume else run_id
        if comfy is None:
            keys = graph_keys(state.plan.graph, values, scope)
        record = _begin_record(state, run_id, values, scope)
        recorded = save_record(folder, record, active=True)
    program = None
    plan = state.plan
    if comfy is not None:
        # A program holds its run's state, and its plan grows as the run goes.
        program = comfy.program(scope or run_id, state.comfy_policy, None)
        plan = program.plan()
    memory = _memory_manager(state, run_id, writable)
    instruments = _instruments(state, flow_run_id or run_id)
    reporter = RunReporter.for_run(state.monitoring, plan, flow_run)
    listener = session.listener if session else None
    if reporter is not None:
        listener = reporter.listener(listener)
    progress = Progress(plan.name, len(plan.order))
    listener = _both(progress.record, listener)
    with flow_run_heartbeats(session.heartbeat_seconds if session else None):
        try:
            backend = PrefectBackend(
                state.tasks,
                sequential=state.strategy == "sequential",
                refresh=state.refresh,
                flow_run_id=flow_run_id,
                terminate=getattr(flow_run.task_runner, "terminate", None) if flow_run else None,
                comfy=state.comfy_tasks,
            )
            cache = hierarchy_for(state.caching) if state.caching else None
            if program is not None and cache is not None:
                program.store = partial(store_result, cache)
            execution = Scheduler(
                plan,
                backend,
                values,
                policies=state.policies,
                hooks=Hooks(
                    [
                        instruments,
                        StartedHooks(session.on_node_started)
                        if session and session.on_node_started
                        else None,
                        ListenerHooks(listener),
                    ]
                ),
                keys=keys,
                cache=cache,
                load_cached=partial(load_cached_value, cache) if cache is not None else None,
                refresh=state.refresh,
                resuming=state.resume is not None,
                pool=state.pool,
                memory=memory,
                optimizer=state.optimizer,
                # Dask schedules what it receives; every node may be submitted up front.
                window=max(len(plan.order), 1)
                if state.strategy == "distributed" and comfy is None
                else state.max_workers,
                kill_on_timeout=state.kill_on_timeout,
                replicate=getattr(flow_run.task_runner, "replicate", None) if flow_run else None,
                lost_workers=getattr(flow_run.task_runner, "lost_workers", None)
                if flow_run
                else None,
                program=program,
            )
            if instruments is not None:
                instruments.start()
            if session is not None and flow_run_id:
                if session.on_node_progress or session.on_node_preview:
                    NODE_HOOKS[flow_run_id] = NodeHooks(
                        session.on_node_progress, session.on_node_preview
                    )
            if session is not None:
                session.started(flow_run_id, execution)
            if state.tag_sets:
                start_tag_services(state.tag_sets)
            client = flow_run.client if flow_run else None
            started = time.perf_counter()
            with run_monitor(
                client,
                flow_run_id,
                progress,
                execution.cancel,
                state.cancel_check_seconds,
                flow_run.flow_run.parent_task_run_id if flow_run and flow_run.flow_run else None,
            ):
                result = execution.run()
            if state.cancel_check_seconds > 0:
                if session is not None:
                    # Published once the flow run has ended: a label update while the
                    # run sets its final state contends with it on a SQLite server.
                    session.progress = (flow_run_id, progress)
                else:
                    publish_progress(flow_run_id, progress)
        except BaseException as exc:
            if instruments is not None:
                instruments.crashed(exc)
            if record is not None:
                record.state, record.finished = "crashed", time.time()
                save_record(folder, record)
            if reporter is not None:
                reporter.crashed(exc)
            raise
        finally:
            if memory is not None:
                memory.clean()
            if flow_run_id:
                NODE_HOOKS.pop(flow_run_id, None)
    result.duration_s = time.perf_counter() - started
    result.strategy = state.strategy
    if state.durations is not None:
        _record_durations(state, result)
    result.flow_run_id = flow_run_id
    if instruments is not None:
        if comfy is None:
            predecessors = state.plan.graph.predecessors()
        else:
            predecessors = {node_id: step.upstream for node_id, step in plan.steps.items()}
        result.profile = instruments.finish(result, predecessors)
    if record is not None:
        assert state.caching is not None and execution.cache is not None
        _record_cache_use(state.caching, execution.cache, result)
        record.state, record.halted_at, record.finished = (
            result.state,
            result.halted_at,
            time.time(),
        )
        if result.profile is not None:
            record.extra["profile"] = result.profile.to_dict()  # `nodegraph profile`
        # What each node did, for pictures of the run (``nodegraph graph --run``).
        record.extra["nodes"] = {
            node_id: {
                "state": str(report.state),
                "duration_s": report.duration_s,
                **({"lost_workers": report.lost_workers} if report.lost_workers else {}),
            }
            for node_id, report in result.nodes.items()
        }
        # The first record is enough to resume from, if only the last one failed.
        recorded = save_record(folder, record) or recorded
        result.resume_id = run_id if recorded else None
    if session is not None:
        session.results.append(result)
    if reporter is not None:
        reporter.finish(result)
    if result.state == RunState.CANCELLED:
        pending = [n for n, r in result.nodes.items() if r.state == NodeState.PENDING]
        return Cancelled(
            data=result.outputs,
            message=f"cancelled: {len(pending)} node(s) not run; finished nodes are cached",
        )
    if result.state == RunState.PARTIAL:
        skipped = result.skipped
        return Completed(
            data=result.outputs,
            message=f"partial: {len(skipped)} node(s) skipped by policy: {', '.join(skipped)}",
        )
    if not result.ok:
        raise GraphRunFailed(result)
    return result.outputs


def _record_durations(state: _FlowState, result: RunResult) -> None:
    """Add the nodes that ran to the duration history that fusion decisions read."""
    assert state.durations is not None
    steps = state.plan.steps
    state.durations.record(
        (node_signature(steps[node_id].node), report.duration_s)
        for node_id, report in result.nodes.items()
        if report.state == NodeState.COMPLETED and report.duration_s is not None
    )


def _instruments(state: _FlowState, run_id: str | None) -> RunInstruments | None:
    """Metrics, tracing and profiling for this run, as ``monitoring`` asks."""
    monitoring = state.monitoring or MonitoringConfig()
    if monitoring.metrics_port is not None:
        serve_metrics(monitoring.metrics_port, monitoring.metrics_address)
    instruments = RunInstruments(
        state.plan.name,
        run_id,
        metrics=monitoring.metrics_port is not None,
        trace_rate=monitoring.trace_sampling_rate,
        profile=monitoring.profile,
        cache_tiers=state.caching.cache_levels if state.caching else (),
    )
    return instruments if instruments.enabled else None


def _memory_manager(state: _FlowState, run_id: str | None, writable: bool) -> MemoryManager | None:
    """Spilling for the local strategies: into the cache folder (when ``writable``), or
    a temporary one."""
    if state.memory_limit is None:
        return None
    limit_mb, fraction = state.memory_limit
    if state.caching and writable:
        folder = cache_folder(state.caching) / "spill" / (run_id or uuid.uuid4().hex)
    else:
        folder = Path(tempfile.gettempdir()) / f"nodegraph-spill-{run_id or uuid.uuid4().hex}"
    return MemoryManager(limit_mb, fraction, folder)


def _check_cache_folder(root: Path) -> bool:
    """Whether the cache folder takes files; if not, say once why and what it costs.

    Records, durations, the cache history and the disk tier are all best effort: each
    would meet the same broken folder, and the user reads about it once, here.
    """
    besteffort.begin_run()
    problem = besteffort.writable_problem(root)
    if problem is None:
        return True
    besteffort.warn_once(
        besteffort.folder_cause(root, problem),
        "cache folder %s cannot be written (%s): this run caches in memory only, and may "
        "not be recorded for `nodegraph resume`",
        root,
        besteffort.describe(problem),
    )
    return False


def _begin_record(state: _FlowState, run_id: str, values: dict[str, Any], scope: str) -> RunRecord:
    plan = state.plan
    if state.comfy is not None:  # the imported workflow and its roots: the same prompt
        document, outputs = state.comfy.document(), list(state.comfy.roots)
    else:
        document = plan.graph.graph.model_dump(mode="json", by_alias=True, exclude_none=True)
        outputs = [request.name for request in plan.outputs]
    return RunRecord.begin(
        run_id,
        plan.name,
        document,
        values,
        outputs,
        state.strategy.split("+")[0],
        scope,
        processes=state.strategy.endswith("+processes"),
        max_workers=state.max_workers,
        resumes=state.resume.run_id if state.resume else None,
    )


def _mark_crashed(folder: Path) -> None:
    """Mark runs whose process died (SIGKILL, power loss) as crashed: in their record
    and, when the Prefect API still knows them, as a ``Crashed`` flow run.

    Prefect's flow engine emits heartbeat events, but the server does not act on their
    absence unless an automation is set up, so such a run stays ``Running``; nodegraph
    notices at the next run on the same host.
    """
    for record in abandoned_runs(folder):
        record.state, record.finished = "crashed", time.time()
        save_record(folder, record)
        try:
            with get_client(sync_client=True) as client:
                flow_run = client.read_flow_run(uuid.UUID(record.run_id))
                if flow_run.state is None or not flow_run.state.is_final():
                    client.set_flow_run_state(
                        flow_run.id,
                        Crashed(
                            message=f"nodegraph: process {record.pid} on {record.host} "
                            "died while running this flow"
                        ),
                        force=True,
                    )
        except Exception as exc:  # the API of that run may be gone (a temporary server)
            logger.info("could not mark flow run %s crashed: %s", record.run_id, exc)


def _record_cache_use(caching: CachingConfig, cache: CacheHierarchy, result: RunResult) -> None:
    counts = result.counts()
    record_run(
        cache_folder(caching),
        {
            "graph": result.graph,
            "executed": counts.get("completed", 0) + counts.get("failed", 0),
            "cached": counts.get("cached", 0),
            "fallback": counts.get("fallback", 0),
            "tier_errors": dict(cache.errors),
        },
    )


def flow_signature(bound: BoundGraph) -> inspect.Signature:
    # Keyword-only, so Prefect passes every parameter by name into **inputs.
    parameters = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=inspect.Parameter.empty if spec.required else spec.default,
            annotation=_annotation(spec.type, nullable=not spec.required and spec.default is None),
        )
        for name, spec in bound.inputs.items()
    ]
    return inspect.Signature(parameters, return_annotation=dict[str, Any])


def _annotation(type_name: str, nullable: bool) -> Any:
    base = _PYTHON_TYPES.get(type_name, Any)
    return base | None if nullable and base is not Any else base


def to_flow(
    graph: GraphSource,
    *,
    outputs: Sequence[str] | None = None,
    strategy: str | None = None,
    processes: bool | None = None,
    max_workers: int | None = None,
    registry: NodeRegistry | None = None,
    config: NodegraphConfig | None = None,
    cache: bool | None = None,
    refresh: bool = False,
) -> Flow[..., dict[str, Any]]:
    """A Prefect flow for ``graph``: call it, serve it, or use it as a subflow.

    Settings not given come from the configuration (``execution.*``, ``caching.*``).
    """
    config = config or load_config()
    plan = prepare(graph, outputs, registry, config)
    return _configured_flow(plan, config, strategy, processes, max_workers, cache, refresh)


def _configured_flow(
    plan: Plan | ComfyPrompt,
    config: NodegraphConfig,
    strategy: str | None,
    processes: bool | None,
    max_workers: int | None,
    cache: bool | None = None,
    refresh: bool = False,
    resume: RunRecord | None = None,
) -> Flow[..., dict[str, Any]]:
    """``flow_from_plan`` (``flow_from_prompt`` for a ComfyUI prompt) with arguments
    not given taken from the configuration."""
    caching = caching_for(config, cache)
    if isinstance(plan, ComfyPrompt):
        return flow_from_prompt(
            plan,
            strategy=strategy or config.execution.strategy,
            processes=config.execution.processes if processes is None else processes,
            max_workers=max_workers or config.execution.max_workers,
            tag_node_types=config.execution.tag_node_types,
            caching=caching,
            refresh=refresh,
            default_policy=default_policy(config),
            resume=resume,
            dask=dask_settings(config),
            resource_management=config.resource_management,
            monitoring=config.monitoring,
            cancel_check_seconds=config.execution.cancel_check_seconds,
        )
    return flow_from_plan(
        plan,
        strategy=strategy or config.execution.strategy,
        processes=config.execution.processes if processes is None else processes,
        max_workers=max_workers or config.execution.max_workers,
        tag_node_types=config.execution.tag_node_types,
        caching=caching,
        refresh=refresh,
        default_policy=default_policy(config),
        resume=resume,
        dask=dask_settings(config),
        resource_management=config.resource_management,
        monitoring=config.monitoring,
        cancel_check_seconds=config.execution.cancel_check_seconds,
        fusion=config.execution.fusion,
        durations=NodeDurations(cache_folder(config.caching)),
    )


def run(
    graph: GraphSource,
    inputs: Mapping[str, Any] | None = None,
    outputs: Sequence[str] | None = None,
    strategy: str | None = None,
    *,
    processes: bool | None = None,
    max_workers: int | None = None,
    registry: NodeRegistry | None = None,
    config: NodegraphConfig | None = None,
    on_node_finished: NodeListener | None = None,
    cache: bool | None = None,
    refresh: bool = False,
    on_node_started: Callable[[str], None] | None = None,
    on_node_progress: ProgressHook | None = None,
) -> RunResult:
    """Run a graph and return its ``RunResult``; a failed node does not raise.

    Invalid graphs raise ``GraphValidationError`` and bad inputs ``GraphInputError``
    before anything runs. ``outputs`` takes output names or ``node.port`` references;
    only the nodes they need run.

    A ComfyUI workflow (a UI or API file, or a graph imported from one) runs with
    ComfyUI's semantics (``integration.prefect.prompt``) through the same flow body,
    so it is recorded and resumable like any graph run; its ``outputs`` are node ids,
    and the result's outputs are the output nodes' UI values.
    """
    config = config or load_config()
    registry = registry or NodeRegistry.from_config(config)
    loaded = load_graph(graph, Signatures.from_registry(registry))
    session = RunSession(
        listener=on_node_finished,
        on_node_started=on_node_started,
        on_node_progress=on_node_progress,
    )
    prepared: Plan | ComfyPrompt
    if is_comfy_graph(loaded, registry):
        prepared, values = prepare_prompt(loaded, registry, None, outputs, inputs), {}
    else:
        prepared = prepare(loaded, outputs, registry, config)
        values = resolve_inputs(prepared.graph, inputs or {})
    return run_plan(
        prepared,
        values,
        config,
        strategy=strategy,
        processes=processes,
        max_workers=max_workers,
        cache=cache,
        refresh=refresh,
        session=session,
    )


def resume(
    run_id: str,
    *,
    strategy: str | None = None,
    processes: bool | None = None,
    max_workers: int | None = None,
    registry: NodeRegistry | None = None,
    config: NodegraphConfig | None = None,
    on_node_finished: NodeListener | None = None,
) -> RunResult:
    """Continue a recorded run (halted, failed or crashed) as a new flow run.

    The graph, inputs and outputs come from the run's record; what finished is read
    from the cache, including the checkpoints of that run's ``cacheable=False`` nodes.
    The strategy is the recorded one unless given.
    """
    config = config or load_config()
    if not config.caching.enable:
        raise ConfigError("resume reads finished nodes from the cache: enable caching")
    record = load_record(runs_folder(cache_folder(config.caching)), run_id)
    registry = registry or NodeRegistry.from_config(config)
    document = load_graph(record.document, Signatures.from_registry(registry))
    prepared: Plan | ComfyPrompt
    if is_comfy_graph(document, registry):  # the recorded prompt, with its roots
        prepared = prepare_prompt(
            document, registry, None, record.outputs or None, record.decoded_inputs()
        )
        values: dict[str, Any] = {}
    else:
        prepared = prepare(document, record.outputs, registry, config)
        values = resolve_inputs(prepared.graph, record.decoded_inputs())
    return run_plan(
        prepared,
        values,
        config,
        strategy=strategy or record.strategy,
        processes=record.processes if processes is None else processes,
        max_workers=max_workers or record.max_workers,
        resume=record,
        session=RunSession(listener=on_node_finished),
    )


def run_plan(
    plan: Plan | ComfyPrompt,
    values: dict[str, Any],
    config: NodegraphConfig,
    *,
    strategy: str | None = None,
    processes: bool | None = None,
    max_workers: int | None = None,
    cache: bool | None = None,
    refresh: bool = False,
    resume: RunRecord | None = None,
    session: RunSession | None = None,
) -> RunResult:
    """Run a plan as a Prefect flow run: the one entry point that ``run``, ``resume``,
    ``submit`` and the ``run_graph`` deployment flow all go through.

    ``plan`` may be a checked ComfyUI prompt (``integration.prefect.prompt``), whose
    inputs are applied already (``values`` is then empty). ``values`` are the resolved
    graph inputs; settings not given come from ``config``; ``session`` carries the
    caller's callbacks and learns the flow run id.
    """
    session = session or RunSession()
    token = _session.set(session)
    try:
        # Frozen from translation on: the plan's objects are many and live all run.
        with heap_frozen(config.execution.freeze_heap):
            flow = _configured_flow(
                plan, config, strategy, processes, max_workers, cache, refresh, resume
            )
            with prefect_heartbeats_off() as session.heartbeat_seconds, reused_client():
                state = flow(**values, return_state=True)
    finally:
        _session.reset(token)
        if session.progress is not None:
            publish_progress(*session.progress)
    if not session.results:
        # The flow failed before its body could report (e.g. the API was unreachable).
        state.result()
        raise RuntimeError(
            f"flow for graph {plan.name!r} ended {state.type.value} without a result"
        )
    return session.results[-1]
