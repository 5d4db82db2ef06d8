"""Deployments against the real Prefect server: event triggers with templated
parameters, chaining on another graph's completion, interval schedules, and bad input
caught at deploy time or at run time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.deployments import run_deployment
from prefect.exceptions import PrefectHTTPStatusError

import integration
from integration.prefect.deploy import (
    DeploymentError,
    EventTriggerSpec,
    graph_deployment,
    run_graph,
)

from .conftest import stop_process

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
HELLO = ROOT / "flows" / "examples" / "hello.yaml"
NODEGRAPH = [sys.executable, "-m", "integration.cli"]


@contextmanager
def serving(tmp_path: Path, *args: str) -> Iterator[None]:
    """``nodegraph serve ...`` in its own process, polling for runs every second."""
    env = {**os.environ, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    log = tmp_path / f"serve-{uuid.uuid4().hex[:6]}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*NODEGRAPH, "serve", *args], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT
        )
    try:
        yield
    except BaseException:
        print(log.read_text()[-4000:])
        raise
    finally:
        stop_process(process)


def _deployment_id(name: str, limit_s: float = 60) -> uuid.UUID:
    deadline = time.monotonic() + limit_s
    with get_client(sync_client=True) as client:
        while True:
            try:
                return client.read_deployment_by_name(name).id
            except Exception:
                assert time.monotonic() < deadline, f"deployment {name} never appeared"
                time.sleep(0.3)


def _finished_runs(deployment_id: uuid.UUID, count: int = 1, limit_s: float = 120) -> list:
    deadline = time.monotonic() + limit_s
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            )
            done = [r for r in runs if r.state and r.state.is_final()]
            if len(done) >= count:
                return done
            assert time.monotonic() < deadline, [(r.name, r.state) for r in runs]
            time.sleep(0.5)


def _emit(event: str, resource_id: str, payload: dict) -> None:
    """Emit an event from a separate process, as an external system would."""
    code = (
        "import json, sys\n"
        "from prefect.events import emit_event\n"
        "from prefect.events.worker import EventsWorker\n"
        "emit_event(event=sys.argv[1], resource={'prefect.resource.id': sys.argv[2]},"
        " payload=json.loads(sys.argv[3]))\n"
        "EventsWorker.drain_all()\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, event, resource_id, json.dumps(payload)],
        check=True,
        timeout=60,
    )


def test_an_event_triggers_a_deployment_with_templated_parameters(prefect_server, tmp_path):
    with serving(
        tmp_path,
        str(HELLO),
        "--name",
        "on-greeting",
        "--trigger",
        "test.greeting.requested",
        "--match",
        "prefect.resource.id=test.inbox",
        "--param",
        "name={{ event.payload.who }}",
    ):
        deployment_id = _deployment_id("run-graph/on-greeting")
        time.sleep(2)  # the trigger is registered with the deployment
        _emit("test.greeting.requested", "test.elsewhere", {"who": "Nobody"})  # no match
        _emit("test.greeting.requested", "test.inbox", {"who": "Ada"})
        (run,) = _finished_runs(deployment_id)
    assert run.parameters["inputs"] == {"name": "Ada"}
    assert run.state.is_completed(), run.state
    assert run.state.result()["message"] == "HELLO, ADA!"


def test_a_graph_completing_triggers_the_next(prefect_server, tmp_path, registry):
    with serving(tmp_path, str(HELLO), "--name", "after-arith", "--after", "arithmetic"):
        deployment_id = _deployment_id("run-graph/after-arith")
        time.sleep(2)
        first = integration.run(
            ROOT / "tests" / "fixtures" / "graphs" / "arithmetic.yaml",
            inputs={"x": 1},
            registry=registry,
        )
        assert first.ok
        (run,) = _finished_runs(deployment_id)
    assert run.state.is_completed(), run.state


def test_an_interval_schedule_gets_runs_that_complete(prefect_server, tmp_path):
    with serving(tmp_path, str(HELLO), "--name", "every-3s", "--interval", "3"):
        deployment_id = _deployment_id("run-graph/every-3s")
        try:
            runs = _finished_runs(deployment_id, count=2)
        finally:
            # Its scheduled runs go with it, instead of turning Late on the server. Only
            # hygiene: a server too busy to answer in time must not fail the test.
            try:
                with get_client(sync_client=True) as client:
                    client.delete_deployment(deployment_id)
            except (httpx.HTTPError, PrefectHTTPStatusError) as exc:  # a timeout, a 503
                warnings.warn(f"could not delete deployment {deployment_id}: {exc!r}", stacklevel=1)
    assert all(r.state.is_completed() for r in runs), [r.state for r in runs]


def test_bad_triggers_are_rejected_at_deploy_time(prefect_server):
    with pytest.raises(DeploymentError, match="not an event name"):
        EventTriggerSpec("files landed")
    with pytest.raises(DeploymentError, match="resource label"):
        EventTriggerSpec("files.landed", {"bad key!": "x"})
    result = subprocess.run(
        [*NODEGRAPH, "deploy", str(HELLO), "--name", "x", "--trigger", "a.b", "--match", "novalue"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 1 and "expected LABEL=VALUE" in result.stderr
    with pytest.raises(DeploymentError, match="Invalid cron"):
        graph_deployment(HELLO, name="x", cron="99 * *")


def test_bad_inputs_fail_fast_with_the_reason_in_the_state_message(prefect_server):
    # The generic run_graph (as deployments/prefect.yaml points at) checks inputs when
    # the run starts, before any node.
    state = run_graph(graph=str(HELLO), inputs={"name": 5, "nope": 1}, return_state=True)
    assert state.is_failed()
    assert "nope" in state.message
    # A graph's own deployment carries the graph's input schema: the server refuses
    # bad parameters before a run exists.
    deployment_id = graph_deployment(HELLO, name="typed").apply()
    with pytest.raises(Exception, match="name"):
        run_deployment(deployment_id, parameters={"inputs": {"name": 5}}, timeout=0)


def test_prefect_yaml_and_serve_py_define_the_three_deployments(prefect_server):
    import importlib.util

    import yaml
    from prefect.flows import load_flow_from_entrypoint

    document = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    entries = {entry["name"]: entry for entry in document["deployments"]}
    for entry in entries.values():
        flow = load_flow_from_entrypoint(str(ROOT / entry["entrypoint"]))
        assert flow.name == "run-graph"
        assert (ROOT / entry["parameters"]["graph"]).is_file()

    spec = importlib.util.spec_from_file_location("serve", ROOT / "deployments" / "serve.py")
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)
    built = {d.name: d for d in serve.deployments()}
    assert set(built) == set(entries) == {"hello-hourly", "hello-on-file", "arrays-after-hello"}
    assert built["hello-hourly"].schedules[0].schedule.cron == "0 * * * *"
    (on_file,) = built["hello-on-file"].triggers
    assert on_file.expect == {"files.landed"}
    assert on_file.parameters == {"inputs": {"name": "{{ event.payload.name }}"}}
    (chain,) = built["arrays-after-hello"].triggers
    assert chain.expect == {"nodegraph.graph.completed"}
    assert chain.match.model_dump()["prefect.resource.id"] == "nodegraph.graph.hello"
    # The served deployments show the graph's inputs as a typed form.
    inputs = built["hello-hourly"]._parameter_openapi_schema.properties["inputs"]
    assert inputs["properties"]["name"]["type"] == "string"


def test_graph_flows_compose_as_subflows_and_carry_typed_schemas(prefect_server):
    from prefect import flow

    hello = integration.to_flow(HELLO)
    properties = hello.parameters.model_dump()["properties"]
    assert properties["name"]["type"] == "string" and properties["name"]["default"] == "world"
    with pytest.raises(Exception, match="name"):
        hello.validate_parameters({"name": {"not": "a string"}})

    @flow
    def pipeline() -> tuple[str, str]:
        first = hello(name="Ada")["message"]
        second = run_graph(graph=str(HELLO), inputs={"name": "Bob"})["message"]
        return first, second

    assert pipeline() == ("HELLO, ADA!", "HELLO, BOB!")
