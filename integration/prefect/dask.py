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


class PackPreload(WorkerPlugin):
    """Load the run's node packs on every worker, at once and as workers join."""

    name = "nodegraph-packs"

    def __init__(self, packs: Iterable[PackSource]) -> None:
        self.packs = list(packs)

    def setup(self, worker: distributed.Worker) -> None:
        for source in self.packs:
            resolve_pack(source)
