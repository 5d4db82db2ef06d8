"""A frozen Redis tier (SIGSTOP) against a healthy one, on a chain of small nodes.

    python benchmarks/frozen_tier.py [--nodes 20] [--seconds 0.05] [--timeout 0.5]

Starts its own ``redis-server`` and times cold sequential runs (each in a fresh cache
folder, tiers memory, redis, disk) of ``--nodes`` chained ``bench.nap`` nodes:

- ``healthy``: Redis answers;
- ``frozen at start``: Redis is SIGSTOPped before the run;
- ``frozen mid-run``: Redis is SIGSTOPped when half of the nodes have finished;
- the two frozen runs again with the circuit breaker disabled (a zero back-off: every
  call goes to the tier), which is how nodegraph behaved before it had one.

Each run has a fresh cache folder and Redis prefix (so it is cold) and its own
hierarchy (so it inherits no open breaker).
With the breaker, a frozen tier costs about one socket timeout (``--timeout``) per
run; without it, one per read and one per write of every node after the freeze.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import graphs  # noqa: E402

import integration  # noqa: E402
from integration.cache import factory  # noqa: E402
from integration.cache.breaker import CircuitBreaker  # noqa: E402
from integration.config import CachingConfig, NodegraphConfig, RedisSettings  # noqa: E402
from integration.graph import NodeRegistry  # noqa: E402


def start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process, port
        except OSError:
            time.sleep(0.05)
    process.kill()
    sys.exit("redis-server did not start")


def timed(
    doc: dict[str, Any],
    registry: NodeRegistry,
    caching: CachingConfig,
    breaker: bool,
    freeze_after: int | None,
    redis: subprocess.Popen[bytes],
) -> tuple[float, int]:
    """Seconds for one cold run, and the redis calls that failed (timed out)."""
    # A fresh folder and Redis prefix: every run is cold, in a hierarchy of its own.
    redis_settings = caching.redis.model_copy(update={"prefix": f"bench-{uuid.uuid4().hex}:"})
    caching = caching.model_copy(
        update={"directory": Path(tempfile.mkdtemp()), "redis": redis_settings}
    )
    cache = factory.hierarchy_for(caching)
    if not breaker:
        cache.breakers = {name: CircuitBreaker(1e-9, 1e-9) for name in cache.breakers}
    if freeze_after == 0:
        redis.send_signal(signal.SIGSTOP)

    def freeze(report: Any, finished: int, total: int) -> None:
        if finished == freeze_after:
            redis.send_signal(signal.SIGSTOP)

    start = time.perf_counter()
    try:
        result = integration.run(
            doc,
            registry=registry,
            strategy="sequential",
            config=NodegraphConfig(caching=caching),
            on_node_finished=freeze,
        )
    finally:
        redis.send_signal(signal.SIGCONT)
    elapsed = time.perf_counter() - start
    assert result.ok, result
    return elapsed, cache.failures["redis"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=0.05)
    parser.add_argument("--timeout", type=float, default=0.5, help="caching.redis.timeout_seconds")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--locking", default="auto", choices=["auto", "none", "redis"])
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="nodegraph-frozen-tier-"))
    redis, port = start_redis(folder)
    try:
        registry = NodeRegistry.default(extra_paths=[HERE / "nodes"])
        doc = graphs.chain_doc(args.nodes, node_type="bench.nap")
        for spec in doc["nodes"]:
            spec.setdefault("params", {})["seconds"] = args.seconds
        caching = CachingConfig(
            cache_levels=["memory", "redis", "disk"],
            redis=RedisSettings(url=f"redis://127.0.0.1:{port}/0", timeout_seconds=args.timeout),
            locking=args.locking,
        )
        timed(doc, registry, caching, True, None, redis)  # Prefect's first-run costs
        healthy = [timed(doc, registry, caching, True, None, redis) for _ in range(args.repeat)]
        healthy_s = statistics.median(s for s, _ in healthy)
        print(f"{args.nodes} nodes of {args.seconds}s, redis timeout {args.timeout}s, "
              f"locking {args.locking}, median of {args.repeat}")  # fmt: skip
        print(f"  healthy                      {healthy_s:6.2f} s")
        for breaker in (True, False):
            for label, freeze in (("at start", 0), ("mid-run", args.nodes // 2)):
                runs = [
                    timed(doc, registry, caching, breaker, freeze, redis)
                    for _ in range(args.repeat)
                ]
                seconds = statistics.median(s for s, _ in runs)
                failed = statistics.median(f for _, f in runs)
                name = f"frozen {label}{'' if breaker else ', no breaker'}"
                print(f"  {name:<28} {seconds:6.2f} s  ({failed:.0f} redis calls timed out)")
    finally:
        redis.send_signal(signal.SIGCONT)
        redis.terminate()
        redis.wait(10)


if __name__ == "__main__":
    main()
