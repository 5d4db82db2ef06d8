"""The ``distributed`` strategy: node tasks on a Dask cluster, with a fast submit path.

    >>> from integration.prefect.dask import NodegraphDaskTaskRunner
    >>> runner = NodegraphDaskTaskRunner(address="tcp://127.0.0.1:8786")

``NodegraphDaskTaskRunner`` is a prefect-dask ``DaskTaskRunner``: every node is still a
Prefect task run with its own state, retries and result persistence, visible in the UI.
What changes is how a task gets to a worker:

- **The context is serialised once per flow run, and hydrated once per worker.**
  Stock prefect-dask serialises the Prefect context for every submit, and its workers
  rebuild the settings and a new API client for every task run: most of their time
  per task. ``integration.prefect.task_context`` does both once (shared with the
  process pool of the ``parallel`` strategy).
- **Resources.** A node's ``ResourceRequirement`` becomes Dask resource restrictions on
  its submit (the same as ``dask.annotate(resources=...)``), so it runs only on workers
  that advertise them (``dask worker --resources "GPU=1"``), never oversubscribing.
- **Node packs.** Node types travel by pack reference and load on the worker from the
  same path or module; ``PackPreload`` loads the run's packs on every worker as it
  joins, so a missing pack fails early with a clear message.
- **Lost workers.** When a worker dies while running a node, Dask runs the node again
  elsewhere and the run goes on. ``lost_workers`` says which nodes that happened to,
  and on which workers: each node task announces its start to the scheduler (an event
  on ``STARTED_TOPIC``), and the scheduler's ``remove-worker`` event names the tasks
  the worker was processing; a node counts as recovered when it had started there.
  Results lost with a worker and recomputed from the cache do not count. The
  scheduler keeps the last 1,000 events of a topic, so in a run of more nodes than
  that an early recovery can go unreported.
- **Workers of a local cluster die with the run.** A ``LocalCluster`` (or
  ``LocalCUDACluster``) that the runner starts runs its nannies in this process, and
  each worker process exits when its nanny's pipe closes (distributed's
  ``AsyncProcess``), so ``kill -9`` of the run takes its workers with it. A cluster at
  ``address`` is the user's: it is never stopped.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import distributed
from distributed.diagnostics.plugin import WorkerPlugin
from prefect.futures import PrefectFuture
from prefect.utilities.engine import collect_task_run_inputs_sync
from prefect_dask import DaskTaskRunner
from prefect_dask.task_runners import PrefectDaskFuture

from integration.graph.registry import PackSource, resolve_pack
from integration.prefect.task_context import FlowRunContextBlob, run_node_task

logger = logging.getLogger("nodegraph.dask")

STARTED_TOPIC = "nodegraph-node-started"
"""Scheduler event topic on which node tasks announce their start."""


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
        self._context = FlowRunContextBlob()
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
        context_id, context_blob = self._context.current()
        future = distributed.Client.submit(
            client,
            run_dask_node_task,
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

    def lost_workers(self, task_run_ids: Iterable[str]) -> dict[str, list[str]]:
        """The workers that died while running each of ``task_run_ids`` (Dask ran it
        again elsewhere, or failed it after too many), for those it happened to.

        Asked of the scheduler's event log once a run is over: which workers announced
        the start of the run's nodes, which of those are gone, and what each gone one
        was processing when it left. Distributed's own ``"all"`` topic is not
        subscribed to: its ``replicate`` event carries scheduler objects, and a client
        subscribed to it lost its futures when the run replicated an output.
        """
        by_hex = {uuid.UUID(task_run_id).hex: task_run_id for task_run_id in task_run_ids}
        if not by_hex:
            return {}
        client = self.client
        ran_on: dict[str, list[str]] = {}
        for _, note in client.get_events(STARTED_TOPIC):
            key = note.get("key", "") if isinstance(note, dict) else ""
            if key.rsplit("-", 1)[-1] in by_hex:
                ran_on.setdefault(key, []).append(note.get("worker", ""))
        if not ran_on:
            return {}
        alive = set(client.nthreads())  # the workers there are now (a small answer)
        gone = {w for workers in ran_on.values() for w in workers if w and w not in alive}
        if not gone:
            return {}
        processing: dict[str, set[str]] = {}
        for worker in sorted(gone):
            for _, event in client.get_events(worker):
                if isinstance(event, dict) and event.get("action") == "remove-worker":
                    if not event.get("expected"):  # a retired worker had lost nothing
                        processing.setdefault(worker, set()).update(
                            event.get("processing-tasks") or ()
                        )
        found: dict[str, list[str]] = {}
        for key, workers in ran_on.items():
            lost = [w for w in workers if key in processing.get(w, ())]
            if lost:
                found[by_hex[key.rsplit("-", 1)[-1]]] = lost
        return found


def run_dask_node_task(*args: Any) -> Any:
    """``run_node_task`` on a Dask worker, announcing its start to the scheduler first
    (see ``NodegraphDaskTaskRunner.lost_workers``)."""
    try:
        worker = distributed.get_worker()
    except ValueError:  # not on a worker (a test calling it directly)
        pass
    else:
        key = worker.get_current_task()
        # Through the worker's batched stream: no round trip, a few bytes a node.
        worker.log_event(STARTED_TOPIC, {"key": str(key), "worker": worker.address})
    return run_node_task(*args)


class PackPreload(WorkerPlugin):
    """Load the run's node packs on every worker, at once and as workers join."""

    name = "nodegraph-packs"

    def __init__(self, packs: Iterable[PackSource]) -> None:
        self.packs = list(packs)

    def setup(self, worker: distributed.Worker) -> None:
        for source in self.packs:
            resolve_pack(source)
