"""Watching a running graph from the outside: cancellation and progress.

A graph's flow run can be cancelled from anywhere (the Prefect UI, ``nodegraph cancel``,
``RunHandle.cancel()``): the server marks it ``Cancelling``. A worker or ``serve``
process kills the flow-run process it started; a run started in-process
(``integration.run``, ``nodegraph run``, ``integration.submit``) has no one to do
that, so ``RunMonitor`` asks the server for the run's state every
``execution.cancel_check_seconds`` and, once it is ``Cancelling``, stops the engine:
no node starts afterwards, queued nodes are cancelled, running ones finish and keep
their results, and the flow run ends ``Cancelled``.

The same thread publishes progress as the flow run's labels (``nodegraph.nodes``,
``nodegraph.done``, ``nodegraph.failed``, ``nodegraph.cached``), at most once per
check, and once more when the run ends (off the run's own path), so
``nodegraph status RUN_ID`` can tell how far a run got without reading its task runs
(cached nodes have none).
"""

from __future__ import annotations

import atexit
import contextvars
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import StateType
from prefect.settings import PREFECT_CLIENT_MAX_RETRIES

from integration.prefect.settings import updated_settings
from integration.result import NodeReport, NodeState

logger = logging.getLogger("nodegraph.monitor")

LABEL_NODES = "nodegraph.nodes"
LABEL_DONE = "nodegraph.done"
LABEL_FAILED = "nodegraph.failed"
LABEL_CACHED = "nodegraph.cached"
LABEL_GRAPH = "nodegraph.graph"

_FAILED = {NodeState.FAILED, NodeState.UPSTREAM_FAILED}


class Progress:
    """Counts of finished nodes, updated by the engine's reports (any thread)."""

    def __init__(self, graph: str, total: int) -> None:
        self.graph = graph
        self.total = total
        self.done = self.failed = self.cached = 0
        self._lock = threading.Lock()
        self.version = 0

    def record(self, report: NodeReport, finished: int = 0, total: int = 0) -> None:
        """A node's report (a ``NodeListener``); ``total`` grows with a graph that
        grows as it runs (a ComfyUI prompt's)."""
        with self._lock:
            self.total = max(self.total, total)
            if report.state != NodeState.PENDING:
                self.done += 1
            self.failed += report.state in _FAILED
            self.cached += report.state == NodeState.CACHED
            self.version += 1

    def labels(self) -> dict[str, Any]:
        with self._lock:
            return {
                LABEL_GRAPH: self.graph,
                LABEL_NODES: self.total,
                LABEL_DONE: self.done,
                LABEL_FAILED: self.failed,
                LABEL_CACHED: self.cached,
            }


@contextmanager
def run_monitor(
    client: SyncPrefectClient | None,
    flow_run_id: str | None,
    progress: Progress,
    on_cancel: Callable[[str], None],
    interval_s: float,
    parent_task_run_id: Any = None,
) -> Iterator[None]:
    """Watch ``flow_run_id`` while the block runs (nothing without a flow run).

    ``client`` is the flow run's own: building another costs more than the checks.
    A subflow (a ``run_graph`` deployment's graph run) also stops when its parent flow
    run is cancelled.
    """
    if client is None or flow_run_id is None or interval_s <= 0:
        yield
        return
    run_id = uuid.UUID(flow_run_id)
    stop = threading.Event()

    def watch() -> None:
        # A check that meets a busy server (SQLite answers 503) fails at once and the
        # next tick tries again: the client's own retries back off for 2, 4, 8 s, and a
        # cancel would go unnoticed that long while nodes keep starting.
        with updated_settings({PREFECT_CLIENT_MAX_RETRIES: 0}):
            checks()

    def checks() -> None:
        published = -1
        watched = [run_id]
        while not stop.wait(interval_s):
            try:
                if parent_task_run_id is not None and len(watched) == 1:
                    watched.append(client.read_task_run(parent_task_run_id).flow_run_id)
                for watched_id in watched:
                    state = client.read_flow_run(watched_id).state
                    if state is not None and state.type in (
                        StateType.CANCELLING,
                        StateType.CANCELLED,
                    ):
                        which = "flow run" if watched_id == run_id else "parent flow run"
                        on_cancel(f"the {which} was cancelled ({state.name})")
                        return
                if progress.version != published:
                    version = progress.version
                    client.update_flow_run_labels(run_id, progress.labels())
                    published = version
            except Exception as exc:  # the run goes on without its monitor
                logger.debug("run monitor: %s", exc)

    # The copied context carries the flow's settings (its API URL) into the thread.
    thread = threading.Thread(
        target=contextvars.copy_context().run, args=(watch,), name="nodegraph-monitor", daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()


def publish_progress(flow_run_id: str | None, progress: Progress) -> None:
    """Publish the final counts without holding up the end of the run.

    A server on SQLite answers 503 ("database is locked") while it stores the run's
    last task runs, and the client retries after seconds of back-off: measured here,
    that added about 2 s to every run when done inline. The update goes out on a thread
    of its own; a process that exits waits for it (``finish_publishing``, 10 s at
    most). It retries on its own, every 0.1 s growing to 1 s: the client's back-off
    (2, 4, 8 s) kept a CLI run's process waiting up to 7 s after the server was free.
    """
    if flow_run_id is None:
        return
    labels = progress.labels()

    def push() -> None:
        try:
            with updated_settings({PREFECT_CLIENT_MAX_RETRIES: 0}):
                with get_client(sync_client=True) as client:
                    _update_until(client, uuid.UUID(flow_run_id), labels)
        except Exception as exc:  # a client that cannot be built, or the last attempt
            logger.warning("could not publish the run's progress: %s", exc)

    thread = threading.Thread(
        target=contextvars.copy_context().run, args=(push,), name="nodegraph-progress", daemon=True
    )
    with _publishing_lock:
        _publishing[:] = [t for t in _publishing if t.is_alive()]
        _publishing.append(thread)
    thread.start()


_publishing: list[threading.Thread] = []
_publishing_lock = threading.Lock()


def _update_until(client: Any, flow_run_id: uuid.UUID, labels: dict[str, Any]) -> None:
    """Set the labels, retrying every 0.1 s growing to 1 s, for ``PUBLISH_LIMIT_S``;
    the last failure raises."""
    deadline = time.monotonic() + PUBLISH_LIMIT_S
    delay = 0.1
    while True:
        try:
            client.update_flow_run_labels(flow_run_id, labels)
            return
        except Exception:
            if time.monotonic() + delay >= deadline:
                raise
        time.sleep(delay)
        delay = min(2 * delay, 1.0)


PUBLISH_LIMIT_S = 10.0
"""How long a run's final counts may take to publish (an exiting process waits)."""


@atexit.register
def finish_publishing(limit_s: float = PUBLISH_LIMIT_S) -> None:
    """Wait (``limit_s`` at most) until finished runs have published their counts."""
    deadline = time.monotonic() + limit_s
    with _publishing_lock:
        pending = list(_publishing)
    for thread in pending:
        thread.join(max(0.0, deadline - time.monotonic()))
