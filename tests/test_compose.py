"""docker/compose.yaml, run without Docker: each service's command and environment,
started natively on loopback.

No Docker engine runs here. The test reads the compose file and starts, from its
``command`` and ``environment`` (hostnames rewritten to 127.0.0.1, container ports to
free ports, ``/opt/nodegraph`` to this checkout):

- ``postgres`` (Debian's ``postgresql`` binaries, with the user, password and database
  the official image would create from ``POSTGRES_*``);
- ``prefect-server`` on that database, with the UI;
- ``redis`` (``redis-server``);
- ``dask-scheduler`` and ``dask-worker``;
- ``worker``, the process work pool worker;
- ``minio`` is moto's S3 API, with the bucket that ``minio-init`` creates.

Then it runs a graph with the environment of ``worker`` (the environment every flow run
of that worker gets): on the Dask cluster, with the Redis and S3 cache tiers, results
persisted in S3. A typo in a command, a hostname, a port or a variable name fails it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import ROOT, free_port, require_binary, stop_process

pytestmark = pytest.mark.integration

COMPOSE_FILE = ROOT / "docker" / "compose.yaml"
IMAGE_ROOT = "/opt/nodegraph"
"""The image's WORKDIR, where the repository's files live; this checkout here."""
SERVICES = {
    "postgres",
    "prefect-server",
    "worker",
    "dask-scheduler",
    "dask-worker",
    "dask-cuda-worker",
    "redis",
    "minio",
    "minio-init",
}
OURS = {"prefect-server", "worker", "dask-scheduler", "dask-worker", "dask-cuda-worker"}
"""Services that run the nodegraph image (built from docker/Dockerfile)."""
GRAPH = "flows/examples/arrays.yaml"


# -- reading the compose file ----------------------------------------------------------

_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>\w+)(?P<op>:?-)?(?P<default>[^}]*)\}|\$(?P<bare>\w+)")


def interpolate(value: object) -> object:
    """Compose's variable substitution, with every variable at its default.

    The stack must come up without a .env file, so each ``${VAR}`` needs a default.
    """
    if isinstance(value, dict):
        return {key: interpolate(item) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        if match.group("op") is None:
            raise AssertionError(f"compose variable {name} has no default: {value!r}")
        return match.group("default")

    return _VARIABLE.sub(substitute, value)


def load_compose() -> dict:
    return interpolate(yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8")))


def environment_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def command_of(service: dict) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def container_ports(service: dict) -> set[int]:
    ports = set()
    for entry in [*service.get("ports", []), *service.get("expose", [])]:
        if isinstance(entry, dict):
            ports.add(int(entry["target"]))
        else:
            ports.add(int(str(entry).split("/")[0].rsplit(":", 1)[-1]))
    return ports


# -- the stack, natively -------------------------------------------------------------


class Stack:
    """The compose services as local processes; compose names and ports rewritten."""

    def __init__(self, compose: dict, folder: Path) -> None:
        self.services: dict[str, dict] = compose["services"]
        self.folder = folder
        self.ports = {
            (name, port): free_port()
            for name, service in self.services.items()
            for port in container_ports(service)
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.cleanup: list[Path] = []
        self._host = re.compile(
            r"(?:(?<=//)|(?<=@))(?P<host>"
            + "|".join(re.escape(name) for name in sorted(self.services, key=len, reverse=True))
            + r")(?::(?P<port>\d+))?(?=[/:?\s\"']|$)"
        )

    def rewrite(self, text: str, service: str | None = None) -> str:
        """``host:port`` of a compose service in a URL to 127.0.0.1 and its free port;
        in a service's own command, its listen address and ports the same way."""

        def host(match: re.Match[str]) -> str:
            name, port = match.group("host"), match.group("port")
            if port is None:
                return "127.0.0.1"
            assert (name, int(port)) in self.ports, (
                f"{text!r}: service {name} does not publish or expose port {port}"
            )
            return f"127.0.0.1:{self.ports[name, int(port)]}"

        text = self._host.sub(host, text.replace(IMAGE_ROOT, str(ROOT)))
        for unknown in re.findall(r"[a-z][\w+.-]*://(?:[^@/\s]*@)?([^:/\s\"']+)", text):
            assert unknown in ("127.0.0.1", "localhost"), f"{text!r}: no service {unknown!r}"
        if service is not None:
            own = {port: free for (name, port), free in self.ports.items() if name == service}
            text = text.replace("0.0.0.0", "127.0.0.1")
            text = re.sub(
                r"(?<![\w.])(\d{2,5})(?![\w.])",
                lambda m: str(own.get(int(m.group(1)), m.group(1))),
                text,
            )
        return text

    def command(self, name: str) -> list[str]:
        argv = [self.rewrite(arg, name) for arg in command_of(self.services[name])]
        assert argv, f"service {name} has no command"
        return [require_binary(argv[0]), *argv[1:]]

    def environment(self, name: str) -> dict[str, str]:
        return {k: self.rewrite(v) for k, v in environment_of(self.services[name]).items()}

    def process_env(self, name: str) -> dict[str, str]:
        """This machine's environment without Prefect, nodegraph, AWS or Dask settings,
        then the service's own, and a private Prefect home and cache folder."""
        base = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("PREFECT_", "NODEGRAPH_", "AWS_", "DASK_"))
        }
        home = self.folder / f"{name}-home"
        home.mkdir(exist_ok=True)
        return {
            **base,
            **self.environment(name),
            "PREFECT_HOME": str(home / "prefect"),
            "NODEGRAPH_CACHE_DIR": str(home / "cache"),
        }

    def cwd(self, name: str) -> Path:
        working_dir = self.services[name].get("working_dir")
        return Path(self.rewrite(working_dir)) if working_dir else ROOT

    def start(self, name: str, argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        log = (self.folder / f"{name}.log").open("wb")
        kwargs.setdefault("env", self.process_env(name))
        kwargs.setdefault("cwd", self.cwd(name))
        self.processes[name] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, **kwargs
        )
        log.close()
        return self.processes[name]

    def log(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def check_running(self, *names: str) -> None:
        for name in names:
            process = self.processes[name]
            assert process.poll() is None, (
                f"{name} exited ({process.returncode}):\n{self.log(name)}"
            )

    def wait_for(self, name: str, ready: object, limit_s: float = 60) -> None:
        """Poll ``ready()`` until it is true, failing early if ``name`` exits."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            self.check_running(name)
            try:
                if ready():  # type: ignore[operator]
                    return
            except OSError:
                pass
            time.sleep(0.25)
        raise AssertionError(f"{name} not ready after {limit_s}s:\n{self.log(name)}")

    def stop(self) -> None:
        for name, process in reversed(self.processes.items()):
            if name == "postgres" and process.poll() is None:
                process.send_signal(signal.SIGINT)  # fast shutdown; SIGTERM waits for clients
            stop_process(process, grace_s=15)
        for folder in self.cleanup:
            shutil.rmtree(folder, ignore_errors=True)


# -- PostgreSQL ------------------------------------------------------------------------


def postgres_bin() -> Path:
    """Debian's PostgreSQL programs (not on PATH); skip without them, fail under CI."""
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.name)],
        reverse=True,
    )
    for folder in candidates:
        if (folder / "initdb").exists() and (folder / "postgres").exists():
            return folder
    require_binary("initdb")  # skips, or fails under CI=true
    raise AssertionError("unreachable")


def postgres_identity() -> dict[str, object]:
    """PostgreSQL refuses to run as root: as root, run it as the ``postgres`` user."""
    if os.geteuid() != 0:
        return {}
    import pwd

    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        message = "running as root and there is no postgres user to run PostgreSQL as"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI must install postgresql (see .ci/run)")
        pytest.skip(message)
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def start_postgres(stack: Stack) -> None:
    """``postgres`` as the official image starts it from ``POSTGRES_*``, in a folder
    outside pytest's root-only temporary tree, owned by the server's user."""
    programs = postgres_bin()
    identity = postgres_identity()
    env = stack.environment("postgres")
    user = env.get("POSTGRES_USER", "postgres")
    password = env["POSTGRES_PASSWORD"]
    database = env.get("POSTGRES_DB", user)
    port = stack.ports["postgres", 5432]

    root = Path(tempfile.mkdtemp(prefix="nodegraph-postgres-"))
    stack.cleanup.append(root)
    (root / "password").write_text(password + "\n")
    if identity:
        for path in (root, root / "password"):
            os.chown(path, identity["user"], identity["group"])  # type: ignore[arg-type]
    initdb = subprocess.run(
        [str(programs / "initdb"), "-D", str(root / "data"), "-U", user,
         f"--pwfile={root / 'password'}", "--auth-local=trust", "--auth-host=scram-sha-256",
         "-E", "UTF8", "--no-sync"],
        capture_output=True, text=True, cwd=root, **identity,
    )  # fmt: skip
    assert initdb.returncode == 0, initdb.stdout + initdb.stderr
    stack.start(
        "postgres",
        [str(programs / "postgres"), "-D", str(root / "data"), "-p", str(port),
         "-c", "listen_addresses=127.0.0.1", "-k", str(root),
         "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
        env={"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8"}, cwd=root, **identity,
    )  # fmt: skip
    client_env = {**os.environ, "PGPASSWORD": password}

    def ready() -> bool:
        check = [str(programs / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", user]
        return subprocess.run(check, capture_output=True, env=client_env).returncode == 0

    stack.wait_for("postgres", ready, limit_s=30)
    if database != "postgres":
        created = subprocess.run(
            [str(programs / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", user, database],
            capture_output=True, text=True, env=client_env,
        )  # fmt: skip
        assert created.returncode == 0, created.stderr


# -- helpers ---------------------------------------------------------------------------


def http_json(url: str, body: dict | None = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{url}: {exc.code} {exc.read()[:2000]!r}") from None


def redis_ping(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(16).startswith(b"+PONG")


def option(argv: list[str], name: str) -> str:
    assert name in argv, f"{name} missing from {argv}"
    return argv[argv.index(name) + 1]


def expected_arrays(seed: int, rows: int) -> dict:
    """What flows/examples/arrays.yaml computes, with numpy directly."""
    matrix = np.random.default_rng(seed).random([rows, 3])
    centred = matrix - matrix.mean()
    return {
        "mean": matrix.mean(),
        "spread": centred.std(),
        "column_sums": centred.sum(axis=0).tolist(),
    }


# -- the test --------------------------------------------------------------------------


def test_compose_file_is_complete():
    """The services, profiles, GPU reservation and images the README describes."""
    compose = load_compose()
    services = compose["services"]
    assert set(services) == SERVICES
    for name in OURS:
        build = services[name].get("build")
        assert build, f"{name} must build the nodegraph image"
        context = (COMPOSE_FILE.parent / build["context"]).resolve()
        assert context == ROOT and (context / build["dockerfile"]) == ROOT / "docker/Dockerfile"
    for name, service in services.items():
        depends = service.get("depends_on") or []
        assert set(depends) <= set(services), f"{name} depends on unknown services"
        if name != "dask-cuda-worker":
            assert not service.get("profiles"), f"{name} must start without a profile"
    gpu = services["dask-cuda-worker"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"].get("args", {}).get("EXTRAS") == "gpu"  # dask-cuda and pynvml
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert command_of(gpu)[:3] == ["dask", "cuda", "worker"]
    assert "GPU=1" in option(command_of(gpu), "--resources")
    server = environment_of(services["prefect-server"])
    assert server["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    worker = command_of(services["worker"])
    assert worker[:3] == ["prefect", "worker", "start"] and option(worker, "--type") == "process"


@pytest.fixture
def stack(tmp_path: Path, moto_server) -> Iterator[Stack]:
    stack = Stack(load_compose(), tmp_path)
    # MinIO is moto's S3 API here: the same S3 calls, on the fixture's port.
    for name, port in list(stack.ports):
        if name == "minio":
            stack.ports[name, port] = moto_server.port
    try:
        yield stack
    finally:
        stack.stop()


def test_compose_stack_runs_a_graph_on_dask_with_redis_and_s3(stack: Stack, moto_server):
    services = stack.services
    programs = postgres_bin()
    pg_env = stack.environment("postgres")
    start_postgres(stack)
    # The Prefect server on it (the slowest to come up), Redis, the Dask cluster.
    stack.start("prefect-server", stack.command("prefect-server"))
    redis_argv = command_of(services["redis"]) or ["redis-server"]
    assert redis_argv[0] == "redis-server"
    redis_port = stack.ports["redis", 6379]
    stack.start(
        "redis",
        [require_binary("redis-server"), *redis_argv[1:], "--port", str(redis_port),
         "--bind", "127.0.0.1", "--dir", str(stack.folder)],
    )  # fmt: skip
    stack.start("dask-scheduler", stack.command("dask-scheduler"))
    stack.start("dask-worker", [*stack.command("dask-worker"), "--host", "127.0.0.1"])

    # minio-init's bucket, on moto, and MinIO's root credentials in the worker's hands.
    minio_env = stack.environment("minio")
    init_script = " ".join(command_of(services["minio-init"]))
    bucket = re.search(r"mc mb (?:--\S+ )*local/([\w.-]+)", init_script).group(1)
    worker_env = stack.environment("worker")
    assert worker_env["NODEGRAPH_CACHING__S3__BUCKET"] == bucket
    assert worker_env["AWS_ACCESS_KEY_ID"] == minio_env["MINIO_ROOT_USER"]
    assert worker_env["AWS_SECRET_ACCESS_KEY"] == minio_env["MINIO_ROOT_PASSWORD"]
    s3 = moto_server.tier(bucket)  # creates the bucket

    # The worker's environment is a valid configuration, wired to these services.
    from integration.config import load_config

    config = load_config(None, environ=worker_env)
    assert config.execution.strategy == "distributed"
    assert config.caching.cache_levels == ["memory", "redis", "s3"]
    assert config.caching.redis.url == f"redis://127.0.0.1:{redis_port}/0"
    assert config.caching.s3.endpoint_url == moto_server.endpoint
    dask_address = config.execution.dask_address
    assert dask_address == f"tcp://127.0.0.1:{stack.ports['dask-scheduler', 8786]}"
    api = worker_env["PREFECT_API_URL"]
    assert api == f"http://127.0.0.1:{stack.ports['prefect-server', 4200]}/api"
    for name in ("dask-worker", "dask-cuda-worker"):
        assert stack.environment(name)["PREFECT_API_URL"] == api  # nodes report to it

    stack.wait_for("redis", lambda: redis_ping(redis_port), limit_s=20)
    stack.wait_for("prefect-server", lambda: http_json(f"{api}/health") is True, limit_s=90)
    server_env = stack.environment("prefect-server")
    with urllib.request.urlopen(api.removesuffix("/api") + "/", timeout=5) as page:
        assert b"<html" in page.read()  # the UI
    ui_settings = http_json(api.removesuffix("/api") + "/ui-settings")
    assert ui_settings["api_url"] == server_env["PREFECT_SERVER_UI_API_URL"]

    # The process work pool worker (polling every second here instead of every ten).
    worker_argv = stack.command("worker")
    pool = option(worker_argv, "--pool")
    stack.start(
        "worker",
        worker_argv,
        # One task per node (fusion off), so that each node's task run and Dask task
        # can be checked by name below; fusion itself is tested in test_fusion.py.
        env={
            **stack.process_env("worker"),
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "NODEGRAPH_EXECUTION__FUSION__MODE": "off",
        },
    )

    import distributed

    with distributed.Client(dask_address, timeout=30, set_as_default=False) as client:
        client.wait_for_workers(1, timeout=60)

    def online() -> bool:
        if pool not in {found["name"] for found in http_json(f"{api}/work_pools/filter", {})}:
            return False  # the worker creates it as it starts
        workers = http_json(f"{api}/work_pools/{pool}/workers/filter", {})
        return bool(workers) and workers[0]["status"] == "ONLINE"

    stack.wait_for("worker", online, limit_s=60)
    assert http_json(f"{api}/work_pools/{pool}")["type"] == "process"

    # A deployment of the example graph in the worker's pool, made as the README says
    # (`prefect deploy` in the worker's container; its flow runs start in that folder).
    flow_file = stack.folder / "deployed" / "arrays_flow.py"
    flow_file.parent.mkdir()
    flow_file.write_text(
        f"import integration\n\narrays = integration.to_flow({str(ROOT / GRAPH)!r})\n"
    )
    deploy = subprocess.run(
        [require_binary("prefect"), "--no-prompt", "deploy", f"{flow_file.name}:arrays",
         "--name", "compose-test", "--pool", pool],
        env=stack.process_env("worker"), cwd=flow_file.parent, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    deployment = http_json(f"{api}/deployments/name/arrays/compose-test")

    # First run: through the worker, which runs it with its environment.
    seed = int(time.time()) % 100_000
    flow_run = http_json(
        f"{api}/deployments/{deployment['id']}/create_flow_run", {"parameters": {"seed": seed}}
    )

    def finished() -> bool:
        state = http_json(f"{api}/flow_runs/{flow_run['id']}")["state"]
        assert state["type"] not in ("FAILED", "CRASHED", "CANCELLED"), (state, stack.log("worker"))
        return state["type"] == "COMPLETED"

    stack.wait_for("worker", finished, limit_s=90)
    task_runs = http_json(
        f"{api}/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run["id"]]}}}
    )
    node_ids = {node["id"] for node in yaml.safe_load((ROOT / GRAPH).read_text())["nodes"]}
    assert {run["name"]: run["state_type"] for run in task_runs} == dict.fromkeys(
        node_ids, "COMPLETED"
    )
    with distributed.Client(dask_address, timeout=30, set_as_default=False) as client:
        assert node_ids <= set(client.run_on_scheduler(_tasks_seen))  # they ran on Dask

    # The same graph from the CLI, with the worker's environment: all from the cache,
    # Redis first (the memory tier is per process).
    run_env = stack.process_env("worker")
    command = [require_binary("nodegraph"), "run", GRAPH, "-i", f"seed={seed}", "--json"]

    def run_graph() -> dict:
        done = subprocess.run(
            command, env=run_env, cwd=stack.cwd("worker"), capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)

    second = run_graph()
    assert second["state"] == "completed" and second["strategy"] == "distributed"
    expected = expected_arrays(seed, rows=4)
    assert second["outputs"]["mean"] == pytest.approx(expected["mean"])
    assert second["outputs"]["spread"] == pytest.approx(expected["spread"])
    assert second["outputs"]["column_sums"] == pytest.approx(expected["column_sums"])
    assert {(node["state"], node["cache_tier"]) for node in second["nodes"]} == {
        ("cached", "redis")
    }
    keys = {node["cache_key"] for node in second["nodes"]}

    # Every node's result is in Redis and persisted in S3.
    import redis

    prefix = config.caching.redis.prefix
    in_redis = {
        key.decode()[len(prefix) :]
        for key in redis.Redis(port=redis_port).scan_iter(match=f"{prefix}*")
    }
    assert keys <= in_redis
    s3_prefix = config.caching.s3.prefix
    try:
        in_s3 = {path.rsplit("/", 1)[-1] for path in s3.fs.ls(f"{bucket}/{s3_prefix}")}
    except FileNotFoundError:
        in_s3 = set()
    assert keys <= in_s3, "node results missing from S3 (written by the Dask workers)"

    # Without Redis's copies, the results persisted in S3 serve the run.
    redis.Redis(port=redis_port).flushdb()
    third = run_graph()
    assert third["outputs"] == second["outputs"]
    assert {(node["state"], node["cache_tier"]) for node in third["nodes"]} == {("cached", "s3")}

    # The Prefect server kept all of it in PostgreSQL.
    user, password = pg_env.get("POSTGRES_USER", "postgres"), pg_env["POSTGRES_PASSWORD"]
    count = subprocess.run(
        [str(programs / "psql"), "-h", "127.0.0.1", "-p", str(stack.ports["postgres", 5432]),
         "-U", user, "-d", pg_env.get("POSTGRES_DB", user), "-tAc",
         "select count(*) from flow_run"],
        capture_output=True, text=True, env={**os.environ, "PGPASSWORD": password},
    )  # fmt: skip
    assert count.returncode == 0, count.stderr
    assert int(count.stdout) >= 3
    stack.check_running("prefect-server", "dask-scheduler", "dask-worker", "worker", "redis")


# Tasks the scheduler has seen so far, by key prefix (tasks are forgotten once done).
# A lambda, so that it travels by value: the scheduler cannot import this module.
_tasks_seen = lambda dask_scheduler: {  # noqa: E731
    name: sum(prefix.state_counts.values()) for name, prefix in dask_scheduler.task_prefixes.items()
}
