"""``nodegraph comfy serve``: ComfyUI's HTTP and websocket API, as a ComfyUI client
uses it (POST /prompt, listen on /ws until ``executing`` with ``node: null``, read
/history), with prompts running as Prefect flow runs on the real server."""

from __future__ import annotations

import base64
import json
import struct
import time
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from typer.testing import CliRunner

from integration.cli import app as cli
from integration.config import ExecutionConfig, NodegraphConfig
from integration.graph.context import ExecutionContext, running_node
from integration.server import ServerError, ServerSettings, create_app, editor
from integration.server.app import preview_frame
from integration.server.queue import PromptQueue, QueueItem

COMFY = Path(__file__).parent / "fixtures" / "comfy"


def api_prompt() -> dict:
    return json.loads((COMFY / "v3_dynamic_api.json").read_text())


def small_prompt(value: float = 0.5) -> dict:
    return {
        "1": {"class_type": "StubFloat", "inputs": {"value": value}},
        "2": {"class_type": "TestRecord", "inputs": {"value": ["1", 0], "label": "small"}},
    }


@pytest.fixture
def settings(tmp_path, registry_v3) -> ServerSettings:
    return ServerSettings(state=tmp_path / "state", registry=registry_v3)


def until_done(socket, prompt_id: str, frames: list[bytes] | None = None) -> list[dict]:
    """Messages up to ``executing`` with ``node: null`` for the prompt; binary frames
    (previews) go to ``frames``."""
    seen = []
    while True:
        received = socket.receive()
        if received.get("bytes") is not None:
            assert frames is not None, "a binary frame nobody asked for"
            frames.append(received["bytes"])
            continue
        message = json.loads(received["text"])
        seen.append(message)
        data = message["data"]
        if message["type"] == "executing" and data.get("node") is None:
            if data.get("prompt_id") == prompt_id:
                return seen


# -- without running anything ------------------------------------------------------


INVALID_PROMPTS = {
    "no_prompt": {},
    "invalid_prompt": {"prompt": ["not", "an", "object"]},
    "invalid_prompt_id": {"prompt": small_prompt(), "prompt_id": "x"},
    "missing_node_type": {"prompt": {"1": {"class_type": "NoSuchNode", "inputs": {}}}},
    "prompt_no_outputs": {"prompt": {"1": {"class_type": "StubFloat", "inputs": {"value": 1}}}},
    "prompt_outputs_failed_validation": {
        "prompt": {
            "1": {"class_type": "TestAutogrowSum", "inputs": {"scale": 1.0}},
            "2": {"class_type": "TestRecord", "inputs": {"value": ["1", 0]}},
        }
    },
}


@pytest.mark.parametrize("error_type", INVALID_PROMPTS)
def test_invalid_prompts_get_comfyuis_error_shapes(settings, error_type):
    with TestClient(create_app(settings)) as client:
        for path in ("/prompt", "/api/prompt"):
            answer = client.post(path, json=INVALID_PROMPTS[error_type])
            assert answer.status_code == 400
            body = answer.json()
            assert body["error"]["type"] == error_type
            assert set(body["error"]) == {"type", "message", "details", "extra_info"}
            assert isinstance(body["node_errors"], dict)
        assert client.get("/queue").json()["queue_pending"] == []  # nothing was queued
        if error_type == "prompt_outputs_failed_validation":
            (reason,) = body["node_errors"]["1"]["errors"]
            assert reason["type"] == "required_input_missing" and reason["details"] == "value0"
            assert body["node_errors"]["1"]["dependent_outputs"] == ["2"]
            assert body["node_errors"]["1"]["class_type"] == "TestAutogrowSum"


def test_discovery_routes_answer_what_the_editor_asks(settings):
    with TestClient(create_app(settings)) as client:
        info = client.get("/api/object_info").json()
        assert info["TestAutogrowSum"]["input"]["required"]["values"][0] == "COMFY_AUTOGROW_V3"
        assert set(client.get("/object_info/TestRecord").json()) == {"TestRecord"}
        assert client.get("/object_info/Nope").json() == {}
        stats = client.get("/api/system_stats").json()
        assert stats["system"]["ram_total"] > 0 and stats["devices"]
        assert client.get("/api/prompt").json() == {"exec_info": {"queue_remaining": 0}}
        assert client.get("/api/queue").json() == {"queue_running": [], "queue_pending": []}
        assert client.get("/api/embeddings").json() == []


def test_uploads_land_in_the_input_folder_and_view_refuses_traversal(settings):
    with TestClient(create_app(settings)) as client:
        sent = client.post(
            "/api/upload/image", files={"image": ("a.png", b"one")}, data={"type": "input"}
        )
        assert sent.json() == {"name": "a.png", "subfolder": "", "type": "input"}
        again = client.post("/api/upload/image", files={"image": ("a.png", b"two")})
        assert again.json()["name"] == "a (1).png"  # a different file of the same name
        assert client.get("/view", params={"filename": "a.png", "type": "input"}).content == b"one"
        assert (
            client.get("/view", params={"filename": "../queue.json", "type": "input"}).status_code
            == 403
        )
        assert client.get("/view", params={"filename": "/etc/passwd"}).status_code == 403
        assert client.get("/view", params={"filename": "a.png", "type": "bad"}).status_code == 400
        assert client.get("/view", params={"filename": "none.png"}).status_code == 404


def test_uploads_are_size_limited(tmp_path, registry_v3):
    settings = ServerSettings(state=tmp_path / "s", registry=registry_v3, max_upload_bytes=10)
    with TestClient(create_app(settings)) as client:
        big = client.post("/upload/image", files={"image": ("big.png", b"x" * 11)})
        assert big.status_code == 413


def test_a_token_is_needed_beyond_loopback_and_checked_everywhere(tmp_path, registry_v3):
    with pytest.raises(ServerError, match="token"):
        ServerSettings(state=tmp_path / "s", host="0.0.0.0").check()
    refused = CliRunner().invoke(cli.app, ["comfy", "serve", "--listen", "0.0.0.0"])
    assert refused.exit_code == 1 and "token" in refused.output
    settings = ServerSettings(
        state=tmp_path / "t", host="0.0.0.0", token="s3cret", registry=registry_v3
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/api/queue").status_code == 401
        assert client.get("/api/queue", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert (
            client.get("/api/queue", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        )
        basic = base64.b64encode(b"anyone:s3cret").decode()
        assert client.get("/queue", headers={"Authorization": f"Basic {basic}"}).status_code == 200
        with pytest.raises(Exception):  # noqa: B017 - the socket is closed before accept
            with client.websocket_connect("/ws"):
                pass
        with client.websocket_connect("/ws?token=s3cret") as socket:
            assert socket.receive_json()["type"] == "status"


# -- running prompts -----------------------------------------------------------------


@pytest.mark.integration
def test_a_plain_client_queues_a_prompt_and_reads_its_history(prefect_server, settings):
    client_id = uuid.uuid4().hex
    with TestClient(create_app(settings)) as client:
        with client.websocket_connect(f"/ws?clientId={client_id}") as socket:
            hello = socket.receive_json()
            assert hello == {
                "type": "status",
                "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": client_id},
            }
            answer = client.post("/prompt", json={"prompt": api_prompt(), "client_id": client_id})
            assert answer.status_code == 200, answer.text
            prompt_id = answer.json()["prompt_id"]
            assert answer.json()["node_errors"] == {}
            messages = until_done(socket, prompt_id)
        kinds = [m["type"] for m in messages if m["type"] != "status"]
        assert kinds[0] == "execution_start" and kinds[1] == "execution_cached"
        assert kinds[-2:] == ["execution_success", "executing"]
        executing = {m["data"]["node"] for m in messages if m["type"] == "executing"}
        assert {"3", "5", "6", "10"} <= executing
        executed = {
            m["data"]["node"]: m["data"]["output"] for m in messages if m["type"] == "executed"
        }
        assert executed["7"] == {
            "values": [10.0]
        }  # max((1.5 + 2.0 + 1.5) * 2, 1.5) and executed["9"] == {"values": ["9:0.75"]}
        entry = client.get(f"/history/{prompt_id}").json()[prompt_id]
        assert entry["status"]["status_str"] == "success" and entry["status"]["completed"]
        assert entry["outputs"]["11"] == {"values": [0.25]}
        assert entry["prompt"][1] == prompt_id
        names: set[str] = set()
        flow_run = FlowRunFilter(id=FlowRunFilterId(any_=[entry["nodegraph"]["flow_run_id"]]))
        with get_client(sync_client=True) as prefect:  # one flow run, a task run per node
            for _ in range(50):  # the server stores task runs from events, a moment later
                names = {
                    t.name.split(" #")[0] for t in prefect.read_task_runs(flow_run_filter=flow_run)
                }
                if {"TestAutogrowSum", "TestDynamicComboImage"} <= names:
                    break
                time.sleep(0.2)
        assert {"TestAutogrowSum", "TestDynamicComboImage"} <= names

        # the same prompt again: every node comes from the cache, and says so
        with client.websocket_connect(f"/ws?clientId={client_id}") as socket:
            socket.receive_json()
            again = client.post("/prompt", json={"prompt": api_prompt(), "client_id": client_id})
            messages = until_done(socket, again.json()["prompt_id"])
        cached = next(m for m in messages if m["type"] == "execution_cached")["data"]["nodes"]
        assert set(cached) == {"7", "8", "9", "11"}  # the outputs; nothing they need is read
        assert not [m for m in messages if m["type"] == "executing" and m["data"]["node"]]


@pytest.mark.integration
def test_a_client_that_connects_after_posting_learns_the_prompt_is_done(prefect_server, settings):
    with TestClient(create_app(settings)) as client:
        answer = client.post("/api/prompt", json={"prompt": small_prompt(0.25)})
        prompt_id = answer.json()["prompt_id"]
        with client.websocket_connect("/ws") as socket:
            while True:  # the status on connect, then one per queue change
                status = socket.receive_json()
                assert status["type"] == "status"
                if status["data"]["status"]["exec_info"]["queue_remaining"] == 0:
                    break
        assert client.get(f"/api/history/{prompt_id}").json()[prompt_id]["outputs"] == {
            "2": {"values": [0.25]}
        }


def test_queued_prompts_survive_a_restart(tmp_path, registry_v3):
    state = tmp_path / "state"
    first = ServerSettings(state=state, registry=registry_v3)
    app = create_app(first)
    server = app.state.server
    server.start = lambda: None  # a server that stops before its worker takes anything
    with TestClient(app) as client:
        queued = client.post("/prompt", json={"prompt": small_prompt()}).json()["prompt_id"]
        assert client.get("/queue").json()["queue_pending"][0][1] == queued
    again = create_app(ServerSettings(state=state, registry=registry_v3))
    again.state.server.start = lambda: None
    with TestClient(again) as client:
        assert client.get("/queue").json()["queue_pending"][0][1] == queued
        later = client.post("/prompt", json={"prompt": small_prompt(0.75)}).json()
        assert later["number"] == 1  # after the prompt queued before the restart
        pending = client.get("/queue").json()["queue_pending"]
        assert [item[1] for item in pending] == [queued, later["prompt_id"]]
        client.post("/queue", json={"delete": [queued, later["prompt_id"]]})
        assert client.get("/queue").json()["queue_pending"] == []


def test_a_prompt_running_when_the_server_died_is_marked_in_the_history(tmp_path):
    queue = PromptQueue(tmp_path)
    queue.put(QueueItem(0, "p1", small_prompt(), {}, ["2"]))
    assert queue.get(timeout=1).prompt_id == "p1"  # running; then the process dies
    reopened = PromptQueue(tmp_path)
    entry = reopened.history["p1"]
    assert entry["status"]["status_str"] == "error"
    assert entry["status"]["messages"][-1][1]["exception_type"] == "ServerStopped"
    assert reopened.remaining() == 0


@pytest.mark.integration
def test_interrupt_cancels_the_running_prompt_and_keeps_what_finished(
    prefect_server, tmp_path, registry_v3
):
    settings = ServerSettings(state=tmp_path / "state", registry=registry_v3, strategy="parallel")
    prompt = {
        "1": {"class_type": "StubFloat", "inputs": {"value": 0.5}},
        "2": {"class_type": "TestSleep", "inputs": {"value": ["1", 0], "seconds": 0.1}},
        "3": {"class_type": "TestSleep", "inputs": {"value": ["2", 0], "seconds": 2.0}},
        "4": {"class_type": "TestSleep", "inputs": {"value": ["3", 0], "seconds": 2.0}},
        "5": {"class_type": "TestRecord", "inputs": {"value": ["4", 0], "label": "slow"}},
    }
    client_id = uuid.uuid4().hex
    with TestClient(create_app(settings)) as client:
        with client.websocket_connect(f"/ws?clientId={client_id}") as socket:
            socket.receive_json()
            body = {"prompt": prompt, "client_id": client_id}
            prompt_id = client.post("/prompt", json=body).json()["prompt_id"]
            while True:
                message = socket.receive_json()
                if message["type"] == "executing" and message["data"]["node"] == "3":
                    break
            assert client.post("/api/interrupt", json={"prompt_id": prompt_id}).status_code == 200
            messages = until_done(socket, prompt_id)
        assert "execution_interrupted" in [m["type"] for m in messages]
        entry = client.get(f"/history/{prompt_id}").json()[prompt_id]
        assert entry["status"]["status_str"] == "error"
        assert entry["status"]["messages"][-1][0] == "execution_interrupted"

        # queued again, only what had not finished runs
        with client.websocket_connect(f"/ws?clientId={client_id}") as socket:
            socket.receive_json()
            again = client.post("/prompt", json={"prompt": prompt, "client_id": client_id})
            messages = until_done(socket, again.json()["prompt_id"])
        ran = {m["data"]["node"] for m in messages if m["type"] == "executing"} - {None}
        assert ran == {"4", "5"}
        assert next(m for m in messages if m["type"] == "execution_cached")["data"]["nodes"] == [
            "3"
        ]


@pytest.mark.integration
def test_nodegraph_types_are_comfyui_classes_too(prefect_server, settings):
    with TestClient(create_app(settings)) as client:
        add = client.get("/api/object_info/core.add").json()["core.add"]
        assert add["input"]["required"]["a"][0] == "FLOAT" and add["output"] == ["FLOAT"]
        assert add["category"] == "nodegraph/core"
        prompt = {
            "1": {"class_type": "core.add", "inputs": {"a": 1.0, "b": 2.0}},
            # core.log takes a context: the task's, with its logger
            "3": {"class_type": "core.log", "inputs": {"value": ["1", 0], "message": "sum"}},
            "2": {"class_type": "TestRecord", "inputs": {"value": ["3", 0]}},
        }
        with client.websocket_connect("/ws?clientId=c1") as socket:
            socket.receive_json()
            answer = client.post("/prompt", json={"prompt": prompt, "client_id": "c1"})
            until_done(socket, answer.json()["prompt_id"])
        entry = client.get(f"/history/{answer.json()['prompt_id']}").json()
        assert entry[answer.json()["prompt_id"]]["outputs"] == {"2": {"values": [3.0]}}


def test_without_the_editor_the_root_says_how_to_install_it(settings, monkeypatch):
    monkeypatch.setattr(editor, "static_folder", lambda: None)
    with TestClient(create_app(settings)) as client:
        page = client.get("/")
        assert page.status_code == 200 and "pip install 'nodegraph[editor]'" in page.text


def test_the_editor_keeps_its_settings_and_files_in_the_user_folder(settings):
    with TestClient(create_app(settings)) as client:
        assert client.post("/api/settings", json={"Comfy.A": 1}).status_code == 200
        assert client.get("/api/settings/Comfy.A").json() == 1
        assert client.get("/api/settings").json()["Comfy.A"] == 1
        saved = client.post("/api/userdata/workflows/a.json", content=b'{"nodes": []}')
        assert saved.json() == "workflows/a.json"
        listed = client.get("/api/userdata", params={"dir": "workflows", "recurse": "true"})
        assert listed.json() == ["a.json"]
        assert client.get("/api/userdata/workflows/a.json").content == b'{"nodes": []}'
        assert client.get("/api/userdata/..%2F..%2Fqueue.json").status_code in (403, 404)
        assert client.delete("/api/userdata/workflows/a.json").status_code == 204
        jobs = client.get("/api/jobs", params={"status": "completed", "limit": 5}).json()
        assert jobs["pagination"]["limit"] == 5 and jobs["jobs"] == []


@pytest.mark.integration
def test_a_plain_client_on_a_real_dask_cluster_finds_its_flow_run_on_the_server(
    prefect_server, dask_cluster, tmp_path, registry_v3
):
    config = NodegraphConfig(execution=ExecutionConfig(dask_address=dask_cluster.address))
    settings = ServerSettings(
        state=tmp_path / "state", registry=registry_v3, config=config, strategy="distributed"
    )
    with TestClient(create_app(settings)) as client:
        with client.websocket_connect("/ws?clientId=dask") as socket:
            socket.receive_json()
            answer = client.post("/prompt", json={"prompt": api_prompt(), "client_id": "dask"})
            prompt_id = answer.json()["prompt_id"]
            until_done(socket, prompt_id)
        entry = client.get(f"/history/{prompt_id}").json()[prompt_id]
    assert entry["status"]["status_str"] == "success"
    assert entry["outputs"]["7"] == {"values": [10.0]}
    flow_run_id = entry["nodegraph"]["flow_run_id"]
    with get_client(sync_client=True) as prefect:
        flow_run = prefect.read_flow_run(flow_run_id)
        task_runs = prefect.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    assert flow_run.state.is_completed()
    assert task_runs  # the prompt's nodes, as task runs (fused units count as one)


# -- progress and previews -----------------------------------------------------------


def test_preview_frames_have_comfyuis_binary_layout():
    image = b"\x89PNG-bytes"
    plain = preview_frame(image, "PNG", None)
    assert struct.unpack(">II", plain[:8]) == (1, 2) and plain[8:] == image
    assert struct.unpack(">II", preview_frame(b"\xff\xd8j", "JPEG", None)[:8]) == (1, 1)
    described = preview_frame(image, "PNG", {"node_id": "4", "prompt_id": "p"})
    kind, length = struct.unpack(">II", described[:8])
    assert kind == 4
    assert json.loads(described[8 : 8 + length]) == {
        "node_id": "4",
        "prompt_id": "p",
        "image_type": "image/png",
    }
    assert described[8 + length :] == image


def test_a_packs_progress_bar_reports_to_the_running_nodes_context(registry_v3):
    import logging

    from comfy.utils import ProgressBar

    from nodes.comfy_testing.specific_tests import grey_png

    reported: list[tuple] = []
    context = ExecutionContext(
        "run",
        "7",
        "TestProgressPreview",
        logging.getLogger("test"),
        progress_hook=lambda *args: reported.append(("progress", *args)),
        preview_hook=lambda *args: reported.append(("preview", *args)),
    )
    ProgressBar(2).update(1)  # no node running: nothing to report to, and no error
    assert reported == []
    with running_node(context):
        bar = ProgressBar(2)
        bar.update(1)
        bar.update_absolute(5, preview=("PNG", grey_png(1.0), None))  # capped at the total
    assert reported == [
        ("progress", "7", 1, 2, ""),
        ("progress", "7", 2, 2, ""),
        ("preview", "7", grey_png(1.0), "PNG"),
    ]
    with pytest.raises(ValueError, match="'7' sent a preview as 'GIF'"):
        context.preview(b"GIF89a", "GIF")


@pytest.mark.integration
def test_progress_and_previews_reach_the_client(prefect_server, settings):
    from nodes.comfy_testing.specific_tests import grey_png

    def prompt(value: float) -> dict:
        return {
            "1": {"class_type": "StubFloat", "inputs": {"value": value}},
            "2": {
                "class_type": "TestProgressPreview",
                "inputs": {"value": ["1", 0], "steps": 3, "seconds": 0.0},
            },
            "3": {"class_type": "TestRecord", "inputs": {"value": ["2", 0]}},
        }

    with TestClient(create_app(settings)) as client:
        # a client that announces supports_preview_metadata gets frames of type 4
        with client.websocket_connect("/ws?clientId=editor") as socket:
            socket.receive_json()
            socket.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
            assert socket.receive_json()["data"]["supports_preview_metadata"] is True
            answer = client.post("/prompt", json={"prompt": prompt(0.5), "client_id": "editor"})
            prompt_id = answer.json()["prompt_id"]
            frames: list[bytes] = []
            messages = until_done(socket, prompt_id, frames)
        progress = [m["data"] for m in messages if m["type"] == "progress"]
        assert progress == [
            {"value": step, "max": 3, "node": "2", "prompt_id": prompt_id} for step in (1, 2, 3)
        ]
        states = [m["data"]["nodes"] for m in messages if m["type"] == "progress_state"]
        steps = [(n["2"]["state"], n["2"]["value"], n["2"]["max"]) for n in states if "2" in n]
        assert steps[:4] == [
            ("running", 0, 1),
            ("running", 1, 3),
            ("running", 2, 3),
            ("running", 3, 3),
        ]
        assert steps[-1] == ("finished", 1, 1)
        assert states[-1]["3"]["state"] == "finished" and states[-1]["2"]["prompt_id"] == prompt_id
        assert len(frames) == 3
        for step, frame in enumerate(frames, start=1):
            kind, length = struct.unpack(">II", frame[:8])
            metadata = json.loads(frame[8 : 8 + length])
            assert kind == 4 and metadata["node_id"] == "2" and metadata["prompt_id"] == prompt_id
            assert metadata["image_type"] == "image/png"
            assert frame[8 + length :] == grey_png(step / 3)

        # one that does not gets ComfyUI's older frames: type 1, format 2 (PNG)
        with client.websocket_connect("/ws?clientId=script") as socket:
            socket.receive_json()
            answer = client.post("/prompt", json={"prompt": prompt(0.6), "client_id": "script"})
            frames = []
            until_done(socket, answer.json()["prompt_id"], frames)
        assert [struct.unpack(">II", f[:8]) for f in frames] == [(1, 2)] * 3
        assert frames[-1][8:] == grey_png(1.0)
