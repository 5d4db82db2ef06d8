"""ComfyUI's V3 node API: the ``comfy_api.latest`` shim, dynamic inputs (Autogrow,
DynamicCombo) in workflow files and runs, ``comfy_entrypoint`` packs, V3 object_info.

The workflows in ``fixtures/comfy/v3_dynamic_*`` use every dynamic form the V3 half of
the test pack declares (``nodes/comfy_testing_v3``): Autogrow slots by prefix and by
name, linked and literal; a DynamicCombo with a nested one; a linked widget inside an
option; a control_after_generate value inside an option; hidden values; an async node.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

import integration
from integration.cli import app as cli
from integration.comfy import Signature, Signatures, import_workflow, to_api, to_ui
from integration.comfy.dynamic import expand, nest
from integration.comfy.execution import ComfyProgram, comfy_inline_backend
from integration.comfy.nodes import ComfyNodeType, call_node, install_pack_shims
from integration.comfy.validate import check_workflow, validate_prompt
from integration.config import ExecutionConfig, NodegraphConfig
from integration.engine import Scheduler
from integration.graph import GraphValidationError, NodeRegistry, load_graph
from integration.graph.registry import RegistryError
from integration.graph.validate import bind
from integration.result import RunState
from tests.conftest import COMFY_V3_TEST_PACK
from tests.test_run import STRATEGIES

COMFY = Path(__file__).parent / "fixtures" / "comfy"

install_pack_shims()
from comfy_api.latest import ComfyExtension, _io, io, ui  # noqa: E402
from comfy_api.v0_0_2 import io as io_v0_0_2  # noqa: E402


@pytest.fixture(scope="module")
def signatures(registry_v3) -> Signatures:
    return Signatures.from_registry(registry_v3)


def read(name: str) -> dict:
    return json.loads((COMFY / name).read_text())


# -- the shim ------------------------------------------------------------------------


def test_the_shim_is_what_v3_packs_import():
    assert io_v0_0_2 is io and io.ComfyNode is _io.ComfyNode
    assert not hasattr(io, "DynamicSlot") and hasattr(_io, "DynamicSlot")  # as in ComfyUI
    assert ui.PreviewText("hi").as_dict() == {"text": ("hi",)}
    assert issubclass(ComfyExtension, object)
    from typing_extensions import override

    assert callable(override)


class Described(io.ComfyNode):
    class Mode(str, __import__("enum").Enum):
        fast = "FAST"
        slow = "SLOW"

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Described",
            display_name="Described node",
            category="tests",
            inputs=[
                io.Int.Input("seed", default=1, min=0, max=10, control_after_generate=True),
                io.Combo.Input("mode", options=cls.Mode, default=cls.Mode.slow),
                io.String.Input("text"),
                io.MultiType.Input("either", types=[io.Image, io.Mask], optional=True),
                io.Autogrow.Input(
                    "images",
                    template=io.Autogrow.TemplatePrefix(io.Image.Input("image"), "image", 1, 3),
                ),
                io.DynamicCombo.Input(
                    "resize",
                    options=[
                        io.DynamicCombo.Option("none", []),
                        io.DynamicCombo.Option("scale", [io.Float.Input("factor", default=1.0)]),
                    ],
                ),
            ],
            outputs=[io.Image.Output(), io.Int.Output("count", is_output_list=True)],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, **kwargs):
        return io.NodeOutput(None, [1])


def test_v3_inputs_describe_themselves_as_comfyui_does():
    info = Described.GET_NODE_INFO_V1()
    required = info["input"]["required"]
    assert required["seed"] == (
        "INT",
        {"default": 1, "min": 0, "max": 10, "control_after_generate": True},
    )
    assert required["mode"] == (
        "COMBO",
        {"default": "SLOW", "multiselect": False, "options": ["FAST", "SLOW"]},
    )
    assert required["text"] == ("STRING", {"multiline": False})
    assert info["input"]["optional"]["either"] == ("IMAGE,MASK", {})
    assert required["images"] == (
        "COMFY_AUTOGROW_V3",
        {
            "template": {
                "input": {"required": {"image": ("IMAGE", {})}},
                "prefix": "image",
                "min": 1,
                "max": 3,
            }
        },
    )
    assert required["resize"][1]["options"][1] == {
        "key": "scale",
        "inputs": {"required": {"factor": ("FLOAT", {"default": 1.0})}},
    }
    assert info["input"]["hidden"] == {"unique_id": ("UNIQUE_ID",)}
    assert info["output"] == ["IMAGE", "INT"] and info["output_is_list"] == [False, True]
    assert info["output_name"] == ["IMAGE", "count"]
    assert Described.RETURN_TYPES == ["IMAGE", "INT"] and Described.CATEGORY == "tests"


def test_dynamic_inputs_expand_and_nest_as_comfyui_does():
    declared = Described.INPUT_TYPES()
    live = {"seed": 1, "images.image0": "I0", "images.image2": "I2", "resize": "scale",
            "resize.factor": 2.0}  # fmt: skip
    expanded = expand(declared, live)
    assert expanded.category("images.image0") == "required"  # below min
    assert expanded.category("images.image1") == "optional"
    assert expanded.category("resize.factor") == "required"
    assert nest(live, expanded) == {
        "seed": 1,
        "images": {"image0": "I0", "image2": "I2"},
        "resize": {"resize": "scale", "factor": 2.0},
    }
    # no slot present: an empty group; an unknown option: the combo is left out
    bare = expand(declared, {"seed": 1, "resize": "zoom"})
    assert nest({"seed": 1}, bare) == {"seed": 1, "images": {}}
    # check_lazy_status gets each dynamic value with its flat key
    assert nest(live, expanded, tag_keys=True)["images"] == {
        "image0": ("I0", "images.image0"),
        "image2": ("I2", "images.image2"),
    }


class Locked(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Locked",
            inputs=[io.Int.Input("value")],
            outputs=[io.String.Output()],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, value):
        try:
            cls.counter = value
        except AttributeError as exc:
            return io.NodeOutput(f"{cls.hidden.unique_id}/{cls.hidden.prompt}/{exc}")
        return io.NodeOutput("not locked")


class Waits(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="Waits", inputs=[io.Int.Input("value")], outputs=[io.Int.Output()])

    @classmethod
    async def execute(cls, value):
        await asyncio.sleep(0)
        return io.NodeOutput(value + 1)


def test_methods_run_on_a_locked_clone_that_holds_the_hidden_values():
    locked = ComfyNodeType.wrap("Locked", Locked)
    outcome = call_node(locked, "7", {"value": [1], "unique_id": ["7"]})
    shown = outcome.outputs[0][0]
    assert shown.startswith("7/None/") and "Cannot modify class attribute" in shown
    assert not hasattr(Locked, "counter")


def test_async_execute_is_awaited_with_or_without_a_running_loop():
    waits = ComfyNodeType.wrap("Waits", Waits)
    assert call_node(waits, "1", {"value": [1, 2]}).outputs == [[2, 3]]

    async def inside_a_loop():
        return call_node(waits, "1", {"value": [5]}).outputs

    assert asyncio.run(inside_a_loop()) == [[6]]


class BadReturn(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="BadReturn", outputs=[io.Int.Output()])

    @classmethod
    def execute(cls):
        return 5


def test_a_bad_execute_result_names_the_class():
    with pytest.raises(TypeError, match="BadReturn.*must return a NodeOutput"):
        call_node(ComfyNodeType.wrap("BadReturn", BadReturn), "1", {})


# -- packs ---------------------------------------------------------------------------


V1_PACK = """
class Half:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("FLOAT", {"default": 1.0})}}
    RETURN_TYPES = ("FLOAT",)
    FUNCTION = "run"
    def run(self, value):
        return (value / 2,)

NODE_CLASS_MAPPINGS = {"Half": Half}
"""

V3_PACK = """
from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

LOADED = []

class Twice(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="Twice", display_name="Twice it",
                         inputs=[io.Float.Input("value", default=1.0)],
                         outputs=[io.Float.Output()])
    @classmethod
    def execute(cls, value):
        return io.NodeOutput(value * 2)

class Extension(ComfyExtension):
    async def on_load(self):
        LOADED.append(True)
    @override
    async def get_node_list(self):
        assert LOADED, "on_load runs first"
        return [Twice]

def comfy_entrypoint():
    return Extension()
"""


def _packs(tmp_path: Path, **packs: str) -> Path:
    folder = tmp_path / "custom_nodes"
    for name, source in packs.items():
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text(textwrap.dedent(source))
    return folder


def test_a_v3_pack_and_a_v1_pack_in_one_folder_both_load(tmp_path):
    folder = _packs(tmp_path, v1_pack_here=V1_PACK, v3_pack_here=V3_PACK)
    registry = NodeRegistry()
    registry.load_path(folder)
    twice, half = registry.get("Twice"), registry.get("Half")
    assert twice.pack == "v3_pack_here" and half.pack == "v1_pack_here"
    assert twice.signature.display_name == "Twice it"
    assert twice.invoke({"value": 1.5}) == {"out0": 3.0}
    assert half.invoke({"value": 1.5}) == {"out0": 0.75}


def test_a_broken_entrypoint_is_reported_with_its_pack(tmp_path):
    folder = _packs(tmp_path, broken_v3_pack="def comfy_entrypoint():\n    return 42\n")
    with pytest.raises(RegistryError, match="broken_v3_pack.*must return a ComfyExtension"):
        NodeRegistry().load_path(folder)


def test_comfy_nodes_lists_a_v3_pack_and_its_object_info_parses_back(registry_v3):
    runner = CliRunner()
    listed = runner.invoke(cli.app, ["comfy", "nodes", str(COMFY_V3_TEST_PACK), "--json"])
    assert listed.exit_code == 0, listed.output
    assert "TestAutogrowSum" in listed.output
    result = runner.invoke(cli.app, ["comfy", "nodes", str(COMFY_V3_TEST_PACK), "--object-info"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["TestDynamicComboImage"]["input"]["required"]["mode"][0] == "COMFY_DYNAMICCOMBO_V3"
    assert info["TestAutogrowSum"]["input"]["required"]["values"][0] == "COMFY_AUTOGROW_V3"
    for class_type, entry in info.items():
        loaded = registry_v3.find(class_type)
        assert loaded is not None and loaded.v3 is not None
        assert Signature.from_object_info(class_type, entry) == loaded.signature, class_type
    combo = Described.GET_NODE_INFO_V1()
    parsed = Signature.from_object_info("Described", json.loads(json.dumps(combo)))
    assert parsed.input("mode").choices == ("FAST", "SLOW")
    assert parsed.input("either").type == "IMAGE,MASK"
    assert parsed.input("images.image2").type == "IMAGE"
    assert parsed.input("resize.factor").type == "FLOAT"
    assert parsed.input("images.image3") is None  # beyond max


# -- workflow files ------------------------------------------------------------------


EXPECTED_FROM_UI = {
    "3": {"values.value0": ["1", 0], "values.value1": ["1", 0], "scale": 2.0},
    "4": {"numbers.a": ["3", 0], "numbers.b": ["1", 0]},
    "5": {
        "mode": "shifted",
        "mode.image": ["2", 0],
        "mode.shift": "up",
        "mode.shift.amount": 0.25,
        "label": "shifted",
    },
    "6": {
        "mode": "mix",
        "mode.image1": ["2", 0],
        "mode.image2": ["5", 0],
        "mode.factor": ["12", 0],
        "label": "mixed",
    },
    "13": {"mode": "constant", "mode.value": 0.75, "mode.seed": 42, "label": ""},
}


@pytest.mark.parametrize("name", ["v3_dynamic_ui_v04.json", "v3_dynamic_ui_v1.json"])
def test_ui_files_with_dynamic_inputs_import_and_round_trip(signatures, name):
    imported = import_workflow(COMFY / name, signatures)
    assert imported.warnings == []
    prompt = to_api(imported.graph, signatures)
    for node_id, inputs in EXPECTED_FROM_UI.items():
        assert prompt[node_id]["inputs"] == inputs, node_id
    # the seed's control value inside the combo's option is kept, not taken as a value
    assert imported.graph.metadata["comfy"]["nodes"]["13"]["controls"] == {
        "mode.seed": ["randomize"]
    }
    exported = to_ui(imported.graph, signatures)
    again = import_workflow(exported, signatures, name=imported.graph.name).graph
    assert again.to_document() == imported.graph.to_document()
    node13 = next(n for n in exported["nodes"] if n["id"] == 13)
    assert node13["widgets_values"] == ["constant", 0.75, 42, "randomize", ""]
    node3 = next(n for n in exported["nodes"] if n["id"] == 3)
    assert [(i["name"], i.get("label")) for i in node3["inputs"]] == [
        ("values.value0", "value0"),
        ("values.value1", "value1"),
    ]


def test_api_files_with_dynamic_inputs_round_trip_through_graphs_and_ui(signatures):
    prompt = read("v3_dynamic_api.json")
    graph = import_workflow(prompt, signatures).graph
    assert to_api(graph, signatures) == prompt
    assert to_api(graph) == prompt  # named values need no signatures
    # a literal in a socket-only Autogrow slot survives a UI file too
    through_ui = import_workflow(to_ui(graph, signatures), signatures).graph
    assert to_api(through_ui, signatures)["3"]["inputs"] == prompt["3"]["inputs"]


def test_without_signatures_the_inputs_widget_names_name_the_values():
    imported = import_workflow(COMFY / "v3_dynamic_ui_v1.json", Signatures())
    params = {n.id: n.params for n in imported.graph.nodes}
    assert params["5"] == {
        "mode": "shifted",
        "mode.shift": "up",
        "mode.shift.amount": 0.25,
        "label": "shifted",
    }
    assert params["13"] == {"mode": "constant", "mode.value": 0.75, "mode.seed": 42, "label": ""}
    assert params["6"] == {"mode": "mix", "label": "mixed"}  # mode.factor is linked
    assert params["2"] == {"#0": "BLACK", "#1": 512, "#2": 512, "#3": 1}  # lists no names


def test_dotted_ports_only_for_types_that_declare_them(registry):
    document = {
        "schema": "nodegraph/v1",
        "name": "dotted",
        "nodes": [
            {"id": "a", "type": "core.add", "params": {"a": 1, "b": 2}},
            {"id": "b", "type": "core.add", "params": {"a": 1}},
        ],
        "edges": [{"from": "a.result", "to": "b.b.x"}],
    }
    with pytest.raises(GraphValidationError, match="has no input 'b.x'"):
        bind(load_graph(document), registry)


# -- runs ----------------------------------------------------------------------------


EXPECTED_VALUES = {"7": [6.0], "8": [0.125], "9": ["9:0.75"], "11": [0.25]}
"""Outputs of v3_dynamic_ui_*: max(sum(1.5, 1.5) * 2, 1.5); black mixed with black
shifted up by 0.25, half and half; node 9's own id; the mix scaled by 2, awaited."""


@pytest.mark.integration
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_dynamic_workflow_runs_on_each_strategy(prefect_server, registry_v3, strategy):
    result = integration.run(
        COMFY / "v3_dynamic_ui_v1.json", registry=registry_v3, cache=False, **strategy
    )
    assert result.state == RunState.COMPLETED, result.errors
    assert {n: result.outputs[n]["values"] for n in EXPECTED_VALUES} == EXPECTED_VALUES


@pytest.mark.integration
def test_dynamic_workflow_runs_on_a_real_dask_cluster(registry_v3, dask_cluster):
    config = NodegraphConfig(execution=ExecutionConfig(dask_address=dask_cluster.address))
    result = integration.run(
        COMFY / "v3_dynamic_ui_v04.json",
        registry=registry_v3,
        config=config,
        strategy="distributed",
        cache=False,
    )
    assert result.ok, result.errors
    assert result.outputs["7"]["values"] == [6.0]
    assert result.outputs["9"]["values"] == ["9:0.75"]
    assert result.outputs["11"]["values"] == pytest.approx([0.25])


def test_the_v3_registry_runs_v3_classes_for_the_shared_names(registry, registry_v3):
    for name in ("TestLazyMixImages", "TestCustomIsChanged", "TestMixedExpansionReturns"):
        assert registry_v3.find(name).v3 is not None
        assert registry.find(name).v3 is None


# -- partial validation --------------------------------------------------------------


def _two_outputs_one_invalid() -> dict:
    return {
        "1": {"class_type": "StubFloat", "inputs": {"value": 0.5}},
        "2": {"class_type": "TestRecord", "inputs": {"value": ["1", 0], "label": "good"}},
        "3": {"class_type": "TestAutogrowSum", "inputs": {"values.value1": ["1", 0]}},
        "4": {"class_type": "TestRecord", "inputs": {"value": ["3", 0], "label": "bad"}},
    }


def test_partial_validation_keeps_the_valid_outputs_and_validate_reports_all(registry_v3):
    types = dict(registry_v3.comfy_types())
    prompt = _two_outputs_one_invalid()
    valid = validate_prompt(prompt, types, partial=True)
    assert valid.outputs == ["2"]
    errors = valid.node_errors["3"]["errors"]
    # the Autogrow's first slot is below its min, so required: missing, like "scale"
    assert {(e["type"], e["details"]) for e in errors} == {
        ("required_input_missing", "value0"),
        ("required_input_missing", "scale"),
    }
    assert valid.node_errors["3"]["dependent_outputs"] == ["4"]
    with pytest.raises(GraphValidationError) as everything:
        validate_prompt(prompt, types)
    assert set(everything.value.node_errors) == {"3"}
    prompt["2"]["inputs"]["value"] = ["9", 0]  # no valid output left: raises
    with pytest.raises(GraphValidationError):
        validate_prompt(prompt, types, partial=True)


@pytest.mark.integration
def test_a_prompt_with_one_invalid_output_runs_the_other(prefect_server, registry_v3):
    result = integration.run(_two_outputs_one_invalid(), registry=registry_v3, cache=False)
    assert result.state == RunState.COMPLETED, result.errors
    assert result.outputs["2"]["values"] == [0.5]
    assert "4" not in result.nodes and "3" not in result.nodes
    assert set(result.extra["comfy"]["node_errors"]) == {"3"}


def test_dynamic_workflow_on_the_inline_backend(registry_v3):
    """The same fixture on the engine's scheduler with no server: every dynamic form,
    a lazy V3 node and V3 fingerprints on the inline backend."""
    graph = import_workflow(COMFY / "v3_dynamic_ui_v04.json", Signatures.from_registry(registry_v3))
    valid, types = check_workflow(graph.graph, registry_v3)
    program = ComfyProgram(valid.prompt, valid.outputs, types)
    result = Scheduler(program.plan(), comfy_inline_backend(), {}, program=program).run()
    assert result.state == RunState.COMPLETED, result.errors
    assert {n: result.outputs[n]["values"] for n in EXPECTED_VALUES} == EXPECTED_VALUES


class Blocks(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="Blocks", outputs=[io.Int.Output(), io.Int.Output("other")])

    @classmethod
    def execute(cls):
        return io.NodeOutput(block_execution="not today")


def test_block_execution_blocks_every_output():
    outcome = call_node(ComfyNodeType.wrap("Blocks", Blocks), "1", {})
    assert [type(slot[0]).__name__ for slot in outcome.outputs] == ["ExecutionBlocker"] * 2
    assert outcome.outputs[1][0].message == "not today"


class Checked(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Checked",
            inputs=[io.Int.Input("value", min=0, max=10)],
            outputs=[io.Int.Output()],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, value):
        return True if value % 2 == 0 else f"{value} is odd"

    @classmethod
    def execute(cls, value):
        return io.NodeOutput(value)


def test_validate_inputs_takes_over_the_checks_of_what_it_names():
    types = {"Checked": ComfyNodeType.wrap("Checked", Checked)}
    assert validate_prompt({"1": {"class_type": "Checked", "inputs": {"value": 12}}}, types)
    with pytest.raises(GraphValidationError) as odd:
        validate_prompt({"1": {"class_type": "Checked", "inputs": {"value": 3}}}, types)
    (error,) = odd.value.node_errors["1"]["errors"]
    assert error["type"] == "custom_validation_failed" and "3 is odd" in error["details"]
