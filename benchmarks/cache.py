"""The result cache on a 1,000-node chain: cold, warm, and after one change.

    python benchmarks/cache.py [--nodes 1000] [--changed 900] [--lock-repeat 4] [--locks-only]

Runs, sequential, each in a fresh cache folder:

- ``cold``: nothing cached; every node executes and is stored;
- ``warm``: the same graph again; nothing should execute;
- ``changed``: node 900's param changed; exactly nodes 900..999 should execute;
- ``prefect warm``: the same warm re-run as raw Prefect, one task per node with
  ``cache_policy=INPUTS`` and persisted results (after its own cold run);
- lock overhead: cold runs with node-key locks (the default, file locks in the cache
  folder) and with ``locking: none``, alternated, each in a fresh cache folder, a task
  per node (``fusion: off``) and fused (``fusion: aggressive``, one shared task whose
  nodes each take their lock); the medians' ratio is the cost of locking, and their
  difference over the nodes its cost per node. ``--locks-only`` runs this part alone.

An empty Prefect flow is timed in the same process; it is the fixed cost every flow
call pays (mostly Prefect's start-up and heartbeat shutdown). Targets: the warm run
executes 0 nodes and ``(warm - empty) / cold <= 5%``; the changed run executes 100.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ["NODEGRAPH_CACHE_DIR"] = tempfile.mkdtemp(prefix="nodegraph-bench-cache-")

import graphs  # noqa: E402
from overhead import settle  # noqa: E402
from prefect import flow, task  # noqa: E402
from prefect.cache_policies import INPUTS  # noqa: E402

import integration  # noqa: E402
from integration.config import NodegraphConfig, load_config  # noqa: E402
from integration.graph import NodeRegistry  # noqa: E402


def chain(n: int, changed: int | None = None) -> dict[str, Any]:
    """``graphs.chain_doc`` of ``bench.add`` nodes, each with ``b=1`` (2 at ``changed``)."""
    doc = graphs.chain_doc(n, node_type="bench.add")
    for i, spec in enumerate(doc["nodes"]):
        spec.setdefault("params", {})["b"] = 2 if i == changed else 1
    return doc


def timed_run(
    doc: dict[str, Any], registry: NodeRegistry, config: NodegraphConfig | None = None
) -> tuple[float, int, Any]:
    start = time.perf_counter()
    result = integration.run(doc, registry=registry, strategy="sequential", config=config)
    elapsed = time.perf_counter() - start
    if not result.ok:
        raise SystemExit(f"run failed: {result.errors[:3]}")
    executed = sum(1 for r in result.nodes.values() if r.state == "completed")
    # Let the server store this run's task runs before the next run is timed, so one
    # run's event backlog does not land in the next run's time (see overhead.py).
    # Fused nodes share one task run per segment.
    shared = result.extra.get("shared_tasks", [])
    settle(result.flow_run_id, executed - sum(len(s["nodes"]) - 1 for s in shared))
    return elapsed, executed, result.outputs["result"]


@flow(name="empty")
def empty() -> None:
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--changed", type=int, default=900)
    parser.add_argument("--lock-repeat", type=int, default=4, help="cold runs per variant")
    parser.add_argument("--locks-only", action="store_true", help="only the lock overhead")
    args = parser.parse_args()
    registry = NodeRegistry.default(extra_paths=[HERE / "nodes"])
    if not args.locks_only:
        cache_runs(args, registry)
    print_lock_overhead(args.nodes, registry, args.lock_repeat)


def cache_runs(args: argparse.Namespace, registry: NodeRegistry) -> None:
    """Cold, warm and changed runs, and raw Prefect's cold and warm runs."""
    empty()  # warm-up
    empty_s = statistics.median(_time(empty) for _ in range(3))

    cold_s, cold_n, value = timed_run(chain(args.nodes), registry)
    warm_s, warm_n, warm_value = timed_run(chain(args.nodes), registry)
    assert warm_value == value
    changed_s, changed_n, _ = timed_run(chain(args.nodes, args.changed), registry)

    storage = Path(tempfile.mkdtemp(prefix="prefect-bench-results-"))
    add = task(_add, name="add", cache_policy=INPUTS, persist_result=True, result_storage=storage)

    @flow(name=f"raw-cache-chain-{args.nodes}")
    def raw_chain(n: int) -> int:
        x = 0
        for _ in range(n):
            x = add(x, 1)
        return x

    def raw_run() -> float:
        start = time.perf_counter()
        state = raw_chain(args.nodes, return_state=True)
        elapsed = time.perf_counter() - start
        settle(str(state.state_details.flow_run_id), args.nodes)
        return elapsed

    raw_cold_s = raw_run()
    raw_warm_s = raw_run()

    print(f"empty Prefect flow: {empty_s:.3f} s")
    print(f"{'run':14} {'seconds':>8} {'executed':>9}")
    for name, seconds, executed in [
        ("cold", cold_s, cold_n),
        ("warm", warm_s, warm_n),
        ("changed", changed_s, changed_n),
    ]:
        print(f"{name:14} {seconds:8.3f} {executed:9d}")
    print(f"{'prefect cold':14} {raw_cold_s:8.3f} {args.nodes:9d}")
    print(f"{'prefect warm':14} {raw_warm_s:8.3f} {'-':>9}")
    print(f"warm / cold: {warm_s / cold_s:.3f}")
    print(f"(warm - empty) / cold: {(warm_s - empty_s) / cold_s:.3f} (target <= 0.05)")
    print(f"warm / prefect warm: {warm_s / raw_warm_s:.3f}")
    print(f"changed run executed {changed_n} nodes (target {args.nodes - args.changed})")


def print_lock_overhead(nodes: int, registry: NodeRegistry, repeat: int) -> None:
    print(f"{'cold run, seconds':20} {'locks':>8} {'no locks':>9} {'ratio':>6} {'us/node':>8}")
    for fusion in ("off", "aggressive"):
        locked, unlocked = lock_overhead(chain(nodes), registry, fusion, repeat)
        per_node_us = (locked - unlocked) / nodes * 1e6
        name = f"fusion {fusion}"
        print(
            f"{name:20} {locked:8.3f} {unlocked:9.3f} {locked / unlocked:6.3f} {per_node_us:8.0f}"
        )


def lock_overhead(
    doc: dict[str, Any], registry: NodeRegistry, fusion: str, repeat: int
) -> tuple[float, float]:
    """Median cold-run seconds with the default node locks and with ``locking: none``,
    each in a fresh cache folder, alternated (and which goes first, too) so both meet
    the same server conditions."""
    base = load_config()
    seconds: dict[str, list[float]] = {"auto": [], "none": []}
    for index in range(repeat):
        for locking in ("auto", "none") if index % 2 == 0 else ("none", "auto"):
            caching = base.caching.model_copy(
                update={"directory": Path(tempfile.mkdtemp(prefix="nodegraph-bench-lock-")),
                        "locking": locking}
            )  # fmt: skip
            execution = base.execution.model_copy(
                update={"fusion": base.execution.fusion.model_copy(update={"mode": fusion})}
            )
            config = base.model_copy(update={"caching": caching, "execution": execution})
            elapsed, executed, _ = timed_run(doc, registry, config)
            assert executed == len(doc["nodes"]), f"cold run executed {executed}"
            seconds[locking].append(elapsed)
    return statistics.median(seconds["auto"]), statistics.median(seconds["none"])


def _add(x: int, b: int) -> int:
    return x + b


def _time(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
