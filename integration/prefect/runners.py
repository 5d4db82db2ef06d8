"""Strategies and the Prefect task runners behind them.

    >>> from integration.prefect.runners import task_runner_for
    >>> type(task_runner_for("parallel", max_workers=4)).__name__
    'ThreadPoolTaskRunner'

| strategy | how nodes run |
| --- | --- |
| sequential | direct task calls in the flow's thread, in topological order |
| parallel | ``ThreadPoolTaskRunner``, or ``WarmProcessPoolTaskRunner`` with ``processes=True`` |
| distributed | ``NodegraphDaskTaskRunner`` (see ``integration.prefect.dask``) |

The distributed strategy runs on a temporary ``LocalCluster``, on an existing cluster
(``dask_address``), or on ``dask_cuda.LocalCUDACluster`` (one worker per GPU) when
pynvml finds GPUs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from integration.config import NodegraphConfig
from integration.graph.registry import PackSource
from integration.prefect.process_pool import WarmProcessPoolTaskRunner
from integration.resources import GpuInfo, discover_gpus

STRATEGIES = ("sequential", "parallel", "distributed")


@dataclass
class DaskSettings:
    """How the distributed strategy finds or builds its cluster."""

    address: str | None = None
    workers: int | None = None
    threads_per_worker: int = 1
    memory_limit: str | None = None
    resources: dict[str, float] = field(default_factory=dict)
    gpus: str = "auto"
    spill_fraction: float | None = None

    @cached_property
    def found_gpus(self) -> list[GpuInfo]:
        """This machine's GPUs, asked of NVML once."""
        return discover_gpus()

    def use_cuda(self) -> bool:
        if self.address or self.gpus == "off":
            return False
        return self.gpus == "on" or bool(self.found_gpus)

    def worker_offer(self) -> dict[str, float]:
        """What each worker of a local cluster advertises, as Dask resources."""
        offer: dict[str, float] = {"CPU": float(self.threads_per_worker)}
        memory = self.memory_bytes()
        if memory:
            offer["MEMORY"] = memory
        if self.use_cuda():
            offer["GPU"] = 1.0
            if self.found_gpus:
                offer["GPU_MEMORY"] = min(g.memory_total_mb for g in self.found_gpus) * 1e6
        offer.update(self.resources)
        return offer

    def worker_count(self) -> int:
        if self.use_cuda():
            return max(len(self.found_gpus), 1)
        return self.workers or min(len(os.sched_getaffinity(0)), 4)

    def memory_bytes(self) -> float | None:
        if self.memory_limit is None:
            return None
        # Lazy: Dask takes about 0.4 s to import, and only the distributed strategy needs it.
        from dask.utils import parse_bytes

        return float(parse_bytes(self.memory_limit))

    def configure_spilling(self) -> None:
        """Make a local cluster's workers spill to disk above ``spill_fraction`` of
        their memory limit (Dask's own spilling; the nanny hands the config on)."""
        if self.spill_fraction is None:
            return
        # Lazy: Dask takes about 0.4 s to import, and only the distributed strategy needs it.
        import dask

        fraction = self.spill_fraction
        dask.config.set(
            {
                "distributed.worker.memory.target": fraction,
                "distributed.worker.memory.spill": fraction,
                "distributed.worker.memory.pause": max(0.8, min(fraction + 0.1, 0.95)),
            }
        )

    def cluster(self) -> tuple[Any, dict[str, Any]]:
        """The cluster class and its keyword arguments for a local cluster."""
        kwargs: dict[str, Any] = {
            "threads_per_worker": self.threads_per_worker,
            "dashboard_address": None,
            "silence_logs": logging.WARNING,
            "resources": self.worker_offer(),
        }
        if self.memory_limit is not None:
            kwargs["memory_limit"] = self.memory_limit
        if self.use_cuda():
            # Lazy and optional: dask-cuda comes with the gpu extra.
            from dask_cuda import LocalCUDACluster

            return LocalCUDACluster, kwargs
        # Lazy: Dask takes about 0.4 s to import, and only the distributed strategy needs it.
        import distributed

        kwargs["n_workers"] = self.worker_count()
        kwargs["processes"] = True
        return distributed.LocalCluster, kwargs


def dask_settings(config: NodegraphConfig) -> DaskSettings:
    """The distributed strategy's cluster settings from ``execution.*``."""
    execution = config.execution
    return DaskSettings(
        address=execution.dask_address,
        workers=execution.max_workers,
        threads_per_worker=execution.threads_per_worker,
        memory_limit=execution.worker_memory_limit,
        resources=dict(execution.worker_resources),
        gpus=execution.gpus,
        spill_fraction=config.resource_management.offload_threshold,
    )


def task_runner_for(
    strategy: str,
    *,
    processes: bool = False,
    max_workers: int | None = None,
    dask: DaskSettings | None = None,
    resources: Mapping[str, Mapping[str, float]] | None = None,
    packs: Iterable[PackSource] = (),
) -> TaskRunner[Any]:
    """The task runner a strategy uses. Unknown strategies are a ``ValueError``."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if strategy == "distributed":
        # Lazy: Dask takes about 0.4 s to import, and only the distributed strategy needs it.
        from integration.prefect.dask import NodegraphDaskTaskRunner

        dask = dask or DaskSettings(workers=max_workers)
        if dask.address:
            return NodegraphDaskTaskRunner(address=dask.address, resources=resources, packs=packs)
        cluster_class, cluster_kwargs = dask.cluster()
        dask.configure_spilling()
        return NodegraphDaskTaskRunner(
            cluster_class=cluster_class,
            cluster_kwargs=cluster_kwargs,
            resources=resources,
            packs=packs,
        )
    if strategy == "parallel" and processes:
        return WarmProcessPoolTaskRunner(max_workers=max_workers)
    if strategy == "sequential":
        # Nodes are called directly, so the runner only serves stray submits.
        return ThreadPoolTaskRunner(max_workers=1)
    return ThreadPoolTaskRunner(max_workers=max_workers)
