"""A new user's first ``nodegraph run`` of a large graph of core nodes, end to end.

    python benchmarks/first_run.py [--chain 10000] [--fan 50000] [--repeat 1]

Writes two graph files of ``core.add`` nodes, as a user would: a chain (each node adds
1 to the one before) and a fan (one source feeding ``--fan - 1`` branches, each adding
its own number; every branch is an output). Each is run with the ``nodegraph`` command,
default configuration, in a fresh cache folder, so that nothing is cached and the
durations history is empty: the first run. It prints the command's wall time (Python
start-up and the Prefect flow run included) and, from the run's JSON, the flow body.

A second run of the same file follows, which loads everything from the cache.

Without PREFECT_API_URL, the benchmark starts ``prefect server start`` on a free
loopback port first (not timed) and stops it at the end: each ``nodegraph run`` would
otherwise start a temporary server of its own.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def prefect_api() -> Iterator[None]:
    """PREFECT_API_URL as set, or a ``prefect server start`` of this benchmark's own."""
    if os.environ.get("PREFECT_API_URL"):
        yield
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    home = tempfile.mkdtemp(prefix="nodegraph-bench-prefect-")
    env = {**os.environ, "PREFECT_HOME": home, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("prefect server start did not come up") from None
                time.sleep(0.5)
        os.environ.update(PREFECT_API_URL=url, PREFECT_HOME=home)
        yield
    finally:
        server.terminate()
        server.wait(30)


def chain_file(folder: Path, n: int) -> Path:
    nodes: list[dict[str, Any]] = [{"id": "n0", "type": "core.add", "params": {"a": 0, "b": 1}}]
    nodes += [{"id": f"n{i}", "type": "core.add", "params": {"b": 1}} for i in range(1, n)]
    edges = [{"from": f"n{i - 1}.out", "to": f"n{i}.a"} for i in range(1, n)]
    doc = {
        "name": f"chain-{n}",
        "nodes": nodes,
        "edges": edges,
        "outputs": {"last": f"n{n - 1}.out"},
    }
    path = folder / f"chain-{n}.json"
    path.write_text(json.dumps(doc))
    return path


def fan_file(folder: Path, n: int) -> Path:
    nodes: list[dict[str, Any]] = [{"id": "src", "type": "core.add", "params": {"a": 0, "b": 1}}]
    nodes += [{"id": f"b{i}", "type": "core.add", "params": {"b": i}} for i in range(n - 1)]
    edges = [{"from": "src.out", "to": f"b{i}.a"} for i in range(n - 1)]
    path = folder / f"fan-{n}.json"
    path.write_text(json.dumps({"name": f"fan-{n}", "nodes": nodes, "edges": edges}))
    return path


def nodegraph_run(path: Path, cache: Path) -> tuple[float, dict[str, Any]]:
    command = [str(Path(sys.executable).parent / "nodegraph"), "run", str(path), "--json"]
    env = {**os.environ, "NODEGRAPH_CACHE_DIR": str(cache)}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return elapsed, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chain", type=int, default=10_000, help="nodes in the chain")
    parser.add_argument("--fan", type=int, default=50_000, help="nodes in the fan")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    with prefect_api():
        measure(args)


def measure(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="nodegraph-first-run-"))
    print(f"{'graph':12} {'first run s':>12} {'µs/node':>8} {'second run s':>13} {'nodes':>7}")
    for path, n in (
        (chain_file(folder, args.chain), args.chain),
        (fan_file(folder, args.fan), args.fan),
    ):
        firsts, seconds = [], []
        for attempt in range(args.repeat):
            cache = folder / f"cache-{path.stem}-{attempt}"
            first, report = nodegraph_run(path, cache)
            assert report["state"] == "completed", report["state"]
            second, again = nodegraph_run(path, cache)
            cached = sum(node["state"] == "cached" for node in again["nodes"])
            assert cached == n, f"second run: {cached} of {n} nodes from the cache"
            firsts.append(first)
            seconds.append(second)
        first, second = statistics.median(firsts), statistics.median(seconds)
        print(f"{path.stem:12} {first:12.2f} {first / n * 1e6:8.0f} {second:13.2f} {n:7}")


if __name__ == "__main__":
    main()
