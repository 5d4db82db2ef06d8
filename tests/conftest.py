"""Shared fixtures: an isolated Prefect home, one real Prefect server per session.

Services follow one rule: when the binary is missing, the fixture skips locally and
fails under ``CI=true``, so a skip can never hide a missing install step.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# Before anything imports Prefect: a private Prefect home, and no telemetry.
_PREFECT_HOME = tempfile.mkdtemp(prefix="nodegraph-prefect-home-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
# Quiet the console only: task-run logs must still reach the API, where tests read them.
os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
for _name in list(os.environ):
    if _name.startswith("NODEGRAPH_"):
        del os.environ[_name]  # the developer's own settings must not leak into tests
# The cache signing key of the session, for this process and every child (CLI runs,
# process pools, Dask workers): tests never create or read ~/.config/nodegraph/cache.key.
os.environ["NODEGRAPH_CACHE_KEY_FILE"] = str(
    Path(tempfile.mkdtemp(prefix="nodegraph-key-")) / "cache.key"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The API URL is fixed before Prefect is imported, so every Prefect client in this
# process (and every subprocess) talks to the session's server.
_API_PORT = free_port()
os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{_API_PORT}/api"


def require_binary(name: str) -> str:
    """The path of a service binary; skip without it, or fail under CI=true."""
    path = shutil.which(name) or (
        str(Path(sys.executable).parent / name)
        if (Path(sys.executable).parent / name).exists()
        else None
    )
    if path is None:
        message = f"{name} is not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI must install it (see .ci/run)")
        pytest.skip(message)
    return path


def stop_process(process: subprocess.Popen[bytes], grace_s: float = 10) -> None:
    """Terminate a service process, killing it if it does not exit in time."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prefect server exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"prefect server not healthy after {limit_s}s:\n{log.read_text()[-3000:]}")


def _drain_prefect_clients() -> None:
    """Send buffered logs, events and runs' final counts while the server still listens.

    Otherwise the workers retry against a stopped server at interpreter exit.
    """
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    from integration.prefect.monitor import finish_publishing

    finish_publishing()

    APILogWorker.drain_all(timeout=20)
    EventsWorker.drain_all(timeout=20)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``prefect server start`` on a free loopback port, for the whole session."""
    prefect = require_binary("prefect")
    home = tmp_path_factory.mktemp("prefect-server-home")
    log = home / "server.log"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": "",
        # Interval schedules get their runs within a second instead of a minute.
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "1",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(_API_PORT)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = os.environ["PREFECT_API_URL"]
    try:
        _wait_healthy(url, process, log, limit_s=120)
        yield url
    finally:
        _drain_prefect_clients()
        stop_process(process, grace_s=20)


class RedisServer:
    """A real ``redis-server`` on a free loopback port, which a test may stop."""

    def __init__(self, binary: str, folder: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        stop_process(self.process)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session."""
    server = RedisServer(require_binary("redis-server"), tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def own_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, for tests that stop it."""
    server = RedisServer(require_binary("redis-server"), tmp_path)
    yield server
    server.stop()


class MotoServer:
    """A real S3 API (``moto_server``) on a free loopback port, which a test may stop."""

    def __init__(self, binary: str) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [binary, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto_server did not answer on port {self.port}")

    def tier(self, bucket: str, prefix: str = "nodegraph/", timeout_s: float = 2.0):
        """An ``S3Tier`` on this server, creating the bucket if needed."""
        from integration.cache.tiers import S3Tier

        tier = S3Tier(
            bucket,
            prefix,
            endpoint_url=self.endpoint,
            key="testing",
            secret="testing",
            region="eu-west-1",
            timeout_s=timeout_s,
        )
        if not tier.fs.exists(bucket):
            tier.fs.mkdir(bucket)
        return tier

    def stop(self) -> None:
        stop_process(self.process)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """One real S3 API for the session."""
    server = MotoServer(require_binary("moto_server"))
    yield server
    server.stop()


@pytest.fixture
def own_moto_server() -> Iterator[MotoServer]:
    """An S3 API of this test's own, for tests that stop it."""
    server = MotoServer(require_binary("moto_server"))
    yield server
    server.stop()


class DaskCluster:
    """A real ``dask scheduler`` and ``dask worker`` processes on loopback.

    Workers are named; ``gpu_workers`` of them advertise ``GPU=1`` (no real GPU needed:
    placement only reads the advertised resource).
    """

    def __init__(self, folder: Path, workers: int = 2, gpu_workers: int = 1) -> None:
        dask = require_binary("dask")
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.log = (folder / "dask.log").open("wb")
        self.scheduler = subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", str(self.port),
             "--no-dashboard", "--no-show"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        for index in range(workers):
            gpu = index >= workers - gpu_workers
            self.start_worker(f"gpu-{index}" if gpu else f"cpu-{index}", gpu)
        self.wait_for_workers(workers)

    def start_worker(self, name: str, gpu: bool = False) -> None:
        command = [
            require_binary("dask"), "worker", self.address, "--name", name,
            "--nthreads", "2", "--nworkers", "1", "--no-dashboard", "--no-nanny",
            "--host", "127.0.0.1", "--local-directory", str(self.folder / name),
            "--resources", "GPU=1,CPU=2" if gpu else "CPU=2",
        ]  # fmt: skip
        self.workers[name] = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, env=os.environ.copy()
        )

    def wait_for_workers(self, count: int, limit_s: float = 60) -> None:
        import distributed

        with distributed.Client(self.address, timeout=limit_s, set_as_default=False) as client:
            client.wait_for_workers(count, timeout=limit_s)

    def kill_worker(self, name: str) -> None:
        self.workers[name].kill()
        self.workers[name].wait(10)

    def stop(self) -> None:
        for process in self.workers.values():
            stop_process(process)
        stop_process(self.scheduler)
        self.log.close()


@pytest.fixture(scope="session")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory, prefect_server) -> Iterator[DaskCluster]:
    """One scheduler and two workers (``cpu-0`` and ``gpu-1`` with GPU=1) for the session."""
    cluster = DaskCluster(tmp_path_factory.mktemp("dask"))
    yield cluster
    cluster.stop()


@pytest.fixture
def own_dask_cluster(tmp_path: Path, prefect_server) -> Iterator[DaskCluster]:
    """A cluster of this test's own, for tests that kill workers."""
    cluster = DaskCluster(tmp_path / "dask", workers=2, gpu_workers=0)
    yield cluster
    cluster.stop()


@pytest.fixture(autouse=True)
def _private_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test caches into its own folder (and so gets its own memory tier too)."""
    folder = tmp_path / "nodegraph-cache"
    monkeypatch.setenv("NODEGRAPH_CACHE_DIR", str(folder))
    return folder


@pytest.fixture(autouse=True)
def _untagged_node_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Node tasks without type tags, unless a test's config asks for them: Prefect asks
    the server for a tag concurrency slot before every tagged task run, a round trip per
    node that only the tagging tests look at (``tests/test_reporting.py``)."""
    monkeypatch.setenv("NODEGRAPH_EXECUTION__TAG_NODE_TYPES", "false")


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    """An in-memory span exporter for the module's tests, on the one SDK tracer provider
    of the test process (OpenTelemetry allows one)."""
    exporter = InMemorySpanExporter()
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        current.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
    return exporter


COMFY_TEST_PACK = ROOT / "nodes" / "comfy_testing"
"""The ComfyUI test pack: no default registry loads it, so tests that use it ask."""


COMFY_V3_TEST_PACK = ROOT / "nodes" / "comfy_testing_v3"
"""The test pack's V3 classes; loaded after ``COMFY_TEST_PACK``, whose stubs they use."""


@pytest.fixture(scope="session")
def registry():
    """The default packs, the fixture packs and the ComfyUI test pack."""
    from integration.graph import NodeRegistry

    return NodeRegistry.default(extra_paths=[FIXTURES / "packs", COMFY_TEST_PACK])


@pytest.fixture(scope="session")
def registry_v3():
    """As ``registry``, with the test pack's V3 classes standing in for the V1 classes
    of the same names."""
    from integration.graph import NodeRegistry

    return NodeRegistry.default(
        extra_paths=[FIXTURES / "packs", COMFY_TEST_PACK, COMFY_V3_TEST_PACK]
    )


@pytest.fixture(params=["v1", "v3"])
def comfy_registry(request):
    """Each of ``registry`` and ``registry_v3``: the same prompts on either node API."""
    return request.getfixturevalue("registry" if request.param == "v1" else "registry_v3")


@pytest.fixture
def fixture_path() -> type[Path]:
    return FIXTURES  # type: ignore[return-value]
