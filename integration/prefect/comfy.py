"""Run ComfyUI workflows as Prefect flows: one task run per node execution.

    >>> import integration
    >>> result = integration.run("tests/fixtures/comfy/lazy_mix_api.json")
    >>> result.outputs["7"]["values"]
    [0.0]

``run_workflow`` imports the file (UI or API format), checks it as ComfyUI does, and
runs ``integration.comfy.execution.ComfyExecution`` inside a flow named after the
workflow. Each node execution is a Prefect task run named ``<class> #<node id>``,
submitted through the strategy's task runner (threads, the warm process pool or
Dask), with the configured retries and timeout. Node results go to the same cache
tiers as graph nodes, under content keys, so a second run executes nothing.
"""

from __future__ import annotations

import copy
import queue
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prefect import Flow, Task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture
from prefect.states import Completed

from integration.cache.factory import hierarchy_for
from integration.comfy.execution import ComfyExecution, NodeCall, NodeListener, execute_call
from integration.comfy.nodes import NodeOutcome
from integration.comfy.signatures import Signatures
from integration.comfy.validate import check_workflow
from integration.comfy.workflow import import_workflow
from integration.config import NodegraphConfig, load_config
from integration.errors import NodegraphError
from integration.graph.model import Graph
from integration.graph.policy import RetryPolicy
from integration.graph.registry import NodeRegistry
from integration.prefect.heartbeat import flow_run_heartbeats, prefect_heartbeats_off
from integration.prefect.runners import task_runner_for
from integration.prefect.secrets import resolve_secret_block
from integration.prefect.tasks import RetryCondition, pack_tag
from integration.result import RunResult

COMFY_TASK: Task[..., NodeOutcome] = Task(
    fn=execute_call,
    name="comfy-node",
    cache_policy=NO_CACHE,  # nodegraph keys and stores node results itself
    persist_result=False,
)


def is_comfy_graph(graph: Graph, registry: NodeRegistry) -> bool:
    """Whether a graph runs with ComfyUI semantics: it came from a ComfyUI file, or
    one of its nodes is a ComfyUI class."""
    if "comfy" in graph.metadata:
        return True
    comfy_types = registry.comfy_types()
    return any(spec.type in comfy_types for spec in graph.nodes)


class PrefectDispatch:
    """Submits node calls as Prefect task runs and hands back their results in the
    order they finish."""

    def __init__(
        self, sequential: bool, retry: RetryPolicy | None, timeout: float | None, tags: bool
    ) -> None:
        self.sequential = sequential
        self.retry = retry
        self.timeout = timeout
        self.tags = tags
        self._tasks: dict[str, Task[..., NodeOutcome]] = {}
        self._done: queue.SimpleQueue[tuple[NodeCall, Any, str | None]] = queue.SimpleQueue()

    def _task(self, call: NodeCall) -> Task[..., NodeOutcome]:
        # A shallow copy per class: with_options re-reads the function source each time.
        task = self._tasks.get(call.class_type)
        if task is None:
            task = copy.copy(COMFY_TASK)
            task.name = call.class_type
            task.tags = set()
            if self.tags:
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

    def submit(self, call: NodeCall) -> None:
        task = self._task(call)
        if self.sequential:
            state = task(call, return_state=True)
            try:
                outcome: Any = state.result()
            except BaseException as exc:
                outcome = exc
            self._done.put((call, outcome, _task_run_id(state)))
            return
        future = task.submit(call)
        future.add_done_callback(
            lambda done: self._done.put((call, _outcome(done), str(done.task_run_id)))
        )

    def finished(self) -> tuple[NodeCall, Any, str | None]:
        return self._done.get()


def _outcome(future: PrefectFuture[NodeOutcome]) -> Any:
    try:
        return future.result()
    except BaseException as exc:
        return exc


def _task_run_id(state: Any) -> str | None:
    details = getattr(state, "state_details", None)
    task_run_id = getattr(details, "task_run_id", None)
    return str(task_run_id) if task_run_id else None


def load_comfy_graph(
    source: Graph | str | Path | Mapping[str, Any],
    registry: NodeRegistry,
    signatures: Signatures | None = None,
) -> Graph:
    """A graph from a ComfyUI file or data (or the graph itself)."""
    if isinstance(source, Graph):
        return source
    return import_workflow(source, Signatures.from_registry(registry, signatures)).graph


def run_workflow(
    source: Graph | str | Path | Mapping[str, Any],
    *,
    inputs: Mapping[str, Any] | None = None,
    outputs: Sequence[str] | None = None,
    strategy: str | None = None,
    processes: bool | None = None,
    max_workers: int | None = None,
    registry: NodeRegistry | None = None,
    config: NodegraphConfig | None = None,
    on_node_finished: NodeListener | None = None,
    cache: bool | None = None,
    refresh: bool = False,
    signatures: Signatures | None = None,
) -> RunResult:
    """Run a ComfyUI workflow (a file, API or UI data, or an imported ``Graph``).

    ``outputs`` chooses the nodes to run (ComfyUI's partial execution); by default every
    output node runs. Invalid workflows raise ``GraphValidationError`` with ComfyUI's
    ``node_errors`` before anything runs. A failed node does not raise: the result says
    which nodes failed, and the nodes that needed them are ``upstream_failed``.
    """
    from integration.prefect.flow import (
        caching_for,
        dask_settings,
        default_policy,
        registry_from_config,
    )

    config = config or load_config()
    registry = registry or registry_from_config(config)
    graph = load_comfy_graph(source, registry, signatures)
    valid, types = check_workflow(graph, registry, signatures, outputs, inputs)

    strategy = strategy or config.execution.strategy
    processes = config.execution.processes if processes is None else processes
    caching = caching_for(config, cache)
    if caching.enable:
        caching = resolve_secret_block(caching)
    policy = default_policy(config)
    packs = list({t.pack_source: None for t in types.values() if t.pack_source is not None})
    runner = task_runner_for(
        strategy,
        processes=processes,
        max_workers=max_workers or config.execution.max_workers,
        dask=dask_settings(config) if strategy == "distributed" else None,
        packs=packs,
    )
    results: list[RunResult] = []

    def run_comfy_workflow() -> dict[str, Any]:
        flow_run = FlowRunContext.get()
        flow_run_id = str(flow_run.flow_run.id) if flow_run and flow_run.flow_run else None
        execution = ComfyExecution(
            valid.prompt,
            valid.outputs,
            types,
            PrefectDispatch(
                strategy == "sequential",
                policy.retry,
                policy.timeout_seconds,
                config.execution.tag_node_types,
            ),
            name=graph.name,
            cache=hierarchy_for(caching) if caching.enable else None,
            refresh=refresh,
            run_id=flow_run_id or uuid.uuid4().hex,
            listener=on_node_finished,
        )
        with flow_run_heartbeats(heartbeat_seconds):
            result = execution.run()
        result.flow_run_id = flow_run_id
        result.strategy = strategy + ("+processes" if processes and strategy == "parallel" else "")
        results.append(result)
        if not result.ok:
            failed = [r for r in result.nodes.values() if r.error is not None]
            lines = [f"{r.node_id} ({r.node_type}): {r.error.message}" for r in failed if r.error]
            raise ComfyRunFailed(f"workflow {graph.name!r} failed:\n  " + "\n  ".join(lines))
        return Completed(data=result.outputs, message=f"{len(result.nodes)} node(s)")

    flow = Flow(fn=run_comfy_workflow, name=graph.name, task_runner=runner)
    started = time.perf_counter()
    with prefect_heartbeats_off() as heartbeat_seconds:
        state = flow(return_state=True)
    if not results:
        state.result()
        raise RuntimeError(f"workflow {graph.name!r} ended {state.type.value} without a result")
    result = results[-1]
    result.duration_s = time.perf_counter() - started
    return result


class ComfyRunFailed(NodegraphError):
    """Raised inside the flow so that the flow run ends Failed; ``run_workflow``
    returns the ``RunResult`` instead of raising it."""
