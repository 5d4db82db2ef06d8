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
import time
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from prefect import Flow
from prefect.context import FlowRunContext

from integration.cache.factory import cache_folder, hierarchy_for
from integration.cache.hierarchy import CacheHierarchy
from integration.cache.history import record_run
from integration.cache.keys import graph_keys
from integration.config import CachingConfig, NodegraphConfig, load_config
from integration.errors import NodegraphError
from integration.graph.load import GraphSource, load_graph
from integration.graph.policy import ErrorPolicy, RetryPolicy
from integration.graph.registry import NodeRegistry
from integration.graph.validate import BoundGraph, BoundNode, bind, resolve_inputs
from integration.plan import Plan, make_plan
from integration.prefect.execute import GraphExecution, NodeListener, NodeTasks
from integration.prefect.runners import task_runner_for
from integration.prefect.storage import TieredResultStorage, key_policy
from integration.result import RunResult

_PYTHON_TYPES: dict[str, Any] = {
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "list": list,
    "dict": dict,
}


class GraphRunFailed(NodegraphError):
    """A graph flow finished with failed nodes; ``result`` holds the full report."""

    def __init__(self, result: RunResult) -> None:
        self.result = result
        failed = [e for e in result.errors if e.error_type != "dependency"]
        lines = [f"{e.node_id} ({e.node_type}): {e.error_type}: {e.message}" for e in failed]
        super().__init__(f"graph {result.graph!r} failed:\n  " + "\n  ".join(lines))


@dataclass
class _Session:
    """Per-call state that the caller of a flow shares with the flow body."""

    listener: NodeListener | None = None
    results: list[RunResult] = field(default_factory=list)


_session: ContextVar[_Session | None] = ContextVar("nodegraph_session", default=None)


def _current_session() -> _Session | None:
    # Flow bodies reach the ContextVar through this module-level function: process
    # pools pickle the flow with every task, and a ContextVar cannot be pickled.
    return _session.get()


def registry_from_config(config: NodegraphConfig) -> NodeRegistry:
    """The default registry plus the config's extra node paths and modules."""
    return NodeRegistry.default(
        extra_paths=config.execution.node_paths, modules=config.execution.node_modules
    )


def prepare(
    graph: GraphSource,
    outputs: Sequence[str] | None = None,
    registry: NodeRegistry | None = None,
    config: NodegraphConfig | None = None,
) -> Plan:
    """Load, bind and plan a graph; every stage before Prefect is involved."""
    config = config or load_config()
    registry = registry or registry_from_config(config)
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
    retry: RetryPolicy | None = None,
) -> Flow[..., dict[str, Any]]:
    """The Prefect flow that runs ``plan``.

    ``retry`` is the default retry policy for nodes whose own policy sets none.

    With ``caching`` (enabled), node results are keyed by content and stored in the
    configured tiers; cached nodes are loaded instead of run. ``refresh`` recomputes
    every node and overwrites what the cache held.
    """
    runner = task_runner_for(strategy, processes=processes, max_workers=max_workers)
    label = f"{strategy}{'+processes' if processes and strategy != 'sequential' else ''}"
    caching = caching if caching is not None and caching.enable else None
    storage = TieredResultStorage.for_config(caching) if caching is not None else None
    policy = key_policy(caching) if caching is not None else None
    tasks = {
        n: NodeTasks(
            plan.steps[n].node, tag_node_types, storage, policy, _retry(plan.steps[n].node, retry)
        )
        for n in plan.order
    }
    state = _FlowState(plan, tasks, label, max_workers, caching, refresh)
    bound = plan.graph

    def run_graph_flow(**inputs: Any) -> dict[str, Any]:
        return _run_body(state, inputs)

    run_graph_flow.__signature__ = _signature(bound)  # type: ignore[attr-defined]
    run_graph_flow.__doc__ = bound.graph.description or f"Run the graph {bound.name!r}."
    return Flow(
        fn=run_graph_flow,
        name=bound.name,
        description=bound.graph.description or None,
        task_runner=runner,
        validate_parameters=True,
    )


def _retry(node: BoundNode, default: RetryPolicy | None) -> RetryPolicy | None:
    own = node.policy or ErrorPolicy()
    return own.merged_over(ErrorPolicy(retry=default)).retry


class _FlowState:
    """What a graph flow's body needs: the plan and its node tasks.

    Process pools pickle the running flow with every task they submit; the state
    pickles as a light placeholder, so submits stay O(1) in graph size. Only the
    process that built the flow runs its body.
    """

    __slots__ = ("caching", "max_workers", "plan", "refresh", "strategy", "tasks")

    def __init__(
        self,
        plan: Plan,
        tasks: dict[str, NodeTasks],
        strategy: str,
        max_workers: int | None = None,
        caching: CachingConfig | None = None,
        refresh: bool = False,
    ) -> None:
        self.caching = caching
        self.refresh = refresh
        self.plan = plan
        self.tasks = tasks
        self.strategy = strategy
        self.max_workers = max_workers

    def __reduce__(self) -> tuple[Any, ...]:
        return (_state_elsewhere, (self.plan.name,))


def _state_elsewhere(graph_name: str) -> None:
    return None


def _run_body(state: _FlowState | None, inputs: dict[str, Any]) -> dict[str, Any]:
    if state is None:
        raise RuntimeError("a graph flow body runs only in the process that built the flow")
    session = _current_session()
    values = resolve_inputs(state.plan.graph, inputs)
    flow_run = FlowRunContext.get()
    run_id = str(flow_run.flow_run.id) if flow_run and flow_run.flow_run else None
    keys = graph_keys(state.plan.graph, values, run_id) if state.caching else None
    execution = GraphExecution(
        state.plan,
        state.tasks,
        values,
        session.listener if session else None,
        keys=keys,
        cache=hierarchy_for(state.caching) if state.caching else None,
        refresh=state.refresh,
    )
    started = time.perf_counter()
    if state.strategy == "sequential":
        result = execution.run_sequential()
    else:
        result = execution.run_parallel(window=state.max_workers)
    result.duration_s = time.perf_counter() - started
    result.strategy = state.strategy
    if execution.cache is not None:
        _record_cache_use(state.caching, execution.cache, result)
    result.flow_run_id = run_id
    if session is not None:
        session.results.append(result)
    if not result.ok:
        raise GraphRunFailed(result)
    return result.outputs


def _record_cache_use(caching: CachingConfig, cache: CacheHierarchy, result: RunResult) -> None:
    counts = result.counts()
    record_run(
        cache_folder(caching),
        {
            "graph": result.graph,
            "executed": counts.get("completed", 0) + counts.get("failed", 0),
            "cached": counts.get("cached", 0),
            "tier_errors": dict(cache.errors),
        },
    )


def _signature(bound: BoundGraph) -> inspect.Signature:
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
    plan: Plan,
    config: NodegraphConfig,
    strategy: str | None,
    processes: bool | None,
    max_workers: int | None,
    cache: bool | None = None,
    refresh: bool = False,
) -> Flow[..., dict[str, Any]]:
    """``flow_from_plan`` with arguments not given taken from the configuration."""
    caching = config.caching
    if cache is not None:
        caching = caching.model_copy(update={"enable": cache})
    return flow_from_plan(
        plan,
        strategy=strategy or config.execution.strategy,
        processes=config.execution.processes if processes is None else processes,
        max_workers=max_workers or config.execution.max_workers,
        tag_node_types=config.execution.tag_node_types,
        caching=caching,
        refresh=refresh,
        retry=default_retry(config),
    )


def default_retry(config: NodegraphConfig) -> RetryPolicy | None:
    """The retry policy ``execution.retry_attempts`` / ``retry_delay`` give, if any."""
    attempts = config.execution.retry_attempts
    if attempts <= 0:
        return None
    return RetryPolicy(attempts=attempts, delay_seconds=config.execution.retry_delay)


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
) -> RunResult:
    """Run a graph and return its ``RunResult``; a failed node does not raise.

    Invalid graphs raise ``GraphValidationError`` and bad inputs ``GraphInputError``
    before anything runs. ``outputs`` takes output names or ``node.port`` references;
    only the nodes they need run.
    """
    config = config or load_config()
    plan = prepare(graph, outputs, registry, config)
    values = resolve_inputs(plan.graph, inputs or {})
    flow = _configured_flow(plan, config, strategy, processes, max_workers, cache, refresh)
    session = _Session(listener=on_node_finished)
    token = _session.set(session)
    try:
        state = flow(**values, return_state=True)
    finally:
        _session.reset(token)
    if not session.results:
        # The flow failed before its body could report (e.g. the API was unreachable).
        state.result()
        raise RuntimeError(
            f"flow for graph {plan.name!r} ended {state.type.value} without a result"
        )
    return session.results[-1]
