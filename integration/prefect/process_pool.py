"""A process pool that stays warm across flow runs.

Prefect's ``ProcessPoolTaskRunner`` spawns its worker processes when a flow run
starts and stops them when it ends, so every run pays for fresh interpreters that
import Prefect, nodegraph and the node packs before the first node runs (about 1.5 s
per process on the 2-core machine here, which made eight 0.5 s nodes on two processes
slower than running them one after another).

``WarmProcessPoolTaskRunner`` keeps the executor, and the queue that forwards the
workers' events and logs, for the life of the Python process, one per worker count.
Tasks reach the workers through ``integration.prefect.task_context``, as on Dask:
the flow run's context is pickled once and hydrated once per worker process, instead
of once per task. Each task carries its flow run's context id, so successive runs do
not see each other's state. A pool broken by a
dying worker, or one whose run was cancelled, is dropped and the next run starts a
new one. ``close_process_pools`` stops them; it also runs at interpreter exit.

The workers exit when the process that started them dies, ``kill -9`` included, and a
worker never starts a node once its parent is gone (``integration.lifeline``). The
multiprocessing resource tracker follows: it exits when the last process holding its
pipe (the parent and the workers) is gone.
"""

from __future__ import annotations

import atexit
import multiprocessing
import threading
from collections.abc import Iterable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Self

from prefect._internal.uuid7 import uuid7
from prefect.events.worker import EventsWorker
from prefect.futures import PrefectConcurrentFuture, PrefectFuture, wait
from prefect.task_runners import (
    _PROCESS_POOL_MESSAGE_QUEUE_SHUTDOWN,
    ProcessPoolTaskRunner,
    _ChainedFuture,
    _initialize_process_pool_worker,
    _UnpicklingFuture,
)
from prefect.utilities.callables import cloudpickle_wrapped_call
from prefect.utilities.engine import resolve_inputs_sync

from integration.lifeline import Lifeline, exit_if_orphaned, watch_parent
from integration.prefect.task_context import FlowRunContextBlob, run_node_task


@dataclass
class _WarmPool:
    executor: ProcessPoolExecutor
    queue: Any
    forwarder: threading.Thread
    lifeline: Lifeline

    def broken(self) -> bool:
        # ProcessPoolExecutor records a crashed worker here; it refuses new work after.
        return bool(getattr(self.executor, "_broken", False))

    def close(self, wait: bool) -> None:
        self.executor.shutdown(wait=wait, cancel_futures=True)
        try:
            self.queue.put_nowait(_PROCESS_POOL_MESSAGE_QUEUE_SHUTDOWN)
        except (ValueError, OSError):
            pass
        if wait:
            self.forwarder.join(timeout=5)
        # That put started the queue's feeder thread in this process. The feeder takes
        # the queue's write lock, which a worker killed while writing (a cancelled run,
        # a crash) holds forever; multiprocessing's exit handler would then wait on the
        # feeder forever (a CI run hung there after its tests had passed). Not joined,
        # it cannot hold up exit. (Not closed either: closing shuts the reader under the
        # forwarder thread.)
        self.queue.cancel_join_thread()
        if wait:
            # Without waiting, a worker may still be finishing a cancelled run's node;
            # it exits by itself once the executor's queues close.
            self.lifeline.close()


_pools: dict[int, _WarmPool] = {}
_pools_lock = threading.Lock()


def close_process_pools(wait: bool = True) -> None:
    """Stop every warm process pool of this Python process."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close(wait)


atexit.register(close_process_pools)


class WarmProcessPoolTaskRunner(ProcessPoolTaskRunner):
    """``ProcessPoolTaskRunner`` whose worker processes outlive the flow run."""

    def __init__(self, max_workers: int | None = None) -> None:
        super().__init__(max_workers=max_workers)
        self._context = FlowRunContextBlob()

    def duplicate(self) -> Self:
        return type(self)(max_workers=self._max_workers)

    def _warm_pool(self) -> _WarmPool:
        with _pools_lock:
            pool = _pools.get(self._max_workers)
            if pool is not None and not pool.broken():
                return pool
            if pool is not None:
                pool.close(wait=False)
            # Spawn, as Prefect does: forking a process that runs threads is unsafe.
            context = multiprocessing.get_context("spawn")
            queue = context.Queue()
            self._subprocess_message_queue = queue
            forwarder = threading.Thread(
                target=self._forward_subprocess_messages,
                name="nodegraph-process-pool-forwarder",
                daemon=True,
            )
            forwarder.start()
            lifeline = Lifeline(context)
            executor = ProcessPoolExecutor(
                max_workers=self._max_workers,
                mp_context=context,
                initializer=_initialize_pool_worker,
                initargs=(lifeline.child_end, lifeline.parent_pid, queue),
            )
            pool = _WarmPool(executor, queue, forwarder, lifeline)
            _pools[self._max_workers] = pool
            return pool

    def __enter__(self) -> Self:
        # The TaskRunner base, not ProcessPoolTaskRunner: that one starts a new pool.
        # The pool itself is attached on the first submit: a worker process enters a
        # copy of this runner for its flow-run context and never submits.
        super(ProcessPoolTaskRunner, self).__enter__()
        self._resolver_executor = ThreadPoolExecutor(max_workers=self._max_workers)
        return self

    def submit(  # type: ignore[override]
        self,
        task: Any,
        parameters: dict[str, Any],
        wait_for: Iterable[PrefectFuture[Any]] | None = None,
        dependencies: dict[str, set[Any]] | None = None,
    ) -> PrefectConcurrentFuture[Any]:
        if not self._started or self._resolver_executor is None:
            raise RuntimeError("Task runner is not started")
        if self._executor is None:
            pool = self._warm_pool()
            self._executor = pool.executor
            self._subprocess_message_queue = pool.queue
        task_run_id = uuid7()
        context_id, context_blob = self._context.current()
        # Upstream futures resolve on a thread, so that submit never blocks.
        resolution = self._resolver_executor.submit(
            self._resolve_and_start,
            task,
            task_run_id,
            parameters,
            wait_for,
            dependencies,
            context_id,
            context_blob,
        )
        return PrefectConcurrentFuture(
            task_run_id=task_run_id, wrapped_future=_UnpicklingFuture(_ChainedFuture(resolution))
        )

    def _resolve_and_start(
        self,
        task: Any,
        task_run_id: Any,
        parameters: dict[str, Any],
        wait_for: Iterable[PrefectFuture[Any]] | None,
        dependencies: dict[str, set[Any]] | None,
        context_id: str,
        context_blob: bytes,
    ) -> Future[bytes]:
        # Futures cannot cross to a process; their final states can, and the task
        # engine treats a non-completed upstream state as it would the future.
        waits = list(wait_for or ())
        if waits:
            wait(waits)
        wait_states = [future.state for future in waits] or None
        resolved = resolve_inputs_sync(parameters, return_data=True, max_depth=-1)
        executor = self._executor
        if executor is None:
            raise RuntimeError("the process pool was shut down (the run was cancelled)")
        return executor.submit(
            cloudpickle_wrapped_call(
                run_pooled_task,
                task,
                task_run_id,
                resolved,
                wait_states,
                dependencies or {},
                context_id,
                context_blob,
            )
        )

    def cancel_all(self) -> None:
        """A cancelled run takes its pool down: queued tasks of this run must not
        start, and the executor cannot cancel one run's tasks only."""
        with _pools_lock:
            pool = _pools.get(self._max_workers)
            if pool is not None and pool.executor is self._executor:
                del _pools[self._max_workers]
            else:
                pool = None
        if pool is not None:
            pool.close(wait=False)
        self._executor = None

    def terminate(self) -> None:
        """Kill the pool's processes, and the nodes running in them (a cancelled run);
        the next run starts a new pool."""
        # Taken first: shutting the executor down forgets its processes.
        processes = list((getattr(self._executor, "_processes", None) or {}).values())
        self.cancel_all()
        # ProcessPoolExecutor has no public way to stop a running call.
        for process in processes:
            process.terminate()

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        if self._resolver_executor is not None:
            self._resolver_executor.shutdown(cancel_futures=True, wait=True)
            self._resolver_executor = None
        self._executor = None
        self._subprocess_message_queue = None
        super(ProcessPoolTaskRunner, self).__exit__(exc_type, exc_value, traceback)


def _initialize_pool_worker(lifeline: Any, parent_pid: int, queue: Any) -> None:
    """A pool worker's start: watch the parent, then Prefect's own setup (its events
    and logs go to the parent through ``queue``)."""
    watch_parent(lifeline, parent_pid)
    _initialize_process_pool_worker(queue, None, ())


def run_pooled_task(*args: Any) -> Any:
    """``run_node_task`` in a pool process, then hand its events to the parent before
    answering, so that the flow run never ends ahead of its task runs' states."""
    # A node queued before the parent died must not start after it.
    exit_if_orphaned()
    try:
        return run_node_task(*args)
    finally:
        with EventsWorker._instance_lock:
            started = bool(EventsWorker._instances)
        if started:
            EventsWorker.instance().wait_until_empty()
