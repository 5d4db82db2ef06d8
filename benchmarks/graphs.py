"""Generated graph documents and their hand-written raw Prefect equivalents."""

from __future__ import annotations

import random
import time
from typing import Any

from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner

from integration.graph import NodeRegistry, NodeType
from integration.graph.ports import InputPort, OutputPort

FAN_WIDTH = 198
FAN_PACK = "benchfan"


def chain_doc(n: int, node_type: str = "bench.inc") -> dict[str, Any]:
    """``n0 -> n1 -> ... -> n{n-1}``; node 0 gets its input as a param."""
    nodes = [{"id": f"n{i:05d}", "type": node_type} for i in range(n)]
    nodes[0]["params"] = {"x": 0}
    edges = [{"from": f"n{i:05d}.out", "to": f"n{i + 1:05d}.x"} for i in range(n - 1)]
    return {
        "name": f"chain-{n}",
        "nodes": nodes,
        "edges": edges,
        "outputs": {"result": f"n{n - 1:05d}.out"},
    }


def fan_doc(n: int = FAN_WIDTH + 2) -> dict[str, Any]:
    """source -> ``n - 2`` branches -> one sink summing them: ``n`` nodes (200 by
    default). Sinks wider than ``bench.gather`` are ``benchfan.gather<width>``: register
    them with ``register_fan_sink``."""
    width = n - 2
    sink = "bench.gather" if width == FAN_WIDTH else f"{FAN_PACK}.gather{width}"
    nodes = [{"id": "source", "type": "bench.inc", "params": {"x": 0}}]
    nodes += [{"id": f"b{i:05d}", "type": "bench.inc"} for i in range(width)]
    nodes.append({"id": "sink", "type": sink})
    edges = [{"from": "source.out", "to": f"b{i:05d}.x"} for i in range(width)]
    edges += [{"from": f"b{i:05d}.out", "to": f"sink.x{i}"} for i in range(width)]
    return {"name": f"fan-{n}", "nodes": nodes, "edges": edges, "outputs": {"result": "sink.out"}}


def register_fan_sink(registry: NodeRegistry, n: int) -> None:
    """Register the sink ``fan_doc(n)`` needs, unless it is ``bench.gather``."""
    width = n - 2
    if width != FAN_WIDTH and f"{FAN_PACK}.gather{width}" not in registry:
        registry.register(gather_type(width), pack=FAN_PACK)


def gather_type(width: int) -> NodeType:
    """A node type summing ``width`` integer inputs ``x0``...``x{width-1}``."""

    def gather(**values: int) -> int:
        return sum(values.values())

    return NodeType(
        gather,
        name=f"gather{width}",
        inputs={f"x{i}": InputPort(f"x{i}", "int") for i in range(width)},
        outputs={"out": OutputPort("out", "int")},
        output_mode="single",
        description=f"The sum of {width} inputs.",
    )


def layered_dag_doc(n: int, width: int = 50, fan_in: int = 2, seed: int = 7) -> dict[str, Any]:
    """A layered random DAG of ``core.add`` nodes, each fed by up to two earlier-layer nodes."""
    rng = random.Random(seed)
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    previous: list[str] = []
    for i in range(n):
        node_id = f"d{i:05d}"
        layer_start = i - i % width
        nodes.append({"id": node_id, "type": "core.add"})
        if not previous:
            nodes[-1]["params"] = {"a": 1, "b": 1}
        else:
            sources = rng.sample(previous, k=min(fan_in, len(previous)))
            ports = ["a", "b"]
            for port, source in zip(ports, sources, strict=False):
                edges.append({"from": f"{source}.out", "to": f"{node_id}.{port}"})
            if len(sources) < 2:
                nodes[-1]["params"] = {"b": 1}
        if (i + 1) % width == 0 or i == n - 1:
            previous = [f"d{j:05d}" for j in range(layer_start, i + 1)]
    return {"name": f"dag-{n}", "nodes": nodes, "edges": edges}


# Each raw flow returns (value, seconds spent in its body), so the benchmark can compare
# both the whole flow call and the part of it that the translator influences. The
# tasks are built per variant: plain, or tagged with their node type like nodegraph's.


class RawFlows:
    """Hand-written Prefect flows, one ``@task`` call per node, futures passed along."""

    def __init__(self, tagged: bool, width: int = FAN_WIDTH) -> None:
        tags = {"bench.inc"} if tagged else set()
        inc = task(_inc, name="inc", tags=tags)
        gather = task(_gather, name="gather", tags={"bench.gather"} if tagged else set())
        suffix = "-tagged" if tagged else ""

        @flow(name=f"raw-chain-sequential{suffix}")
        def chain_sequential(n: int) -> tuple[int, float]:
            start = time.perf_counter()
            x = 0
            for _ in range(n):
                x = inc(x)
            return x, time.perf_counter() - start

        @flow(name=f"raw-chain-parallel{suffix}", task_runner=ThreadPoolTaskRunner())
        def chain_parallel(n: int) -> tuple[int, float]:
            start = time.perf_counter()
            future = inc.submit(0)
            for _ in range(n - 1):
                future = inc.submit(future)
            return future.result(), time.perf_counter() - start

        @flow(name=f"raw-fan-sequential{suffix}")
        def fan_sequential() -> tuple[int, float]:
            start = time.perf_counter()
            source = inc(0)
            total = gather([inc(source) for _ in range(width)])
            return total, time.perf_counter() - start

        @flow(name=f"raw-fan-parallel{suffix}", task_runner=ThreadPoolTaskRunner())
        def fan_parallel() -> tuple[int, float]:
            start = time.perf_counter()
            source = inc.submit(0)
            branches = [inc.submit(source) for _ in range(width)]
            return gather.submit(branches).result(), time.perf_counter() - start

        self.chain_sequential = chain_sequential
        self.chain_parallel = chain_parallel
        self.fan_sequential = fan_sequential
        self.fan_parallel = fan_parallel


def _inc(x: int) -> int:
    return x + 1


def _gather(values: list[int]) -> int:
    return sum(values)
