"""ComfyUI node semantics without Prefect: list mapping, blockers, type matching,
signatures and cache keys."""

from __future__ import annotations

import pytest

from integration.cache.hierarchy import CacheHierarchy
from integration.cache.tiers import MemoryTier
from integration.comfy.execution import ComfyProgram, comfy_inline_backend
from integration.comfy.nodes import ComfyNodeType, call_node, map_over_list, merge_results
from integration.comfy.runtime import ExecutionBlocker, GraphBuilder
from integration.comfy.signatures import Signature
from integration.comfy.validate import types_match
from integration.engine import Scheduler
from integration.result import NodeState


class Pair:
    def add(self, a, b):
        return (a + b,)


def test_map_over_list_reuses_the_last_item_of_shorter_lists():
    assert map_over_list(Pair(), {"a": [1, 2, 3], "b": [10]}, "add") == [(11,), (12,), (13,)]


def test_map_over_list_skips_blocked_calls():
    blocker = ExecutionBlocker(None)
    results = map_over_list(Pair(), {"a": [1, blocker], "b": [1]}, "add")
    assert results == [(2,), blocker]


def test_input_is_list_gets_whole_lists_and_a_blocked_item_blocks_the_call():
    class Count:
        def count(self, items):
            return (len(items),)

    assert map_over_list(Count(), {"items": [1, 2, 3]}, "count", input_is_list=True) == [(3,)]
    blocker = ExecutionBlocker(None)
    assert map_over_list(Count(), {"items": [1, blocker]}, "count", input_is_list=True) == [blocker]


def test_merge_flattens_output_is_list_outputs():
    merged = merge_results([([1, 2], "a"), ([3], "b")], (True, False))
    assert merged == [[1, 2, 3], ["a", "b"]]


@pytest.mark.parametrize(
    "received,expected,ok",
    [
        ("INT", "INT", True),
        ("INT", "*", True),
        ("*", "IMAGE", True),
        ("INT", "FLOAT,INT", True),
        ("IMAGE,MASK", "MASK", True),
        ("INT", "IMAGE,FLOAT", False),
        ("MASK", "IMAGE", False),
        ("COMBO", ["a", "b"], True),
    ],
)
def test_types_match_like_comfyui(received, expected, ok):
    assert types_match(received, expected) is ok


def test_signature_from_object_info_reads_both_combo_styles():
    info = {
        "input": {
            "required": {
                "old": [["x", "y"]],
                "new": ["COMBO", {"options": ["p", "q"], "control_after_generate": True}],
                "seed": ["INT", {"default": 0}],
            },
            "hidden": {"uid": "UNIQUE_ID"},
        },
        "input_order": {"required": ["seed", "old", "new"]},
        "output": ["INT"],
        "output_node": True,
    }
    signature = Signature.from_object_info("Node", info)
    assert [s.name for s in signature.widgets()] == ["seed", "old", "new"]
    assert signature.input("old").choices == ("x", "y")
    assert signature.input("new").choices == ("p", "q")
    assert signature.input("seed").has_control_widget  # a seed gets one unasked
    assert signature.input("new").has_control_widget
    assert not signature.input("old").has_control_widget
    assert signature.hidden() == {"uid": "UNIQUE_ID"}
    assert Signature.from_object_info("Node", signature.to_object_info()) == signature


class Source:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",)}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value):
        return (value,)


class Unique(Source):
    NOT_IDEMPOTENT = True


class Flaky(Source):
    @classmethod
    def IS_CHANGED(cls, value):
        raise OSError("cannot stat the file")


class Sink:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",)}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    def run(self, value):
        return {"ui": {"values": [value]}}


def _types():
    return {
        name: ComfyNodeType.wrap(name, cls)
        for name, cls in {"Source": Source, "Unique": Unique, "Flaky": Flaky, "Sink": Sink}.items()
    }


def _program(g: GraphBuilder, cache=None) -> ComfyProgram:
    prompt = g.finalize()
    roots = [n for n, e in prompt.items() if e["class_type"] == "Sink"]
    return ComfyProgram(prompt, roots, _types(), store=cache.store if cache else None)


def _run(g: GraphBuilder, cache=None):
    def load(key):
        hit = cache.load(key)
        return None if hit is None else (hit.value, hit.tier, 0)

    program = _program(g, cache)
    return Scheduler(
        program.plan(),
        comfy_inline_backend(),
        {},
        cache=cache,
        load_cached=load if cache else None,
        program=program,
    ).run()


def test_identical_nodes_share_a_key_unless_not_idempotent():
    g = GraphBuilder(prefix="")
    a, b = g.node("Source", value=1), g.node("Source", value=1)
    c, d = g.node("Unique", value=1), g.node("Unique", value=1)
    for node in (a, b, c, d):
        g.node("Sink", value=node.out(0))
    program = _program(g)
    assert program.key(a.id).key == program.key(b.id).key
    assert program.key(c.id).key != program.key(d.id).key


def test_is_changed_that_raises_means_always_run():
    g = GraphBuilder(prefix="")
    flaky = g.node("Flaky", value=1)
    sink = g.node("Sink", value=flaky.out(0))
    steady = g.node("Sink", value=g.node("Source", value=2).out(0))
    cache = CacheHierarchy([MemoryTier()])
    first = _run(g, cache)
    second = _run(g, cache)
    assert first.outputs[sink.id] == {"values": [1]}
    assert second.nodes[flaky.id].state == NodeState.COMPLETED  # never served from cache
    assert second.nodes[sink.id].state == NodeState.COMPLETED  # nor what depends on it
    assert second.nodes[steady.id].state == NodeState.CACHED  # the rest is
    assert second.outputs[steady.id] == {"values": [2]}


def test_call_node_reports_verbose_blockers():
    node_type = ComfyNodeType.wrap("Source", Source)
    outcome = call_node(node_type, "1", {"value": [1, ExecutionBlocker("stop here")]})
    assert outcome.outputs[0][0] == 1
    assert isinstance(outcome.outputs[0][1], ExecutionBlocker)
    assert outcome.blocked == ["stop here"]


def test_a_class_without_function_is_refused():
    class Broken:
        @classmethod
        def INPUT_TYPES(cls):
            return {}

        RETURN_TYPES = ()

    with pytest.raises(Exception, match="FUNCTION"):
        ComfyNodeType.wrap("Broken", Broken)
