"""Measuring one node where it runs: wall and CPU time, peak memory, output size.

    >>> with NodeMeasurement(profile=True) as measured:
    ...     data = [0] * 100_000
    >>> measured.finish({"out": data}).peak_memory_bytes >= 800_000
    True

- **CPU time** is the running thread's (``time.thread_time``): a node's own work, even
  with other nodes running on other threads.
- **Peak memory** comes from ``tracemalloc``: the most memory Python allocated while
  the node ran, above what was allocated when it started. It is exact for Python
  objects (and for numpy arrays, which report to tracemalloc) where RSS sampling
  would see only what a sampler happens to catch between samples, and would need a
  thread per node. Tracing runs only while nodes run, so Prefect's own work between
  nodes is not slowed. Nodes running at the same time in one process share the
  tracer, so each one's peak includes what the others allocated meanwhile. Memory that
  C libraries allocate behind Python's back is not seen.
- **Output size** is the size of the outputs pickled, which is what a cache entry of
  the node holds.

The measurement travels back with the node's result (or its exception), so the
process running the flow can report it, whichever process ran the node.
"""

from __future__ import annotations

import pickle
import threading
import time
import tracemalloc
from dataclasses import asdict, dataclass
from typing import Any

import cloudpickle

_tracing_lock = threading.Lock()
_tracing_users = 0
_tracing_owned = False  # tracemalloc was started here, not by the user


@dataclass
class Measured:
    """One node execution's costs. Times are seconds; ``started`` is epoch seconds."""

    started: float
    wall_s: float
    cpu_s: float
    peak_memory_bytes: int | None = None
    output_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class NodeMeasurement:
    """A context around one node call: times it; with ``profile`` also its peak memory,
    and with ``size`` (or ``profile``) the size of its outputs."""

    def __init__(self, profile: bool, size: bool = False) -> None:
        self.profile = profile
        self.size = size or profile
        self.result: Measured | None = None

    def __enter__(self) -> NodeMeasurement:
        global _tracing_users, _tracing_owned
        if self.profile:
            with _tracing_lock:
                if not tracemalloc.is_tracing():
                    tracemalloc.start()
                    _tracing_owned = True
                _tracing_users += 1
                self._baseline = tracemalloc.get_traced_memory()[0]
                tracemalloc.reset_peak()
        self._started = time.time()
        self._wall = time.perf_counter()
        self._cpu = time.thread_time()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        global _tracing_users, _tracing_owned
        wall, cpu = time.perf_counter() - self._wall, time.thread_time() - self._cpu
        peak = None
        if self.profile:
            with _tracing_lock:
                peak = max(tracemalloc.get_traced_memory()[1] - self._baseline, 0)
                _tracing_users -= 1
                if _tracing_users == 0 and _tracing_owned:
                    tracemalloc.stop()
                    _tracing_owned = False
        self.result = Measured(self._started, wall, cpu, peak)

    def finish(self, outputs: Any) -> Measured:
        """The measurement, with the size of ``outputs`` when profiling."""
        assert self.result is not None, "finish() after the with block"
        if self.size and self.result.output_bytes is None:
            self.result.output_bytes = output_size(outputs)
        return self.result


def output_size(outputs: Any) -> int | None:
    """Bytes of ``outputs`` pickled, or ``None`` when they cannot be pickled."""
    try:
        return len(pickle.dumps(outputs, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:
        try:
            return len(cloudpickle.dumps(outputs))
        except Exception:
            return None
