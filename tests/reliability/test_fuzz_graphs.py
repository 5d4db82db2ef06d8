"""Property: whatever a graph document holds, ``load_graph`` + ``bind`` either give a
``BoundGraph`` or raise one of nodegraph's documented errors, with a short message,
within a time and memory budget.

Documents start from the test graphs in ``tests/fixtures/graphs/`` and are mutated:
values replaced by wrong types, deep nesting, huge numbers, odd keys, dates, sets;
keys added and removed; and, as text, YAML snippets (tags, aliases, anchors) inserted.
Each goes through ``load_graph`` as data, as YAML text and as JSON text.
"""

from __future__ import annotations

import copy
import datetime
import json
import time
import tracemalloc
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from integration.graph import bind, load_graph
from tests.reliability.support import FIXTURES
from tests.reliability.test_bad_input import DOCUMENTED, MEGABYTES, MESSAGE_CHARS, SECONDS

SEEDS = [
    yaml.safe_load((FIXTURES / "graphs" / name).read_text())
    for name in (
        "arithmetic.yaml",
        "context.yaml",
        "cycle.yaml",
        "failing_branch.yaml",
        "invalid_everything.yaml",
        "runtime_checks.yaml",
        "small_chain.yaml",
    )
]


def _deep(depth: int) -> Any:
    value: Any = 0
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


ODD_KEYS = st.one_of(
    st.integers(-3, 3), st.none(), st.floats(allow_nan=False), st.text(max_size=6), st.booleans()
)
NASTY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.sampled_from([1e30, -1e308, float("inf"), float("nan"), 2**64, 10**400, 10**5000, -0.0]),
    st.text(max_size=20),
    st.sampled_from(
        ["[/x]", "a\0b", "x" * 300, "inputs.x", "a.out", "core.add", "*a", "$.a[99999]"]
    ),
    st.dates(),
    st.datetimes(),
    st.sets(st.integers(0, 9), max_size=3),
    st.integers(90, 140).map(_deep),
    st.dictionaries(ODD_KEYS, st.integers(0, 3), max_size=3),
    st.lists(st.integers(0, 9), max_size=4),
    st.just({"attempts": 50, "backoff_factor": 100}),
    st.just({"timeout_seconds": 1e30}),
)
SNIPPETS = st.sampled_from(
    [
        "x: !!bool maybe",
        "x: !!int notanint",
        "x: !!float one",
        "x: !!timestamp never",
        "x: !!binary '%%%'",
        "x: &a [1, *a]",
        "x: *nowhere",
        "<<: *nowhere",
        "x: !!python/name:os.system",
        "x: !!set {a, b}",
        "x: 2024-01-01",
        "x: " + "[" * 120 + "]" * 120,
        "x: &b [1, 2]\ny: [*b, *b, *b]",
        "\tx: tab",
        "? [a, b]\n: c",
        "%YAML 1.1\n---",
        "---\nsecond: document",
        "x: '\\u0000'",
    ]
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    doc = copy.deepcopy(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)[1:]
        path = paths[draw(st.integers(0, len(paths) - 1))]
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        # copies: st.just() hands out one object, which a later mutation would change
        value = copy.deepcopy(draw(NASTY))
        if action == "replace":
            parent[path[-1]] = value
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(ODD_KEYS)] = value
        else:
            parent.append(value)
    return doc


def _as_yaml(doc: dict[str, Any]) -> str:
    try:
        return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    except (yaml.YAMLError, RecursionError, TypeError):
        return json.dumps(doc, default=str)


def _as_json(doc: dict[str, Any]) -> str:
    try:
        return json.dumps(doc)
    except (TypeError, ValueError, RecursionError):
        return json.dumps(doc, default=str, skipkeys=True)


@st.composite
def sources(draw: st.DrawFn) -> Any:
    doc = draw(documents())
    form = draw(st.sampled_from(["data", "yaml", "json", "yaml+snippet"]))
    if form == "data":
        return doc
    if form == "json":
        return _as_json(doc)
    lines = _as_yaml(doc).splitlines()
    if form == "yaml+snippet":
        where = draw(st.integers(0, len(lines)))
        lines[where:where] = draw(SNIPPETS).splitlines()
    return "\n".join(lines) + "\n"


@settings(
    max_examples=200,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(source=sources())
def test_mutated_documents_raise_only_documented_errors(source, registry):
    tracemalloc.start()
    started = time.perf_counter()
    try:
        bind(load_graph(source), registry)
    except DOCUMENTED as exc:
        assert len(str(exc)) < MESSAGE_CHARS, str(exc)[:2000]
    finally:
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert elapsed < SECONDS and peak < MEGABYTES * 2**20, (elapsed, peak)


def test_the_mutations_reach_the_checks():
    # The fuzzing above is only worth its time if mutated values get past the parser.
    doc = copy.deepcopy(SEEDS[0])
    doc["nodes"][0]["params"] = {"a": datetime.date(2024, 1, 1)}
    assert "is a date" in _load_error(doc)
    assert "is a date" in _load_error(_as_yaml(doc))


def _load_error(source: Any) -> str:
    try:
        load_graph(source)
    except DOCUMENTED as exc:
        return str(exc)
    return ""
