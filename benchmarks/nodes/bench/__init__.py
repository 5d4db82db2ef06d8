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
