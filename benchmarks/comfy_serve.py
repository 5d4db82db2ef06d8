"""Latency of ``nodegraph comfy serve``: from ``POST /prompt`` to ``execution_success``.

    python benchmarks/comfy_serve.py [--repeat 5] [--strategy sequential]

For a one-node prompt and a 50-node prompt (a chain of ``StubImage`` and
``TestAsyncScale`` nodes of the test packs, ending in ``TestRecord``), it starts the
server (uvicorn, on a free loopback port, in this process), connects a websocket
client as a ComfyUI client does, posts the prompt (the cache off, so that every run
computes), and times until ``execution_success`` arrives. The baseline is the same
prompt through ``integration.run`` in the same process. Both talk to the same Prefect
API (Prefect's temporary local server without ``PREFECT_API_URL``). It prints medians
and the ratio server / ``integration.run``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import httpx  # noqa: E402
import uvicorn  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

import integration  # noqa: E402
from integration.config import CachingConfig, NodegraphConfig  # noqa: E402
from integration.graph import NodeRegistry  # noqa: E402
from integration.server import ServerSettings, create_app  # noqa: E402


def prompt_of(nodes: int) -> dict[str, Any]:
    """A chain: a StubImage, then ``nodes - 2`` TestAsyncScale, then TestRecord."""
    source = {"content": "WHITE", "height": 8, "width": 8, "batch_size": 1}
    prompt: dict[str, Any] = {"1": {"class_type": "StubImage", "inputs": source}}
    for index in range(2, nodes):
        prompt[str(index)] = {
            "class_type": "TestAsyncScale",
            "inputs": {"image": [str(index - 1), 0], "factor": 1.0},
        }
    prompt[str(nodes)] = {"class_type": "TestRecord", "inputs": {"value": [str(nodes - 1), 0]}}
    return prompt


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--strategy", default="sequential")
    args = parser.parse_args()
    logging.getLogger("prefect").setLevel(logging.WARNING)

    packs = [ROOT / "nodes" / "comfy_testing", ROOT / "nodes" / "comfy_testing_v3"]
    registry = NodeRegistry.default(extra_paths=packs)
    config = NodegraphConfig(caching=CachingConfig(enable=False))
    state = Path(tempfile.mkdtemp(prefix="nodegraph-serve-bench-"))
    settings = ServerSettings(state=state, strategy=args.strategy, registry=registry, config=config)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"

    def through_server(prompt: dict[str, Any]) -> float:
        client_id = uuid.uuid4().hex
        with connect(f"ws://127.0.0.1:{port}/ws?clientId={client_id}") as ws:
            ws.recv()  # status
            started = time.perf_counter()
            answer = httpx.post(f"{base}/prompt", json={"prompt": prompt, "client_id": client_id})
            if answer.status_code != 200:
                raise SystemExit(f"POST /prompt: {answer.status_code} {answer.text}")
            while True:
                message = json.loads(ws.recv())
                if message["type"] == "execution_success":
                    return time.perf_counter() - started
                if message["type"] in ("execution_error", "execution_interrupted"):
                    raise SystemExit(f"the prompt failed: {message['data']}")

    def through_run(prompt: dict[str, Any]) -> float:
        started = time.perf_counter()
        result = integration.run(
            prompt, registry=registry, config=config, strategy=args.strategy, cache=False
        )
        if not result.ok:
            raise SystemExit(f"integration.run failed: {result.errors}")
        return time.perf_counter() - started

    print(f"{'prompt':10} {'server s':>9} {'run s':>9} {'ratio':>6}  ({args.strategy})")
    try:
        for nodes in (1, 50):
            prompt = prompt_of(max(nodes, 2)) if nodes > 1 else {
                "1": {"class_type": "TestRecord", "inputs": {"value": 1.0}}
            }  # fmt: skip
            through_server(prompt), through_run(prompt)  # warm-up
            served, ran = [], []
            for _ in range(args.repeat):
                served.append(through_server(prompt))
                ran.append(through_run(prompt))
            s, r = statistics.median(served), statistics.median(ran)
            print(f"{nodes:>4} nodes {s:9.3f} {r:9.3f} {s / r:6.2f}", flush=True)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


if __name__ == "__main__":
    main()
