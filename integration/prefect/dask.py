"""The ``distributed`` strategy: node tasks on a Dask cluster, with a fast submit path.

    >>> from integration.prefect.dask import NodegraphDaskTaskRunner
    >>> runner = NodegraphDaskTaskRunner(address="tcp://127.0.0.1:8786")

``NodegraphDaskTaskRunner`` is a prefect-dask ``DaskTaskRunner``: every node is still a
Prefect task run with its own state, retries and result persistence, visible in the UI.
What changes is how a task gets to a worker:

- **The context is serialised once per flow run.** Stock prefect-dask serialises the
  Prefect context (flow, flow run, settings) for every submit, about 38 ms each
  (prefect issue #18191). Here it is pickled once; each submit carries the same bytes,
  and each worker unpickles them once (``_contexts``).
- **Contexts hydrated once.** Stock workers rebuild the Prefect settings (pydantic-
  settings re-reads the environment and profiles for every section) and a new API
  client (an SSL context) for every task run: most of their time per task. Here the
  settings are built once per flow run and worker, and each worker thread keeps one
  API client and one flow-run context, which task runs reuse.
- **Resources.** A node's ``ResourceRequirement`` becomes Dask resource restrictions on
  its submit (the same as ``dask.annotate(resources=...)``), so it runs only on workers
  that advertise them (``dask worker --resources "GPU=1"``), never oversubscribing.
- **Node packs.** Node types travel by pack reference and load on the worker from the
  same path or module; ``PackPreload`` loads the run's packs on every worker as it
  joins, so a missing pack fails early with a clear message.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import cloudpickle
import distributed
from distributed.diagnostics.plugin import WorkerPlugin
from prefect import tags
from prefect.context import (
    FlowRunContext,
    SettingsContext,
    SyncClientContext,
    TaskRunContext,
    _deployment_id,
    _deployment_parameters,
    serialize_context,
)
from prefect.futures import PrefectFuture
from prefect.task_engine import run_task_sync
from prefect.utilities.engine import collect_task_run_inputs_sync
from prefect_dask import DaskTaskRunner
from prefect_dask.task_runners import PrefectDaskFuture

from integration.graph.registry import PackSource, resolve_pack

logger = logging.getLogger("nodegraph.dask")

_CONTEXT_CACHE = 16
_contexts: OrderedDict[str, _Hydrated] = OrderedDict()
_contexts_lock = threading.Lock()
_thread_state = threading.local()


class NodegraphDaskTaskRunner(DaskTaskRunner):
    """A ``DaskTaskRunner`` with the fast submit path and node resources.

    ``resources`` maps task names (node ids) to Dask resources; ``packs`` are loaded
    on every worker by ``PackPreload``.
    """

    def __init__(
        self,
        *args: Any,
        resources: Mapping[str, Mapping[str, float]] | None = None,
        packs: Iterable[PackSource] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.resources = dict(resources or {})
        self.packs = list(packs)
        self._context: tuple[str, bytes] | None = None
        self._context_flow_run: Any = None
        self._plugin_registered = False

    def duplicate(self) -> NodegraphDaskTaskRunner:
        return type(self)(
            address=self.address,
            cluster_class=self.cluster_class,
            cluster_kwargs=self.cluster_kwargs,
            adapt_kwargs=self.adapt_kwargs,
            client_kwargs=self.client_kwargs,
            performance_report_path=self.performance_report_path,
            resources=self.resources,
            packs=self.packs,
        )

    def __eq__(self, other: object) -> bool:
        return super().__eq__(other) and getattr(other, "resources", None) == self.resources

    __hash__ = None  # type: ignore[assignment]

    def submit(  # type: ignore[override]
        self,
        task: Any,
        parameters: dict[str, Any],
        wait_for: Iterable[PrefectFuture[Any]] | None = None,
        dependencies: dict[str, set[Any]] | None = None,
    ) -> PrefectDaskFuture[Any]:
        if not self._started:
            raise RuntimeError("The task runner must be started before submitting work.")
        client = self.client
        if not self._plugin_registered:
            self._plugin_registered = True
            if self.packs:
                try:
                    client.register_plugin(PackPreload(self.packs), name="nodegraph-packs")
                except (OSError, distributed.comm.CommClosedError) as exc:
                    # A worker lost while registering: the packs still load on demand,
                    # when a node type is unpickled on a worker.
                    logger.warning("could not preload node packs on every worker: %s", exc)
        parameters = self._optimize_futures(parameters)
        waits = self._optimize_futures(list(wait_for)) if wait_for else None
        task_run_id = uuid.uuid4()
        inputs = {
            name: collect_task_run_inputs_sync(value, future_cls=distributed.Future)
            for name, value in parameters.items()
        }
        for name, extra in (dependencies or {}).items():
            inputs[name] = inputs.get(name, set()) | extra
        context_id, context_blob = self._serialized_context()
        future = distributed.Client.submit(
            client,
            run_node_task,
            task,
            task_run_id,
            parameters,
            waits,
            inputs,
            context_id,
            context_blob,
            key=f"{task.name}-{task_run_id.hex}",
            resources=dict(self.resources.get(task.name, {})) or None,
            pure=False,
        )
        return PrefectDaskFuture(wrapped_future=future, task_run_id=task_run_id)

    def replicate(self, future: PrefectFuture[Any]) -> list[str]:
        """Copy a finished node's result to every worker (a broadcast output), and
        return the workers that hold it."""
        wrapped = getattr(future, "wrapped_future", None)
        if wrapped is None:
            return []
        self.client.replicate([wrapped])
        return sorted(self.client.who_has([wrapped]).get(wrapped.key, ()))

    def _serialized_context(self) -> tuple[str, bytes]:
        flow_run = FlowRunContext.get()
        flow_run_id = flow_run.flow_run.id if flow_run and flow_run.flow_run else None
        if self._context is None or self._context_flow_run != flow_run_id:
            # The asset context is per task in stock prefect-dask; nodes declare no
            # assets, so the context is the same for every node of the run.
            self._context = (uuid.uuid4().hex, cloudpickle.dumps(serialize_context()))
            self._context_flow_run = flow_run_id
        return self._context


def run_node_task(
    task: Any,
    task_run_id: uuid.UUID,
    parameters: dict[str, Any],
    wait_for: list[Any] | None,
    dependencies: dict[str, set[Any]],
    context_id: str,
    context_blob: bytes,
) -> Any:
    """Run one node task on a worker, as prefect-dask does, reusing what it can.

    Prefect's ``hydrated_context`` would rebuild the settings (pydantic-settings reads
    the environment and profiles for each of its sections) and a new API client for
    every task run: most of a stock worker's time per task. Here both are built once
    (settings per flow run, client and flow-run context per thread) and the context
    variables are set around each task run.
    """
    hydrated = _hydrated(context_id, context_blob)
    # The flow run's settings first: the client is built for the flow's API.
    tokens: list[tuple[Any, Any]] = [
        (SettingsContext.__var__, SettingsContext.__var__.set(hydrated.settings))
    ]
    client_context = _thread_client_context(hydrated.settings.settings.api.url)
    flow_context = _thread_flow_context(context_id, hydrated, client_context)
    tokens += [
        (SyncClientContext.__var__, SyncClientContext.__var__.set(client_context)),
        (
            FlowRunContext.__var__,
            FlowRunContext.__var__.set(
                # Fresh per task: the engine records results in these mappings.
                flow_context.model_copy(update={"run_results": {}, "task_run_dynamic_keys": {}})
            ),
        ),
    ]
    if hydrated.deployment_id is not None:
        tokens.append((_deployment_id, _deployment_id.set(hydrated.deployment_id)))
    if hydrated.deployment_parameters:
        tokens.append(
            (_deployment_parameters, _deployment_parameters.set(hydrated.deployment_parameters))
        )
    try:
        with tags(*hydrated.tags):
            return run_task_sync(
                task=task,
                task_run_id=task_run_id,
                parameters=parameters,
                wait_for=wait_for,
                return_type="state",
                dependencies=dependencies,
            )
    finally:
        for variable, token in reversed(tokens):
            variable.reset(token)


class _Hydrated:
    """A flow run's serialized context, turned back into objects once per process."""

    def __init__(self, serialized: dict[str, Any]) -> None:
        _prepare_models()
        self.serialized = serialized
        self.settings = SettingsContext(**serialized["settings_context"])
        self.tags = tuple((serialized.get("tags_context") or {}).get("current_tags", ()))
        deployment = serialized.get("deployment_id")
        self.deployment_id = uuid.UUID(deployment) if deployment else None
        self.deployment_parameters = serialized.get("deployment_parameters")


_models_ready = False


def _prepare_models() -> None:
    global _models_ready
    if _models_ready:
        return
    from prefect._internal.result_records import ResultRecordMetadata
    from prefect.flows import Flow
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.tasks import Task

    names = {"Flow": Flow, "Task": Task, "ResultRecordMetadata": ResultRecordMetadata}
    FlowRunContext.model_rebuild(_types_namespace=names)
    TaskRunContext.model_rebuild(_types_namespace=names)
    ensure_logging_setup()
    _models_ready = True


def _hydrated(context_id: str, blob: bytes) -> _Hydrated:
    with _contexts_lock:
        found = _contexts.get(context_id)
        if found is not None:
            _contexts.move_to_end(context_id)
            return found
    hydrated = _Hydrated(cloudpickle.loads(blob))
    with _contexts_lock:
        _contexts[context_id] = hydrated
        while len(_contexts) > _CONTEXT_CACHE:
            _contexts.popitem(last=False)
    return hydrated


def _thread_client_context(api_url: str | None) -> SyncClientContext:
    """This thread's API client for ``api_url``, opened once and kept open."""
    clients = getattr(_thread_state, "clients", None)
    if clients is None:
        clients = _thread_state.clients = {}
    context = clients.get(api_url)
    if context is None:
        context = SyncClientContext()
        context.client.__enter__()
        context._context_stack = 1  # held open: task runs never close it
        clients[api_url] = context
    return context


def _thread_flow_context(
    context_id: str, hydrated: _Hydrated, client_context: SyncClientContext
) -> FlowRunContext:
    cached = getattr(_thread_state, "flows", None)
    if cached is None:
        cached = _thread_state.flows = OrderedDict()
    found = cached.get(context_id)
    if found is None:
        serialized = dict(hydrated.serialized["flow_run_context"])
        runner = serialized["flow"].task_runner.duplicate()
        runner.__enter__()
        token = SettingsContext.__var__.set(hydrated.settings)
        try:
            found = FlowRunContext(
                **serialized, client=client_context.client, task_runner=runner, detached=True
            )
        finally:
            SettingsContext.__var__.reset(token)
        cached[context_id] = found
        while len(cached) > _CONTEXT_CACHE:
            cached.popitem(last=False)
    return found


class PackPreload(WorkerPlugin):
    """Load the run's node packs on every worker, at once and as workers join."""

    name = "nodegraph-packs"

    def __init__(self, packs: Iterable[PackSource]) -> None:
        self.packs = list(packs)

    def setup(self, worker: distributed.Worker) -> None:
        for source in self.packs:
            resolve_pack(source)
