"""GPUs, found with pynvml (the ``nvidia-ml-py`` package).

    >>> gpus = discover_gpus()   # [] without pynvml, without a driver, or without GPUs
    >>> isinstance(gpus, list)
    True

Never raises: a machine whose NVML cannot be loaded has zero GPUs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("nodegraph.resources")


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as NVML sees it now."""

    index: int
    name: str
    uuid: str
    memory_total_mb: float
    memory_used_mb: float
    utilization_percent: float

    @property
    def memory_percent(self) -> float:
        return 100 * self.memory_used_mb / self.memory_total_mb if self.memory_total_mb else 0.0


def discover_gpus() -> list[GpuInfo]:
    """The GPUs this process can see (``CUDA_VISIBLE_DEVICES`` is honoured)."""
    nvml = _nvml()
    if nvml is None:
        return []
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        logger.debug("no GPUs: NVML cannot start: %s", exc)
        return []
    try:
        found = []
        for index in _visible(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                utilization = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except Exception:  # not supported on every device (MIG slices)
                utilization = 0.0
            found.append(
                GpuInfo(
                    index=index,
                    name=_text(nvml.nvmlDeviceGetName(handle)),
                    uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                    memory_total_mb=memory.total / 1e6,
                    memory_used_mb=memory.used / 1e6,
                    utilization_percent=utilization,
                )
            )
        return found
    except Exception as exc:
        logger.warning("GPU discovery failed part-way, assuming no GPUs: %s", exc)
        return []
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass


def _nvml() -> Any:
    try:
        # Lazy and optional: nvidia-ml-py comes with the gpu extra.
        import pynvml
    except ImportError:
        return None
    return pynvml


def _visible(count: int) -> list[int]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return list(range(count))
    indices = []
    for item in visible.split(","):
        item = item.strip()
        if item.isdigit() and int(item) < count:
            indices.append(int(item))
    return indices


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
