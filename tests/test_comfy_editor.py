"""ComfyUI's own editor, served by ``nodegraph comfy serve``, in headless Chromium: it
boots, lists nodegraph and ComfyUI classes, loads a workflow and queues it through the
page's own ``app``, and the run's ``executed`` messages and history entry come back."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from integration.server import ServerSettings, create_app
from integration.server.editor import static_folder
from tests.browser import Browser, free_port
from tests.conftest import require_binary

pytestmark = pytest.mark.integration

WORKFLOW = Path(__file__).parent / "fixtures" / "comfy" / "v3_dynamic_ui_v04.json"
APP = "window.comfyAPI.app.app"

EDITOR_OWN_ERRORS = ("ComfyApp graph accessed before initialization",)
"""Logged by the editor's bundle itself while it starts (a computed value reads the
graph before the app made it), whatever server it talks to."""


@pytest.fixture
def served(prefect_server, tmp_path, registry_v3):
    if static_folder() is None:
        message = "the editor is not installed (pip install 'nodegraph[editor]')"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI must install it (see .ci/run)")
        pytest.skip(message)
    state = tmp_path / "state"
    (state / "user").mkdir(parents=True)
    # A returning user: no first-run template gallery over the canvas.
    (state / "user" / "comfy.settings.json").write_text(
        json.dumps({"Comfy.TutorialCompleted": True})
    )
    port = free_port()
    app = create_app(ServerSettings(state=state, registry=registry_v3))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, name="editor-test-server")
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=60)


def test_the_editor_boots_lists_classes_and_queues_a_workflow(served, tmp_path):
    browser = Browser(require_binary("chromium"))
    try:
        browser.call("Page.navigate", url=f"{served}/")
        browser.wait_for(f"!!(window.comfyAPI && window.comfyAPI.app && {APP}.vueAppReady)")
        # the node library: a nodegraph type, a V1 and a V3 class of the test pack
        browser.wait_for(
            "['core.add', 'TestRecord', 'TestAutogrowSum']"
            ".every(name => name in window.LiteGraph.registered_node_types)"
        )
        browser.evaluate(
            "window.__executed = []; window.comfyAPI.api.api.addEventListener("
            "'executed', e => window.__executed.push(e.detail)); true"
        )
        loaded = browser.evaluate(
            f"{APP}.loadGraphData({WORKFLOW.read_text()}).then(() => {APP}.graph.nodes.length)"
        )
        assert loaded == 13
        browser.evaluate(f"{APP}.queuePrompt(0, 1).then(() => true)")
        browser.wait_for("window.__executed.length >= 4", timeout_s=120)
        executed = {e["node"]: e["output"] for e in browser.evaluate("window.__executed")}
        assert executed["7"] == {"values": [6.0]} and executed["11"] == {"values": [0.25]}
        prompt_id = browser.evaluate("window.__executed[0].prompt_id")
        entry = httpx.get(f"{served}/api/history/{prompt_id}").json()[prompt_id]
        assert entry["status"]["status_str"] == "success"
        assert entry["outputs"]["9"] == {"values": ["9:0.75"]}
        artifacts = Path(os.environ.get("TEST_ARTIFACTS", tmp_path))
        artifacts.mkdir(parents=True, exist_ok=True)
        browser.evaluate(  # readable nodes: the editor draws no text below about 60%
            f"{APP}.canvas.ds.scale = 0.8; {APP}.canvas.ds.offset = [-120, -150];"
            f"{APP}.canvas.setDirty(true, true); true"
        )
        time.sleep(1)
        shot = browser.screenshot(artifacts / "comfy-editor.png")
        assert shot.stat().st_size > 10_000
        errors = [e for e in browser.console_errors() if not e.startswith(EDITOR_OWN_ERRORS)]
        assert errors == []  # no failed request either: the server answers all it asks
    finally:
        browser.close()
