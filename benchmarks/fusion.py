"""Fused nodegraph against one task per node, raw Prefect, Hamilton and a plain loop.

    python benchmarks/fusion.py [--nodes 1000] [--repeat 3] [--no-distributed] [--no-per-task]
    python benchmarks/fusion.py --nodes 10000 --repeat 1 --no-distributed --no-per-task

Two shapes of trivial nodes (``x + 1``): a chain of ``--nodes`` nodes, and a fan-out/
fan-in of the same size (one source, ``nodes - 2`` branches, one sink summing them).
Every way runs the same arithmetic, side by side in this one process:

- ``loop``: a plain Python loop calling the same function;
- ``hamilton``: Hamilton's default driver (``sf-hamilton``, installed here if missing,
  never a nodegraph dependency), built from a generated module and executed, so that it
  too goes from a graph definition to a result; ``hamilton exec`` is the execute call
  alone. ``hamilton+cache`` builds with ``with_cache()`` in a fresh folder (cold), then
  a new driver on the same folder (warm, as after a restart);
- ``raw prefect``: one ``@task`` call per node in a ``@flow`` (direct calls);
- ``per-task``: ``integration.run`` with fusion off (one Prefect task per node);
- ``fused``: ``integration.run`` with ``execution.fusion: aggressive`` (sequential);
- ``fused+cache``: fused with the memory and disk tiers, in a fresh cache folder (cold)
  and again (warm: every node is cached, so none runs);
- ``distributed``: the fused chain on a local Dask cluster started beforehand (its
  start is not timed), through nodegraph's Dask runner.

``empty flow`` is a Prefect flow that does nothing, called with nodegraph's fast paths
(and once with Prefect's defaults, heartbeat thread included): the least that any run
through a Prefect flow run costs, whatever it runs.

Each way reports its median wall time and its per-node overhead: (time - loop time) /
nodes, in µs. Ratios compare the fused overhead with Hamilton's (paired: uncached with
the default driver, cached with ``with_cache()``), with raw Prefect, and with one task
per node. nodegraph's times include loading, binding and planning the graph document
and the Prefect flow run (three API round trips); ``fused body`` is the flow body alone
(``RunResult.duration_s``).

``--no-per-task`` leaves out the two ways that cost a Prefect task per node (``per-task``
and ``raw prefect``): at 10,000 nodes each takes minutes.

Without PREFECT_API_URL, Prefect's temporary local server starts first (not timed).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import graphs  # noqa: E402
from prefect import flow, task  # noqa: E402

import integration  # noqa: E402
from integration.config import (  # noqa: E402
    CachingConfig,
    ExecutionConfig,
    FusionConfig,
    MonitoringConfig,
    NodegraphConfig,
)
from integration.graph import NodeRegistry  # noqa: E402


def inc(x: int) -> int:
    return x + 1


# -- the graphs -------------------------------------------------------------------------


def loop_chain(n: int) -> int:
    x = 0
    for _ in range(n):
        x = inc(x)
    return x


def loop_fan(n: int) -> int:
    source = inc(0)
    return sum(inc(source) for _ in range(n - 2))


# -- Hamilton ---------------------------------------------------------------------------


def ensure_hamilton() -> None:
    try:
        importlib.import_module("hamilton.driver")
    except ImportError:
        print("installing sf-hamilton for this benchmark ...", file=sys.stderr)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "sf-hamilton"], check=True
        )


def hamilton_modules(n: int, folder: Path) -> dict[str, tuple[Any, str]]:
    """Generated Hamilton modules: a function per node, named after it."""
    chain = ["def n00000(x0: int) -> int:\n    return x0 + 1\n"]
    chain += [
        f"def n{i:05d}(n{i - 1:05d}: int) -> int:\n    return n{i - 1:05d} + 1\n"
        for i in range(1, n)
    ]
    width = n - 2
    fan = ["def source(x0: int) -> int:\n    return x0 + 1\n"]
    fan += [f"def b{i:05d}(source: int) -> int:\n    return source + 1\n" for i in range(width)]
    args = ", ".join(f"b{i:05d}: int" for i in range(width))
    fan.append(
        f"def sink({args}) -> int:\n    return "
        + " + ".join(f"b{i:05d}" for i in range(width))
        + "\n"
    )
    sys.path.insert(0, str(folder))
    modules = {}
    for shape, source, final in (("chain", chain, f"n{n - 1:05d}"), ("fan", fan, "sink")):
        name = f"hamilton_{shape}_{n}"
        (folder / f"{name}.py").write_text("\n".join(source))
        modules[shape] = (importlib.import_module(name), final)
    return modules


def hamilton_run(module: Any, final: str, cache: Path | None) -> tuple[int, float]:
    """Build a driver and execute; returns (value, seconds of the execute call)."""
    from hamilton import driver

    builder = driver.Builder().with_modules(module)
    if cache is not None:
        builder = builder.with_cache(path=str(cache))
    built = builder.build()
    start = time.perf_counter()
    value = built.execute([final], inputs={"x0": 0})[final]
    return int(value), time.perf_counter() - start


# -- raw Prefect ------------------------------------------------------------------------

raw_inc = task(inc, name="inc")


@task(name="gather")
def raw_gather(values: list[int]) -> int:
    return sum(values)


@flow(name="raw-fusion-chain")
def raw_chain(n: int) -> int:
    x = 0
    for _ in range(n):
        x = raw_inc(x)
    return x


@flow(name="raw-fusion-fan")
def raw_fan(n: int) -> int:
    source = raw_inc(0)
    return raw_gather([raw_inc(source) for _ in range(n - 2)])


@flow(name="empty-flow")
def empty_flow() -> int:
    return 0


def empty_flow_fast() -> int:
    """An empty flow with nodegraph's fast paths (no heartbeat thread to join at exit,
    the process's reused client): the least any graph run through Prefect costs."""
    from integration.prefect.client import reused_client
    from integration.prefect.heartbeat import prefect_heartbeats_off

    with prefect_heartbeats_off(), reused_client():
        return empty_flow()


# -- measuring --------------------------------------------------------------------------


def timed(run: Callable[[], Any], repeat: int) -> tuple[Any, float, list[float]]:
    samples, value = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        value = run()
        samples.append(time.perf_counter() - start)
    return value, statistics.median(samples), samples


def settings(mode: str, cache_dir: Path | None = None, **execution: Any) -> NodegraphConfig:
    caching = CachingConfig(
        enable=cache_dir is not None, cache_levels=["memory", "disk"], directory=cache_dir
    )
    return NodegraphConfig(
        execution=ExecutionConfig(
            fusion=FusionConfig(mode=mode), tag_node_types=False, **execution
        ),
        caching=caching,
        monitoring=MonitoringConfig(
            events=False, node_events=False, artifacts=False, progress=False
        ),
    )


def nodegraph_run(
    doc: dict[str, Any], registry: NodeRegistry, config: NodegraphConfig, **kwargs: Any
) -> Callable[[], Any]:
    def run() -> Any:
        result = integration.run(doc, registry=registry, config=config, **kwargs)
        if not result.ok:
            raise SystemExit(f"nodegraph run failed: {result.errors}")
        run.last = result  # type: ignore[attr-defined]
        return result.outputs["result"]

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--per-task-repeat", type=int, default=1, help="repeats of the slow ways")
    parser.add_argument("--no-distributed", action="store_true")
    parser.add_argument(
        "--no-per-task", action="store_true", help="leave out per-task and raw prefect"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()
    logging.getLogger("prefect").setLevel(logging.WARNING)
    logging.getLogger("hamilton").setLevel(logging.WARNING)
    logging.getLogger("distributed").setLevel(logging.WARNING)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20 * args.nodes))  # Hamilton's chain
    ensure_hamilton()
    n = args.nodes
    work = Path(tempfile.mkdtemp(prefix="nodegraph-fusion-bench-"))
    os.environ["NODEGRAPH_CACHE_DIR"] = str(work / "default-cache")  # duration history etc.
    registry = NodeRegistry.default(extra_paths=[HERE / "nodes"])
    graphs.register_fan_sink(registry, n)
    modules = hamilton_modules(n, work)
    shapes = {
        "chain": (graphs.chain_doc(n), lambda: loop_chain(n), raw_chain, modules["chain"]),
        "fan": (graphs.fan_doc(n), lambda: loop_fan(n), raw_fan, modules["fan"]),
    }
    results = {
        shape: measure(shape, *spec, registry=registry, work=work, args=args)
        for shape, spec in shapes.items()
    }
    report(results, n)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def measure(
    shape: str,
    doc: dict[str, Any],
    loop: Callable[[], int],
    raw: Any,
    hamilton: tuple[Any, str],
    *,
    registry: NodeRegistry,
    work: Path,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Every way on one shape; checks that each computed the loop's value."""
    n, repeat = args.nodes, args.repeat
    module, final = hamilton
    row: dict[str, Any] = {}
    checks: dict[str, Any] = {}
    expected, row["loop"], _ = timed(loop, max(repeat, 5))

    def record(name: str, run: Callable[[], Any], times: int) -> None:
        checks[name], row[name], _ = timed(run, times)

    fused = nodegraph_run(doc, registry, settings("aggressive"), strategy="sequential")
    fused()  # warm-up: imports, flow registration
    record("fused", fused, repeat)
    row["fused body"] = fused.last.duration_s  # type: ignore[attr-defined]
    row["fused tasks"] = len(fused.last.extra.get("shared_tasks", []))  # type: ignore[attr-defined]
    colds, warms = [], []
    for i in range(repeat):
        folder = work / f"cache-{shape}-{i}"
        cached = nodegraph_run(doc, registry, settings("aggressive", folder), strategy="sequential")
        record("fused+cache cold", cached, 1)
        colds.append(row["fused+cache cold"])
        record("fused+cache warm", cached, 1)
        warms.append(row["fused+cache warm"])
        row["warm executed"] = cached.last.counts().get("completed", 0)  # type: ignore[attr-defined]
    row["fused+cache cold"] = statistics.median(colds)
    row["fused+cache warm"] = statistics.median(warms)
    empty_flow_fast()  # warm-up
    row["empty flow"] = timed(empty_flow_fast, repeat)[1]
    row["empty flow (prefect defaults)"] = timed(empty_flow, 1)[1]
    if not args.no_per_task:
        per_task = nodegraph_run(doc, registry, settings("off"), strategy="sequential")
        record("per-task", per_task, args.per_task_repeat)
        record("raw prefect", lambda: raw(n), args.per_task_repeat)
    executes: list[float] = []

    def hamilton_plain() -> int:
        value, execute_s = hamilton_run(module, final, None)
        executes.append(execute_s)
        return value

    record("hamilton", hamilton_plain, repeat)
    row["hamilton exec"] = statistics.median(executes)
    colds, warms = [], []
    for i in range(repeat):
        folder = work / f"hamilton-{shape}-{i}"
        record(
            "hamilton+cache cold", lambda folder=folder: hamilton_run(module, final, folder)[0], 1
        )
        colds.append(row["hamilton+cache cold"])
        record(
            "hamilton+cache warm", lambda folder=folder: hamilton_run(module, final, folder)[0], 1
        )
        warms.append(row["hamilton+cache warm"])
    row["hamilton+cache cold"] = statistics.median(colds)
    row["hamilton+cache warm"] = statistics.median(warms)
    if shape == "chain" and not args.no_distributed:
        checks["distributed"], row["distributed"] = distributed(doc, registry, repeat)
    wrong = {name: value for name, value in checks.items() if value != expected}
    if wrong:
        raise SystemExit(f"{shape}: wrong results {wrong} (expected {expected})")
    return row


def distributed(doc: dict[str, Any], registry: NodeRegistry, repeat: int) -> tuple[Any, float]:
    """The fused chain on a local Dask cluster (its start is not timed)."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        config = settings("aggressive", dask_address=cluster.scheduler_address)
        run = nodegraph_run(doc, registry, config, strategy="distributed")
        run()  # warm-up: the workers import the packs
        value, seconds, _ = timed(run, repeat)
        return value, seconds


def report(results: dict[str, dict[str, Any]], n: int) -> None:
    ways = [
        "loop",
        "empty flow",
        "empty flow (prefect defaults)",
        "hamilton exec",
        "hamilton",
        "fused body",
        "fused",
        "hamilton+cache cold",
        "fused+cache cold",
        "hamilton+cache warm",
        "fused+cache warm",
        "distributed",
        "per-task",
        "raw prefect",
    ]
    print(f"{n} trivial nodes per graph; per-node overhead = (time - loop) / {n}")
    print(f"{'way':30} {'chain s':>9} {'chain µs/node':>14} {'fan s':>9} {'fan µs/node':>12}")
    overhead: dict[str, dict[str, float]] = {}
    for way in ways:
        cells = []
        for shape in ("chain", "fan"):
            row = results[shape]
            if way not in row:
                cells += ["-", "-"]
                continue
            per_node = (row[way] - row["loop"]) / n * 1e6
            overhead.setdefault(shape, {})[way] = per_node
            cells += [f"{row[way]:.4f}", f"{per_node:.1f}"]
        print(f"{way:30} {cells[0]:>9} {cells[1]:>14} {cells[2]:>9} {cells[3]:>12}")
    print()
    for shape in ("chain", "fan"):
        o, row = overhead[shape], results[shape]
        cold_ratio = o["fused+cache cold"] / o["hamilton+cache cold"]
        warm_ratio = o["fused+cache warm"] / o["hamilton+cache warm"]
        lines = [
            ("fused / hamilton (no cache)", o["fused"] / o["hamilton"], "<= 1"),
            ("fused / hamilton exec only", o["fused"] / o["hamilton exec"], ""),
            ("fused+cache / hamilton+cache, cold", cold_ratio, "<= 1"),
            ("fused+cache / hamilton+cache, warm", warm_ratio, "<= 1"),
            ("nodes executed on the warm re-run", row["warm executed"], "0"),
            ("empty flow / fused (Prefect's floor)", o["empty flow"] / o["fused"], ""),
        ]
        if "per-task" in row:
            lines.append(("per-task / fused", o["per-task"] / o["fused"], ">= 100"))
            lines.append(("raw prefect / fused", o["raw prefect"] / o["fused"], ""))
        if "distributed" in row:
            lines.append(
                ("distributed / in-process fused", row["distributed"] / row["fused"], "<= 20")
            )
        print(f"{shape}:")
        for label, value, target in lines:
            print(f"  {label:38} {value:8.2f}" + (f"  (target {target})" if target else ""))


if __name__ == "__main__":
    main()
