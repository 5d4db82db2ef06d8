"""``nodegraph comfy import|export|nodes``, and ``run``/``validate`` on ComfyUI files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from integration.cli import app as cli

COMFY = Path(__file__).parent / "fixtures" / "comfy"
PACK = Path(__file__).resolve().parents[1] / "nodes" / "comfy_testing"
runner = CliRunner()


def invoke(*args):
    return runner.invoke(cli.app, [str(a) for a in args])


def test_import_then_export_api_gives_back_the_prompt(tmp_path):
    graph_file = tmp_path / "graph.yaml"
    result = invoke("comfy", "import", COMFY / "lazy_mix_api.json", "-o", graph_file)
    assert result.exit_code == 0, result.output
    document = yaml.safe_load(graph_file.read_text())
    assert document["schema"] == "nodegraph/v1" and len(document["nodes"]) == 5
    prompt_file = tmp_path / "prompt.json"
    result = invoke("comfy", "export", graph_file, "--format", "api", "-o", prompt_file)
    assert result.exit_code == 0, result.output
    assert json.loads(prompt_file.read_text()) == json.loads(
        (COMFY / "lazy_mix_api.json").read_text()
    )


def test_export_ui_of_a_ui_workflow(tmp_path):
    out = tmp_path / "ui.json"
    result = invoke("comfy", "export", COMFY / "ui_v1_subgraph.json", "--format", "ui", "-o", out)
    assert result.exit_code == 0, result.output
    ui = json.loads(out.read_text())
    assert ui["version"] == 0.4 and len(ui["nodes"]) == 5 and len(ui["links"]) == 4


def test_import_without_signatures_warns(tmp_path):
    result = invoke("comfy", "import", COMFY / "ui_v04.json", "-o", tmp_path / "g.yaml")
    # no default registry loads the test pack: its types are unknown
    assert result.exit_code == 0 and "no signature for StubFloat" in result.output
    result = invoke(
        "comfy", "import", COMFY / "ui_v04.json", "-o", tmp_path / "g.yaml", "--nodes", PACK
    )
    # the test pack, asked for, signs them
    assert result.exit_code == 0 and "warning" not in result.output
    unknown = json.loads((COMFY / "ui_v04.json").read_text())
    unknown["nodes"][0]["type"] = "SomeOtherPackNode"
    path = tmp_path / "unknown.json"
    path.write_text(json.dumps(unknown))
    result = invoke("comfy", "import", path, "-o", tmp_path / "g2.yaml")
    assert result.exit_code == 0
    assert "no signature for SomeOtherPackNode" in result.output


@pytest.mark.parametrize(
    "content,message",
    [
        ('{"nodes": [', "not JSON"),
        ('{"1": {"class_type": "X", "inputs": {"a": ["7", 0]}}}', "links to node 7"),
        ('{"hello": 1}', "neither a UI workflow"),
    ],
)
def test_broken_files_give_a_message_not_a_traceback(tmp_path, content, message):
    path = tmp_path / "broken.json"
    path.write_text(content)
    result = invoke("comfy", "import", path)
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


def test_nodes_lists_the_wrapped_classes():
    result = invoke("comfy", "nodes", PACK, "--json")
    assert result.exit_code == 0, result.output
    described = {d["comfy"]["class_type"]: d for d in json.loads(result.output)}
    lazy = described["TestLazyMixImages"]
    assert lazy["type"] == "comfy_testing.TestLazyMixImages"
    assert [p["name"] for p in lazy["outputs"]] == ["out0"]
    assert described["TestRecord"]["comfy"]["output_node"] is True
    info = json.loads(invoke("comfy", "nodes", PACK, "--object-info").output)
    assert info["StubImage"]["input"]["required"]["content"] == [["WHITE", "BLACK", "NOISE"]]


def test_nodes_on_a_folder_without_comfy_classes(tmp_path):
    (tmp_path / "plain.py").write_text("X = 1\n")
    result = invoke("comfy", "nodes", tmp_path / "plain.py")
    assert result.exit_code == 1 and "no NODE_CLASS_MAPPINGS" in result.output


def test_validate_reports_comfy_error_types(tmp_path):
    prompt = json.loads((COMFY / "lazy_mix_api.json").read_text())
    prompt["3"]["inputs"]["value"] = 3.0  # above StubMask's max of 1.0
    del prompt["4"]["inputs"]["image2"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(prompt))
    result = invoke("validate", path, "--json", "--nodes", PACK)
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["node_errors"]["3"]["errors"][0]["type"] == "value_bigger_than_max"
    assert report["node_errors"]["4"]["errors"][0]["type"] == "required_input_missing"
    assert invoke("validate", COMFY / "ui_v04.json", "--nodes", PACK).exit_code == 0


@pytest.mark.integration
def test_run_detects_a_comfy_file(prefect_server):
    result = invoke("run", COMFY / "ui_v04.json", "--json", "--no-cache", "--nodes", PACK)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["outputs"]["8"] == {"values": [0.25]}
    ran = {n["node_id"] for n in report["nodes"]}
    assert "13" not in ran  # not needed by any output node
