"""Edge transforms: registered conversions, never code."""

from __future__ import annotations

import pytest

from integration.graph.transforms import (
    TransformSpec,
    apply_transform,
    check_spec,
    parse_json_path,
)


@pytest.mark.parametrize(
    ("raw", "value", "expected"),
    [
        ("int", "42", 42),
        ("float", "2.5", 2.5),
        ("str", 7, "7"),
        ("bool", "yes", True),
        ("bool", "off", False),
        ("json", '{"a": 1}', {"a": 1}),
        ("to_json", {"a": 1}, '{"a": 1}'),
        ("list", (1, 2), [1, 2]),
        ({"index": 0}, [5, 6], 5),
        ({"index": -1}, [5, 6], 6),
        ({"key": "name"}, {"name": "ada"}, "ada"),
        ({"json_path": "$.a.b[1]"}, {"a": {"b": [1, 2]}}, 2),
        ({"json_path": "$['odd key'][0]"}, {"odd key": ["x"]}, "x"),
        ({"wrap": "name"}, "ada", {"name": "ada"}),
    ],
)
def test_transforms_convert(raw, value, expected):
    spec = TransformSpec.parse(raw)
    assert check_spec(spec) is None
    assert apply_transform(spec, value) == expected


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("eval", "unknown transform 'eval'"),
        ("index", "needs an argument"),
        ({"int": 3}, "takes no argument"),
        ({"json_path": "a.b"}, "must start with '$'"),
        ({"json_path": "$.a..b"}, "cannot read from position"),
    ],
)
def test_bad_transforms_are_explained(raw, fragment):
    assert fragment in check_spec(TransformSpec.parse(raw))


def test_json_path_parses_keys_and_indexes():
    assert parse_json_path("$.a.b[0]['c d']") == ["a", "b", 0, "c d"]
    assert parse_json_path("$") == []


def test_canonical_form_is_stable():
    assert TransformSpec.parse({"index": 0}).canonical() == ["index", 0]
    assert TransformSpec.parse("int").canonical() == ["int", None]
