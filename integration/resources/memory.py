"""Keeping a run's memory bounded: spill outputs still needed to disk under pressure.

    >>> import tempfile, pathlib
    >>> manager = MemoryManager(limit_mb=1, threshold=0.5, folder=pathlib.Path(tempfile.mkdtemp()))
    >>> manager.over_threshold()   # this process uses more than 0.5 MB
    True
    >>> spilled = manager.spill("a", {"out": [1, 2, 3]})
    >>> manager.restore(spilled)
    {'out': [1, 2, 3]}

The engine asks ``over_threshold()`` after each node finishes. Above
``resource_management.offload_threshold`` of the memory limit (``memory_mb``, else the
machine's RAM), outputs whose consumers have not started yet are pickled to disk and
come back when a consumer needs them. Outputs pinned with ``pin_in_memory`` never
spill. On Dask, workers use Dask's own spilling, configured from the same settings.
"""

from __future__ import annotations

import os
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Spilled:
    """An output that lives in a file until a consumer needs it."""

    node_id: str
    path: Path
    size_bytes: int


class MemoryManager:
    """Decides when to spill, spills, restores, and remembers what is pinned."""

    def __init__(
        self,
        limit_mb: float,
        threshold: float,
        folder: Path,
        usage_mb: Callable[[], float] | None = None,
    ) -> None:
        self.limit_mb = limit_mb
        self.threshold = threshold
        self.folder = Path(folder)
        self.usage_mb = usage_mb or process_rss_mb
        self._pinned: set[str] = set()
        self.spilled: list[str] = []

    def pin_in_memory(self, node_id: str) -> None:
        """Never spill this node's outputs."""
        self._pinned.add(node_id)

    def pinned(self, node_id: str) -> bool:
        return node_id in self._pinned

    def over_threshold(self) -> bool:
        return self.usage_mb() > self.threshold * self.limit_mb

    def spill(self, node_id: str, value: Any) -> Spilled:
        """Write ``value`` to disk; the caller drops its own reference."""
        if node_id in self._pinned:
            raise ValueError(f"node {node_id!r} is pinned in memory")
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{node_id}.pickle"
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        path.write_bytes(data)
        self.spilled.append(node_id)
        return Spilled(node_id, path, len(data))

    def restore(self, spilled: Spilled) -> Any:
        """Read a spilled value back and delete its file."""
        value = pickle.loads(spilled.path.read_bytes())
        spilled.path.unlink(missing_ok=True)
        return value

    def clean(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def process_rss_mb() -> float:
    """This process's resident memory in MB."""
    try:
        with open("/proc/self/statm") as handle:
            resident_pages = int(handle.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):
        # Lazy: a POSIX-only module, for systems without /proc.
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
