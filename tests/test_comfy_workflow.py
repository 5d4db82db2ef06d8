"""ComfyUI workflow files: import (API, UI 0.4, UI 1 with subgraphs), export, round
trips, signatures, and what broken files say."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from integration.comfy import (
    ComfyExportError,
    ComfyWorkflowError,
    Signatures,
    import_workflow,
    to_api,
    to_ui,
    workflow_format,
)
from integration.graph import load_graph

COMFY = Path(__file__).parent / "fixtures" / "comfy"


@pytest.fixture(scope="module")
def signatures(registry) -> Signatures:
    return Signatures.from_registry(registry)


def read(name: str) -> dict:
    return json.loads((COMFY / name).read_text())


EXPECTED_V04_PROMPT = {
    "1": {
        "class_type": "StubImage",
        "inputs": {"content": "BLACK", "height": 512, "width": 512, "batch_size": 1},
        "_meta": {"title": "black"},
    },
    "2": {
        "class_type": "StubImage",
        "inputs": {"content": "WHITE", "height": 512, "width": 512, "batch_size": 1},
    },
    "4": {"class_type": "StubMask", "inputs": {"value": 0.25}},  # from the PrimitiveNode
    "6": {
        "class_type": "TestLazyMixImages",
        # image2 through the Reroute; the bypassed TestCustomIsChanged is gone
        "inputs": {"image1": ["1", 0], "image2": ["2", 0], "mask": ["4", 0]},
    },
    "8": {"class_type": "TestRecord", "inputs": {"label": "mixed", "value": ["6", 0]}},
    # the seed's control_after_generate value is skipped; strength is a converted widget
    "9": {"class_type": "TestSeededNoise", "inputs": {"seed": 1234, "strength": ["16", 0]}},
    # widgets_values given as an object; the link from the muted StubFloat is dropped
    "10": {"class_type": "TestRecord", "inputs": {"label": "noise", "value": ["9", 0]}},
    "13": {"class_type": "StubInt", "inputs": {"value": 3}},
    "16": {"class_type": "StubFloat", "inputs": {"value": 0.75}},
}


def test_formats_are_told_apart_by_shape():
    assert workflow_format(read("ui_v04.json")) == "ui"
    assert workflow_format(read("ui_v1_subgraph.json")) == "ui"
    assert workflow_format(read("lazy_mix_api.json")) == "api"
    assert workflow_format({"prompt": read("lazy_mix_api.json")}) == "api"
    assert workflow_format({"name": "x", "nodes": []}) is None


def test_ui_v04_reduces_like_the_frontend(signatures):
    imported = import_workflow(COMFY / "ui_v04.json", signatures)
    assert imported.format == "ui" and imported.warnings == []
    assert to_api(imported.graph, signatures) == EXPECTED_V04_PROMPT
    ids = [n.id for n in imported.graph.nodes]
    assert "3" not in ids and "5" not in ids  # PrimitiveNode and Reroute resolved
    assert "11" not in ids and "12" not in ids  # notes ignored
    assert "14" not in ids and "15" not in ids  # muted
    assert "7" not in ids  # bypassed


def test_unknown_fields_are_kept(signatures):
    graph = import_workflow(COMFY / "ui_v04.json", signatures).graph
    comfy = graph.metadata["comfy"]
    assert comfy["workflow"]["extra"]["ue_links"] == []
    assert comfy["workflow"]["groups"][0]["title"] == "Sources"
    assert comfy["nodes"]["10"]["ui_extra"] == {"widgets_values_named": {"label": "noise"}}
    assert comfy["nodes"]["9"]["controls"] == {"seed": ["randomize"]}
    ui = to_ui(graph, signatures)
    noise = next(n for n in ui["nodes"] if n["id"] == 9)
    assert noise["widgets_values"][:2] == [1234, "randomize"]
    assert next(n for n in ui["nodes"] if n["id"] == 10)["widgets_values_named"] == {
        "label": "noise"
    }
    assert ui["extra"]["ue_links"] == [] and ui["groups"][0]["title"] == "Sources"


def test_ui_v1_subgraphs_flatten_with_outer_inner_ids(signatures):
    graph = import_workflow(COMFY / "ui_v1_subgraph.json", signatures).graph
    prompt = to_api(graph, signatures)
    assert sorted(prompt) == ["10", "11:1", "11:2:1", "11:2:2", "12"]
    # the instance's widget feeds the subgraph input "amount"
    assert prompt["11:1"]["inputs"] == {"value": 0.8, "image": ["10", 0]}
    # the nested instance promotes its inner StubImage's content widget (proxyWidgets)
    assert prompt["11:2:2"]["inputs"]["content"] == "WHITE"
    assert prompt["11:2:1"]["inputs"] == {"input1": ["11:1", 0], "input2": ["11:2:2", 0]}
    assert prompt["12"]["inputs"]["value"] == ["11:2:1", 0]


def test_api_round_trip_is_an_identity(signatures):
    for prompt in (read("lazy_mix_api.json"), EXPECTED_V04_PROMPT):
        graph = import_workflow(prompt, signatures).graph
        assert to_api(graph, signatures) == prompt
        assert to_api(graph) == prompt  # named values need no signatures


@pytest.mark.parametrize("name", ["ui_v04.json", "ui_v1_subgraph.json"])
def test_ui_round_trip_graph_to_ui_to_graph_is_an_identity(signatures, name):
    first = import_workflow(COMFY / name, signatures).graph
    exported = to_ui(first, signatures)
    second = import_workflow(exported, signatures, name=first.name).graph
    assert second.to_document() == first.to_document()
    assert to_api(second, signatures) == to_api(first, signatures)


def test_ui_export_is_a_loadable_v04_workflow(signatures):
    graph = import_workflow(COMFY / "ui_v1_subgraph.json", signatures).graph
    ui = to_ui(graph, signatures)
    assert ui["version"] == 0.4
    assert ui["last_node_id"] == max(n["id"] for n in ui["nodes"])
    assert ui["last_link_id"] == len(ui["links"])
    nodes = {n["id"]: n for n in ui["nodes"]}
    for node in ui["nodes"]:
        assert {"id", "type", "pos", "size", "flags", "order", "mode", "properties"} <= set(node)
        assert isinstance(node["id"], int)
    for link_id, origin, origin_slot, target, target_slot, _type in ui["links"]:
        assert link_id in nodes[origin]["outputs"][origin_slot]["links"]
        assert nodes[target]["inputs"][target_slot]["link"] == link_id
    # flattened ids are not UI ids: they travel in a property
    assert {n["properties"].get("nodegraph_id") for n in ui["nodes"]} >= {"11:1", "11:2:1"}


def test_layout_goes_left_to_right_by_level(signatures):
    graph = import_workflow(read("lazy_mix_api.json"), signatures).graph
    ui = to_ui(graph, signatures)
    x = {str(n["id"]): n["pos"][0] for n in ui["nodes"]}
    assert x["1"] == x["2"] == x["3"] < x["4"] < x["7"]
    orders = {str(n["id"]): n["order"] for n in ui["nodes"]}
    assert orders["4"] > orders["3"] and orders["7"] > orders["4"]


def test_without_signatures_values_are_kept_by_position(signatures):
    imported = import_workflow(COMFY / "ui_v04.json")
    assert any("StubImage" in w and "by position" in w for w in imported.warnings)
    stub = imported.graph.node("1")
    assert stub.params == {"#0": "BLACK", "#1": 512, "#2": 512, "#3": 1}
    with pytest.raises(ComfyExportError, match="node 1 .*by position"):
        to_api(imported.graph)
    # with the signature given at export, the positions are named
    assert to_api(imported.graph, signatures)["1"]["inputs"] == EXPECTED_V04_PROMPT["1"]["inputs"]
    again = import_workflow(to_ui(imported.graph), name=imported.graph.name).graph
    assert again.to_document() == imported.graph.to_document()


def test_a_signature_file_from_object_info_checks_like_loaded_packs(tmp_path, registry, signatures):
    object_info = {t.name: t.signature.to_object_info() for t in registry.comfy_types().values()}
    path = tmp_path / "object_info.json"
    path.write_text(json.dumps(object_info))
    from_file = Signatures.from_file(path)
    graph = import_workflow(COMFY / "ui_v04.json", from_file).graph
    assert to_api(graph, from_file) == EXPECTED_V04_PROMPT
    bad = read("lazy_mix_api.json")
    bad["4"]["inputs"]["mask"] = ["3", 2]  # StubMask has one output
    with pytest.raises(ComfyWorkflowError, match="output slot 2 of node 3 .*1 output"):
        import_workflow(bad, from_file)


def test_load_graph_reads_comfy_files(signatures):
    graph = load_graph(COMFY / "lazy_mix_api.json", signatures)
    assert graph.name == "lazy_mix_api" and graph.metadata["comfy"]["format"] == "api"
    assert [(e.from_, e.to) for e in graph.edges][:1] == [("1.out0", "4.image1")]


def test_graph_inputs_become_literals_on_export(signatures):
    graph = load_graph(
        {
            "name": "g",
            "inputs": {"level": {"type": "float", "default": 0.5}},
            "nodes": [{"id": "1", "type": "StubMask"}, {"id": "2", "type": "TestRecord"}],
            "edges": [
                {"from": "inputs.level", "to": "1.value"},
                {"from": "1.out0", "to": "2.value"},
            ],
        }
    )
    assert to_api(graph, signatures)["1"]["inputs"] == {"value": 0.5}
    assert to_api(graph, signatures, {"level": 0.9})["1"]["inputs"] == {"value": 0.9}


# -- broken files ---------------------------------------------------------------------


def test_non_json_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"nodes": [')
    with pytest.raises(ComfyWorkflowError, match="not JSON: .* line 1"):
        import_workflow(path)


def test_api_link_to_a_missing_node():
    with pytest.raises(
        ComfyWorkflowError, match=r"node 2 \(TestRecord\) input 'value': links to node 9"
    ):
        import_workflow({"2": {"class_type": "TestRecord", "inputs": {"value": ["9", 0]}}})


def test_ui_link_to_a_missing_node_and_a_bad_slot():
    ui = read("ui_v04.json")
    ui["links"][0] = [1, 99, 0, 6, 0, "IMAGE"]  # origin 99 does not exist
    ui["links"][3] = [4, 4, 3, 6, 2, "MASK"]  # StubMask has one output
    with pytest.raises(ComfyWorkflowError) as caught:
        import_workflow(ui)
    text = str(caught.value)
    assert "link 1 comes from node 99, which does not exist" in text
    assert "link 4 comes from output slot 3 of node 4 (StubMask), which has 1 output(s)" in text


def test_ui_input_naming_a_link_that_is_not_there():
    ui = read("ui_v04.json")
    ui["links"] = [link for link in ui["links"] if link[0] != 4]
    with pytest.raises(ComfyWorkflowError, match="node 6 .* input 'mask': link 4 is not"):
        import_workflow(ui)


def test_cyclic_subgraph_reference():
    ui = read("ui_v1_subgraph.json")
    half = ui["definitions"]["subgraphs"][1]
    # "Half" now contains an instance of "Brighten", which contains "Half"
    half["nodes"][1]["type"] = "a1111111-1111-4111-8111-111111111111"
    with pytest.raises(ComfyWorkflowError, match="subgraph 'Brighten' contains itself"):
        import_workflow(ui)


def test_random_workflows_round_trip(registry_v3):
    """Synthetic graphs of random shapes, V3 nodes with dotted inputs among them,
    survive API and UI round trips."""
    from benchmarks.comfy_import import synthetic_workflow

    signatures = Signatures.from_registry(registry_v3)
    rng = random.Random(7)
    for _ in range(20):
        ui = synthetic_workflow(rng, rng.randint(5, 60))
        first = import_workflow(ui, signatures).graph
        second = import_workflow(to_ui(first, signatures), signatures, name=first.name).graph
        assert second.to_document() == first.to_document()
        prompt = to_api(first, signatures)
        assert to_api(import_workflow(prompt, signatures).graph, signatures) == prompt


def test_links_into_undeclared_inputs_are_kept_with_a_warning(signatures):
    prompt = {
        "1": {"class_type": "StubConstantImage", "inputs": {"value": 0.5}},
        "2": {
            "class_type": "TestVariadicAverage",
            "inputs": {"input1": ["1", 0], "input2": ["1", 0]},
        },
    }
    imported = import_workflow(prompt, signatures)
    assert any("'input2' is not declared" in w for w in imported.warnings)
    assert to_api(imported.graph, signatures) == prompt
