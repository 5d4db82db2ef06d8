"""Cache keys: canonical values, Merkle keys over a whole graph, and their properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from integration.cache.keys import (
    UnhashableValueError,
    graph_keys,
    node_key,
    value_digest,
)
from integration.graph import NodeRegistry, bind, load_graph, node

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=12,
)


def canonical(value):
    """The test's own model of value equality, independent of the implementation."""
    if value is None or isinstance(value, bool):
        return ("const", value)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, float):
        if math.isnan(value):
            return ("float", "nan")
        return ("float", 0.0 if value == 0 else value)
    if isinstance(value, str):
        return ("str", value)
    if isinstance(value, list | tuple):
        return ("list", tuple(canonical(v) for v in value))
    if isinstance(value, dict):
        return ("dict", frozenset((canonical(k), canonical(v)) for k, v in value.items()))
    raise AssertionError(value)


@settings(max_examples=300, deadline=None)
@given(st.lists(json_values, min_size=2, max_size=30))
def test_digests_equal_exactly_when_values_are_equal(values):
    seen: dict[str, object] = {}
    for value in values:
        digest = value_digest(value)
        if digest in seen:
            assert canonical(seen[digest]) == canonical(value), "collision"
        seen[digest] = value
    by_canonical = {}
    for value in values:
        by_canonical.setdefault(canonical(value), set()).add(value_digest(value))
    assert all(len(digests) == 1 for digests in by_canonical.values())


@given(st.dictionaries(st.text(max_size=5), json_values, min_size=2, max_size=6), st.randoms())
def test_mapping_order_does_not_matter(mapping, random):
    items = list(mapping.items())
    random.shuffle(items)
    assert value_digest(dict(items)) == value_digest(mapping)


def test_equal_values_in_every_spelling():
    assert value_digest(-0.0) == value_digest(0.0)
    assert value_digest(float("nan")) == value_digest(-float("nan"))
    assert value_digest((1, 2)) == value_digest([1, 2])
    assert value_digest(np.float64(1.5)) == value_digest(1.5)
    assert value_digest(np.int32(7)) == value_digest(7)
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert value_digest(array) == value_digest(np.asfortranarray(array))
    assert value_digest(array.T) == value_digest(array.T.copy())
    assert value_digest(np.array([0.0, -0.0])) == value_digest(np.array([-0.0, 0.0]))
    big_endian = array.astype(">f4")
    assert value_digest(big_endian) == value_digest(array)


def test_different_values_differ():
    assert value_digest(1) != value_digest(1.0) != value_digest(True)
    assert value_digest("1") != value_digest(1)
    assert value_digest([]) != value_digest({}) != value_digest(None)
    array = np.arange(4)
    assert value_digest(array.astype(np.int32)) != value_digest(array.astype(np.int64))
    assert value_digest(array.reshape(2, 2)) != value_digest(array)
    assert value_digest(b"ab") != value_digest("ab")


def test_unhashable_values_say_how_to_fix():
    with pytest.raises(UnhashableValueError, match="__nodegraph_hash__"):
        value_digest(object())

    class Image:
        def __nodegraph_hash__(self) -> bytes:
            return b"pixels"

    assert value_digest(Image()) == value_digest(Image())


hex_keys = st.text("0123456789abcdef", min_size=64, max_size=64)


@settings(max_examples=200, deadline=None)
@given(
    params=st.dictionaries(st.sampled_from("abcde"), json_values, min_size=1, max_size=5),
    upstream=hex_keys,
    version=st.text(min_size=1, max_size=8),
    fingerprint=st.none() | st.integers() | st.text(max_size=6),
    data=st.data(),
)
def test_key_changes_exactly_when_an_ingredient_changes(
    params, upstream, version, fingerprint, data
):
    def key(params=params, upstream=upstream, version=version, fingerprint=fingerprint):
        inputs = {port: ("value", value_digest(v)) for port, v in params.items()}
        inputs["x"] = ("edge", upstream, "out", None)
        return node_key("core.add", version, inputs, fingerprint)

    base = key()
    assert key() == base  # deterministic
    port = data.draw(st.sampled_from(sorted(params)))
    other = data.draw(json_values.filter(lambda v: canonical(v) != canonical(params[port])))
    assert key(params={**params, port: other}) != base
    assert key(upstream=data.draw(hex_keys.filter(lambda k: k != upstream))) != base
    assert key(version=version + "'") != base
    assert key(fingerprint=data.draw(st.integers().filter(lambda f: f != fingerprint))) != base


# -- whole graphs --------------------------------------------------------------------

CHAIN = {
    "name": "keys",
    "inputs": {"x": {"type": "float", "default": 1.0}},
    "nodes": [
        {"id": "a", "type": "core.add", "params": {"b": 1}},
        {"id": "b", "type": "core.multiply", "params": {"b": 2}},
        {"id": "c", "type": "core.negate"},
        {"id": "a2", "type": "core.add", "params": {"b": 1}},
        {"id": "b2", "type": "core.multiply", "params": {"b": 2}},
    ],
    "edges": [
        {"from": "inputs.x", "to": "a.a"},
        {"from": "a.out", "to": "b.a"},
        {"from": "b.out", "to": "c.a"},
        {"from": "inputs.x", "to": "a2.a"},
        {"from": "a2.out", "to": "b2.a"},
    ],
}


@pytest.fixture(scope="module")
def builtin():
    return NodeRegistry.default()


def keys_of(doc, registry, inputs=None, run_id="r1"):
    bound = bind(load_graph(doc), registry)
    values = {"x": 1.0, **(inputs or {})}
    return graph_keys(bound, values, run_id)


def test_node_ids_never_enter_keys(builtin):
    keys = keys_of(CHAIN, builtin)
    assert keys["a"] == keys["a2"] and keys["b"] == keys["b2"]
    assert len({keys[n].key for n in "abc"}) == 3
    assert all(k.shared for k in keys.values())


def test_a_param_change_changes_that_node_and_its_descendants(builtin):
    before = keys_of(CHAIN, builtin)
    changed = {**CHAIN, "nodes": [dict(n) for n in CHAIN["nodes"]]}
    changed["nodes"][1]["params"] = {"b": 3}
    after = keys_of(changed, builtin)
    assert [n for n in before if before[n] != after[n]] == ["b", "c"]


def test_graph_input_values_join_the_keys(builtin):
    one, two = keys_of(CHAIN, builtin), keys_of(CHAIN, builtin, {"x": 2.0})
    assert all(one[n] != two[n] for n in one)
    assert keys_of(CHAIN, builtin, run_id="other") == one  # content keys ignore the run


@node(cacheable=False)
def clock(tick: int = 0) -> float:
    """Not cacheable."""
    return 0.0


MTIMES = {"/same": 1.0}  # stands in for the file system's modification times


def _mtime(path: str) -> object:
    return MTIMES.get(path, float("nan"))


@node(fingerprint=_mtime)
def read(path: str) -> str:
    """Reads the outside world."""
    return path


def test_uncacheable_nodes_and_nan_fingerprints_scope_keys_to_the_run():
    registry = NodeRegistry()
    registry.register(clock, pack="t")
    registry.register(read, pack="t")
    registry.load_path(NodeRegistry.default().packs["core"].location)
    doc = {
        "name": "scoped",
        "nodes": [
            {"id": "now", "type": "t.clock"},
            {"id": "later", "type": "core.negate"},
            {"id": "file", "type": "t.read", "params": {"path": "/same"}},
            {"id": "gone", "type": "t.read", "params": {"path": "/missing"}},
        ],
        "edges": [{"from": "now.out", "to": "later.a"}],
    }
    first = keys_of(doc, registry, run_id="run-1")
    second = keys_of(doc, registry, run_id="run-2")
    assert first["now"].scope == first["later"].scope == first["gone"].scope == "run"
    assert first["now"] != second["now"] and first["later"] != second["later"]
    assert first["file"].shared and first["file"] == second["file"]
    MTIMES["/same"] = 2.0  # the file changed; the params did not
    try:
        assert keys_of(doc, registry, run_id="run-1")["file"] != first["file"]
    finally:
        MTIMES["/same"] = 1.0
