"""Running a node task in another process with its flow run's Prefect context.

Prefect's ``hydrated_context`` rebuilds the settings (pydantic-settings re-reads the
environment and profiles for each of its sections) and a new API client (an SSL
context) for every task run it starts in a worker: most of a stock worker's time per
task (prefect issue #18191 adds about 38 ms per submit for serialising the context).
Both the Dask workers of the ``distributed`` strategy and the process pool of
``parallel`` with processes use the cheaper path here instead:

- the submitting side pickles the flow run's context once (``FlowRunContextBlob``),
  and every task carries the same bytes with an id;
- the worker unpickles them once per flow run (``_hydrated``), keeps one API client
  and one flow-run context per thread, and sets the context variables around each
  task run (``run_node_task``).

Each node is still a Prefect task run with its own state, retries and results.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from typing import Any

import cloudpickle
from prefect import tags
from prefect._internal.result_records import ResultRecordMetadata
from prefect.context import (
    FlowRunContext,
    SettingsContext,
    SyncClientContext,
    TaskRunContext,
    _deployment_id,
    _deployment_parameters,
    serialize_context,
)
from prefect.flows import Flow
from prefect.logging.configuration import ensure_logging_setup
from prefect.task_engine import run_task_sync
from prefect.tasks import Task

_CONTEXT_CACHE = 16
_contexts: OrderedDict[str, _Hydrated] = OrderedDict()
_contexts_lock = threading.Lock()
_thread_state = threading.local()


class FlowRunContextBlob:
    """The current flow run's Prefect context, pickled once per flow run."""

    def __init__(self) -> None:
        self._blob: tuple[str, bytes] | None = None
        self._flow_run_id: Any = None

    def current(self) -> tuple[str, bytes]:
        """``(id, pickled context)`` of the flow run this thread is in."""
        flow_run = FlowRunContext.get()
        flow_run_id = flow_run.flow_run.id if flow_run and flow_run.flow_run else None
        if self._blob is None or self._flow_run_id != flow_run_id:
            # The asset context is per task in stock Prefect; nodes declare no assets,
            # so the context is the same for every node of the run.
            self._blob = (uuid.uuid4().hex, cloudpickle.dumps(serialize_context()))
            self._flow_run_id = flow_run_id
        return self._blob


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
