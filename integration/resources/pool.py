"""A local budget of resources that running nodes hold: ``ResourcePool``.

    >>> from integration.resources import ResourcePool, ResourceRequirement
    >>> pool = ResourcePool({"cpu_cores": 2, "gpu_count": 1})
    >>> pool.problems(ResourceRequirement(gpu_count=2))
    ['gpu_count: needs 2, the pool has 1']

The sequential and parallel strategies reserve a node's requirement before submitting
it and release it when the node finishes, so threads and processes never hold more
than the pool. A requirement larger than the whole pool can never run: that is a
validation error before the run starts (``problems``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping

from integration.resources.gpus import discover_gpus
from integration.resources.requirements import RESOURCE_NAMES, ResourceRequirement


class ResourcePool:
    """Capacities by ``ResourceRequirement`` field; a field absent is unlimited."""

    def __init__(self, capacity: Mapping[str, float]) -> None:
        unknown = set(capacity) - set(RESOURCE_NAMES)
        if unknown:
            raise ValueError(f"unknown resources {sorted(unknown)}; use {list(RESOURCE_NAMES)}")
        self.capacity = dict(capacity)
        self.in_use = dict.fromkeys(self.capacity, 0.0)
        self._changed = threading.Condition()

    def problems(self, need: ResourceRequirement) -> list[str]:
        """Why ``need`` can never be met by this pool (empty when it can)."""
        found = []
        for name, amount in need.amounts().items():
            limit = self.capacity.get(name)
            if limit is not None and amount > limit:
                found.append(f"{name}: needs {amount:g}, the pool has {limit:g}")
        return found

    def can_schedule(self, need: ResourceRequirement) -> bool:
        """Whether ``need`` fits in what is free now."""
        with self._changed:
            return self._fits(need)

    def reserve(self, need: ResourceRequirement) -> bool:
        """Take ``need`` if it fits now; return whether it did."""
        with self._changed:
            if not self._fits(need):
                return False
            for name, amount in need.amounts().items():
                if name in self.in_use:
                    self.in_use[name] += amount
            return True

    def release(self, need: ResourceRequirement) -> None:
        """Give back what ``reserve`` took."""
        with self._changed:
            for name, amount in need.amounts().items():
                if name in self.in_use:
                    self.in_use[name] = max(0.0, self.in_use[name] - amount)
            self._changed.notify_all()

    def wait_for_resources(self, need: ResourceRequirement, timeout: float | None = None) -> bool:
        """Block until ``need`` is reserved (True) or ``timeout`` passes (False)."""
        if self.problems(need):
            raise ValueError("; ".join(self.problems(need)))
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while not self._fits(need):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._changed.wait(remaining)
            for name, amount in need.amounts().items():
                if name in self.in_use:
                    self.in_use[name] += amount
            return True

    def _fits(self, need: ResourceRequirement) -> bool:
        for name, amount in need.amounts().items():
            limit = self.capacity.get(name)
            if limit is not None and self.in_use[name] + amount > limit + 1e-9:
                return False
        return True

    def __repr__(self) -> str:
        return f"ResourcePool(capacity={self.capacity}, in_use={self.in_use})"


def local_capacity(overrides: Mapping[str, float | None] | None = None) -> dict[str, float]:
    """What this machine offers: CPU cores, memory and GPUs (count and memory), with
    ``overrides`` (from ``resource_management``) taking precedence where set."""
    gpus = discover_gpus()
    capacity: dict[str, float] = {
        "cpu_cores": float(
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1
        ),
        "memory_mb": machine_memory_mb(),
        "gpu_count": float(len(gpus)),
        "gpu_memory_mb": max((g.memory_total_mb for g in gpus), default=0.0),
    }
    for name, value in (overrides or {}).items():
        if value is not None:
            capacity[name] = float(value)
    return capacity


def machine_memory_mb() -> float:
    """This machine's physical memory in MB (infinite when it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e6
    except (ValueError, OSError, AttributeError):
        return float("inf")
