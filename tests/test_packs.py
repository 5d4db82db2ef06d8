"""The built-in packs: every node is described, and the nodes compute what they say."""

from __future__ import annotations

import numpy as np
import pytest

from integration.graph import NodeRegistry


@pytest.fixture(scope="module")
def builtin():
    return NodeRegistry.default()


def test_every_builtin_node_has_a_one_line_description(builtin):
    for node_type in builtin:
        assert node_type.description, f"{node_type.qualified_name} has no description"
        assert "\n" not in node_type.description


def call(builtin, name, **values):
    return builtin.get(name).invoke(values)["out"]


@pytest.mark.parametrize(
    ("name", "values", "expected"),
    [
        ("core.add", {"a": 2, "b": 3}, 5),
        ("core.divide", {"a": 1, "b": 4}, 0.25),
        ("core.power", {"base": 2, "exponent": 10}, 1024),
        ("core.round", {"a": 2.345, "digits": 2}, 2.35),
        ("core.greater", {"a": 3, "b": 2}, True),
        ("core.and", {"a": True, "b": False}, False),
        ("core.format", {"template": "{a}-{b}", "values": {"a": 1, "b": 2}}, "1-2"),
        ("core.split", {"text": "a b  c"}, ["a", "b", "c"]),
        ("core.join", {"items": [1, 2], "separator": ","}, "1,2"),
        ("core.json_parse", {"text": "[1, 2]"}, [1, 2]),
        ("core.json_dump", {"data": {"b": 1, "a": 2}}, '{"a": 2, "b": 1}'),
        ("core.dict_get", {"data": {"a": 1}, "key": "b", "default": 0}, 0),
        ("core.dict_set", {"data": {"a": 1}, "key": "b", "value": 2}, {"a": 1, "b": 2}),
        ("core.json_path", {"data": {"a": [{"b": 4}]}, "path": "$.a[0].b"}, 4),
        ("core.list_get", {"items": [1, 2, 3], "index": -1}, 3),
        ("core.list_slice", {"items": [1, 2, 3], "start": 1}, [2, 3]),
        ("core.range", {"stop": 4}, [0, 1, 2, 3]),
        ("core.switch", {"condition": False, "if_true": "y", "if_false": "n"}, "n"),
        ("core.select", {"options": ["a", "b"], "index": 1}, "b"),
        ("arrays.sum", {"a": [[1, 2], [3, 4]]}, 10.0),
        ("arrays.mean", {"a": [1, 2, 3]}, 2.0),
        ("arrays.shape", {"a": np.zeros((2, 3))}, [2, 3]),
    ],
)
def test_nodes_compute(builtin, name, values, expected):
    assert call(builtin, name, **values) == expected


def test_array_nodes(builtin):
    a = call(builtin, "arrays.array", values=[1.0, 4.0, 9.0])
    assert isinstance(a, np.ndarray)
    np.testing.assert_allclose(call(builtin, "arrays.sqrt", a=a), [1, 2, 3])
    np.testing.assert_allclose(call(builtin, "arrays.add", a=a, b=1), [2, 5, 10])
    reduced = call(builtin, "arrays.reduce", a=np.ones((2, 3)), op="sum", axis=0)
    np.testing.assert_allclose(reduced, [2, 2, 2])
    first = call(builtin, "arrays.random", shape=[3], seed=1)
    np.testing.assert_array_equal(first, call(builtin, "arrays.random", shape=[3], seed=1))
