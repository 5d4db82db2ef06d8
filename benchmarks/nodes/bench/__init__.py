"""Trivial nodes for overhead benchmarks: their cost is Prefect's and nodegraph's alone."""

from __future__ import annotations

from integration.graph import NodeType, node
from integration.graph.ports import InputPort, OutputPort

PACK = "bench"
FAN_WIDTH = 198  # 1 source + 198 branches + 1 sink = 200 nodes


@node
def inc(x: int) -> int:
    """x + 1."""
    return x + 1


def _gather(**values: int) -> int:
    return sum(values.values())


gather = NodeType(
    _gather,
    name="gather",
    inputs={f"x{i}": InputPort(f"x{i}", "int") for i in range(FAN_WIDTH)},
    outputs={"out": OutputPort("out", "int")},
    output_mode="single",
    description=f"The sum of {FAN_WIDTH} integer inputs (a fan-in).",
)


@node
def add(x: int, b: int = 1) -> int:
    """x + b."""
    return x + b


_failed_once: set[str] = set()


@node
def flaky_inc(x: int, fail_token: str = "") -> int:
    """x + 1; with a ``fail_token`` it first fails once per token (in this process)."""
    if fail_token and fail_token not in _failed_once:
        _failed_once.add(fail_token)
        raise ConnectionError(f"bench: planned failure {fail_token}")
    return x + 1


@node
def spin(iterations: int = 1_000_000, seed: int = 0) -> int:
    """Pure-Python work holding the GIL: a fixed number of loop iterations."""
    total = seed
    for i in range(iterations):
        total += i & 7
    return total


@node(resources={"gpu_count": 1}, cacheable=False)
def gpu_probe(index: int = 0, seconds: float = 0.2) -> dict:
    """What a GPU node sees: its worker, CUDA_VISIBLE_DEVICES and NVML's view of it."""
    import os
    import time

    from integration.resources import discover_gpus

    start = time.time()
    time.sleep(seconds)
    try:
        from distributed import get_worker

        worker = str(get_worker().name)
    except (ImportError, ValueError):
        worker = "local"
    return {
        "index": index,
        "worker": worker,
        "pid": os.getpid(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "gpus_seen": [g.uuid for g in discover_gpus()],
        "start": start,
        "end": time.time(),
    }


@node
def nap(x: int, seconds: float = 0.05) -> int:
    """x + 1 after sleeping ``seconds``: a node whose cost is known (frozen_tier.py)."""
    import time

    time.sleep(seconds)
    return x + 1
