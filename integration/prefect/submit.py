"""Start a graph run without waiting for it; watch it and cancel it by id.

    >>> import integration
    >>> handle = integration.submit("flows/examples/hello.yaml", inputs={"name": "Ada"})
    >>> handle.wait(timeout=60).state
    'COMPLETED'
    >>> handle.result().outputs["message"]
    'HELLO, ADA!'

``submit`` starts the run through a deployment (``run_deployment`` without waiting;
the run executes wherever the deployment's worker or ``serve`` process is), or, with
no deployment, on a background thread of this process. Either way it returns once the
flow run exists, with a ``RunHandle``. ``status``/``cancel`` work on any graph run by
its flow run id, whoever started it: progress comes from the labels the run publishes
(``integration.prefect.monitor``), cancellation goes through the server.
"""

from __future__ import annotations

import contextvars
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelling

from integration.config import NodegraphConfig, load_config
from integration.errors import NodegraphError
from integration.graph.model import Graph
from integration.graph.registry import NodeRegistry
from integration.graph.validate import resolve_inputs
from integration.prefect.deploy import graph_parameter, read_graph
from integration.prefect.flow import RunSession, prepare, run_plan
from integration.prefect.monitor import (
    LABEL_CACHED,
    LABEL_DONE,
    LABEL_FAILED,
    LABEL_NODES,
    finish_publishing,
)
from integration.result import RunResult

GraphArgument = Graph | Mapping[str, Any] | str | Path


class RunNotFound(NodegraphError, LookupError):
    """No flow run has the given id."""


@dataclass
class RunStatus:
    """Where a graph run stands. Node counts are ``None`` until the run reports them."""

    id: str
    name: str
    state: str
    message: str | None
    final: bool
    nodes: int | None = None
    done: int | None = None
    failed: int | None = None
    cached: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RunHandle:
    """A submitted run: ``id``, ``status()``, ``wait()``, ``result()``, ``cancel()``."""

    def __init__(self, flow_run_id: str, background: _Background | None = None) -> None:
        self.id = flow_run_id
        self._background = background

    def __repr__(self) -> str:
        return f"RunHandle({self.id!r})"

    def status(self) -> RunStatus:
        return status(self.id)

    def wait(self, timeout: float | None = None, poll_s: float = 0.5) -> RunStatus:
        """Block until the run ends; ``TimeoutError`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._background is not None:
            self._background.thread.join(timeout)
            if self._background.thread.is_alive():
                raise TimeoutError(f"run {self.id} still running after {timeout} s")
            finish_publishing()  # the final counts leave on a thread of their own
        while True:
            current = self.status()
            if current.final:
                return current
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {self.id} still {current.state} after {timeout} s")
            time.sleep(poll_s)

    def result(self, timeout: float | None = None) -> Any:
        """The ``RunResult`` of a background run; a deployment run's outputs (read from
        its persisted result, so the result storage must be reachable from here)."""
        self.wait(timeout)
        if self._background is not None:
            if self._background.error is not None:
                raise self._background.error
            assert self._background.result is not None
            return self._background.result
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(uuid.UUID(self.id)).state
        assert state is not None
        return state.result()

    def cancel(self) -> RunStatus:
        """Ask the run to stop: no node starts afterwards; finished nodes stay cached."""
        if self._background is not None and self._background.session.execution is not None:
            # Stop at once; the server state below is what the flow run reports.
            self._background.session.execution.cancel("cancelled from its handle")
        return cancel(self.id)


@dataclass
class _Background:
    thread: threading.Thread
    session: Any
    result: RunResult | None = None
    error: BaseException | None = None


def submit(
    graph: GraphArgument | None = None,
    inputs: Mapping[str, Any] | None = None,
    outputs: Sequence[str] | None = None,
    strategy: str | None = None,
    *,
    deployment: str | None = None,
    processes: bool | None = None,
    max_workers: int | None = None,
    registry: NodeRegistry | None = None,
    config: NodegraphConfig | None = None,
    cache: bool | None = None,
    start_timeout: float = 120,
) -> RunHandle:
    """Start a run and return its handle once the flow run exists.

    With ``deployment`` ("flow-name/deployment-name"), the run is created through it:
    for a ``run_graph`` deployment, ``graph`` (if given) replaces the deployed graph
    and ``inputs`` are the graph's inputs; for any other deployment, ``inputs`` are
    its parameters. Without, the graph runs on a background thread of this process.
    Invalid graphs and inputs raise here, before anything starts.
    """
    if deployment is not None:
        return _submit_to_deployment(deployment, graph, inputs, outputs, strategy)
    if graph is None:
        raise ValueError("submit needs a graph, or a deployment to run")
    config = config or load_config()
    plan = prepare(read_graph(graph), outputs, registry, config)
    values = resolve_inputs(plan.graph, inputs or {})
    session = RunSession()
    holder: list[_Background] = []

    def body() -> None:
        try:
            holder[0].result = run_plan(
                plan,
                values,
                config,
                strategy=strategy,
                processes=processes,
                max_workers=max_workers,
                cache=cache,
                session=session,
            )
        except BaseException as exc:  # handed to whoever asks for the result
            holder[0].error = exc
        finally:
            session.running.set()

    thread = threading.Thread(
        target=contextvars.copy_context().run,
        args=(body,),
        name=f"nodegraph-run-{plan.name}",
        daemon=True,
    )
    background = _Background(thread, session)
    holder.append(background)
    thread.start()
    if not session.running.wait(start_timeout):
        raise TimeoutError(f"the run of {plan.name!r} did not start within {start_timeout} s")
    if session.flow_run_id is None:
        thread.join()
        raise background.error or RuntimeError(f"the run of {plan.name!r} never started")
    return RunHandle(session.flow_run_id, background)


def _submit_to_deployment(
    deployment: str,
    graph: GraphArgument | None,
    inputs: Mapping[str, Any] | None,
    outputs: Sequence[str] | None,
    strategy: str | None,
) -> RunHandle:
    if graph is not None:
        parameters: dict[str, Any] = {"graph": graph_parameter(graph)}
        if inputs:
            parameters["inputs"] = dict(inputs)
        if outputs:
            parameters["outputs"] = list(outputs)
        if strategy:
            parameters["strategy"] = strategy
    else:
        parameters = dict(inputs or {})
    flow_run = run_deployment(deployment, parameters=parameters, timeout=0)
    return RunHandle(str(flow_run.id))  # type: ignore[union-attr]


def _read(client: SyncPrefectClient, flow_run_id: str) -> FlowRun:
    try:
        return client.read_flow_run(uuid.UUID(flow_run_id))
    except ValueError:
        raise RunNotFound(f"{flow_run_id!r} is not a flow run id") from None
    except ObjectNotFound:
        raise RunNotFound(f"no flow run {flow_run_id} on {client.api_url}") from None


def status(flow_run_id: str) -> RunStatus:
    """The state of a graph run and how many of its nodes have finished."""
    with get_client(sync_client=True) as client:
        flow_run = _read(client, flow_run_id)
        labels = _progress_labels(client, flow_run)
    state = flow_run.state
    counts = {
        field: int(labels[label]) if label in labels else None
        for field, label in (
            ("nodes", LABEL_NODES),
            ("done", LABEL_DONE),
            ("failed", LABEL_FAILED),
            ("cached", LABEL_CACHED),
        )
    }
    return RunStatus(
        id=str(flow_run.id),
        name=flow_run.name,
        state=state.type.value if state else "UNKNOWN",
        message=state.message if state else None,
        final=bool(state and state.is_final()),
        **counts,
    )


def _progress_labels(client: SyncPrefectClient, flow_run: FlowRun) -> dict[str, Any]:
    """The run's own progress labels, or those of the graph subflow a ``run_graph``
    run started."""
    labels = dict(flow_run.labels or {})
    if LABEL_NODES in labels:
        return labels
    children = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run.id])
        ),
        limit=10,
    )
    for child in children:
        if LABEL_NODES in (child.labels or {}):
            return dict(child.labels)
    return labels


def cancel(flow_run_id: str) -> RunStatus:
    """Cancel a run: the server marks it ``Cancelling``; its worker, ``serve`` process
    or in-process monitor stops it, and it ends ``Cancelled``."""
    with get_client(sync_client=True) as client:
        flow_run = _read(client, flow_run_id)
        if flow_run.state is None or not flow_run.state.is_final():
            client.set_flow_run_state(flow_run.id, Cancelling(), force=True)
    return status(flow_run_id)
