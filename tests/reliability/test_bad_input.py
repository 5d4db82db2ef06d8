"""Bad graph documents and command lines get a clear error, never a traceback, within a
time and memory budget: the regression corpus of inputs that once escaped.

Each file in ``tests/fixtures/fuzz/graphs/`` is one kind of input that used to raise
something other than nodegraph's documented errors (or to cost seconds and gigabytes);
larger cases are built here from short recipes.
"""

from __future__ import annotations

import datetime
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from integration.cli import app as cli
from integration.errors import GraphLoadError, bounded_repr
from integration.graph import Graph, GraphValidationError, bind, load_graph
from integration.graph.limits import MAX_DEPTH
from integration.graph.order import find_cycle
from tests.reliability.support import FIXTURES, assert_no_traceback
from tests.reliability.support import cli as cli_child

CORPUS = FIXTURES / "fuzz" / "graphs"
DOCUMENTED = (GraphLoadError, GraphValidationError)
"""What ``load_graph`` + ``bind`` may raise (README, "The graph format")."""
SECONDS = 5.0
MEGABYTES = 200
MESSAGE_CHARS = 5000

# file -> (the error it must be, a fragment its message must hold)
EXPECTED: dict[str, tuple[type[Exception], str]] = {
    "bool_tag.yaml": (GraphLoadError, "bool_tag.yaml:4:46: invalid YAML: cannot read 'maybe'"),
    "int_tag.yaml": (GraphLoadError, "int_tag.yaml:4:45: invalid YAML: cannot read 'notanint'"),
    "float_tag.yaml": (GraphLoadError, "cannot read 'one'"),
    "int_too_long.yaml": (GraphLoadError, "Exceeds the limit"),
    "deep_json.json": (GraphLoadError, "max nesting depth"),
    "deep_yaml.yaml": (GraphLoadError, "deep_yaml.yaml:4:104: nested deeper than 100 levels"),
    "deep_param_800.json": (GraphLoadError, "node 'v' param 'value' is nested deeper than 100"),
    "timeout_huge.yaml": (GraphLoadError, "nodes[0].on_error.timeout_seconds: Input should be"),
    "timeout_inf.yaml": (GraphLoadError, "finite number (node 'slow')"),
    "retry_delay_huge.yaml": (GraphLoadError, "over the max retry delay"),
    "retry_jitter_nan.yaml": (GraphLoadError, "retry.jitter: Input should be a finite number"),
    "resources_inf.yaml": (GraphLoadError, "resources.cpu_cores: Input should be a finite"),
    "date_param.yaml": (GraphLoadError, "node 'clock' param 'value' is a date"),
    "datetime_metadata.yaml": (GraphLoadError, "metadata.created: the value is a date and time"),
    "set_param.yaml": (GraphLoadError, "node 'bag' param 'value' is a set"),
    "mixed_keys.yaml": (GraphLoadError, "node 'table' param 'value' has a key 1 (int)"),
    "long_key.yaml": (GraphLoadError, "the max key length is 256"),
    "recursive_alias.yaml": (GraphLoadError, "recursive_alias.yaml:4:50: a recursive alias"),
    "laughs_param.yaml": (GraphLoadError, "the max expanded YAML size"),
    "laughs_choices.yaml": (GraphLoadError, "the max expanded YAML size"),
    "laughs_metadata.yaml": (GraphLoadError, "the max expanded YAML size"),
    "merge_bomb.yaml": (GraphLoadError, "the max expanded YAML size"),
}


def _laughs(levels: int = 9) -> list[Any]:
    """10**levels strings behind ``levels`` shared lists: a bomb from Python."""
    value: list[Any] = ["lol"] * 10
    for _ in range(levels):
        value = [value] * 10
    return value


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def _recursive() -> list[Any]:
    value: list[Any] = [1]
    value.append(value)
    return value


def _doc(**fields: Any) -> dict[str, Any]:
    return {"name": "recipe", **fields}


def _node(params: dict[str, Any], type_: str = "core.value", **extra: Any) -> dict[str, Any]:
    return _doc(nodes=[{"id": "n", "type": type_, "params": params, **extra}])


# name -> (source given to load_graph, the error, a fragment of its message)
RECIPES: dict[str, tuple[Callable[[], Any], type[Exception], str]] = {
    "one-line text over 255 characters": (
        lambda: "name: " + "x" * 300,
        GraphLoadError,
        "name: String should have at most 200 characters",
    ),
    "a file name over 255 characters": (
        lambda: "missing-" + "x" * 300,
        GraphLoadError,
        "is no file, and read as YAML it is text",
    ),
    "a NUL byte": (lambda: "name: a\0b", GraphLoadError, "invalid YAML: unacceptable character"),
    "a missing path without an extension": (
        lambda: "no/such/graph",
        GraphLoadError,
        "'no/such/graph' is no file",
    ),
    "a 5,000-deep list in a param": (
        lambda: _node({"value": _nested(5000)}),
        GraphLoadError,
        f"param 'value' is nested deeper than {MAX_DEPTH} levels",
    ),
    "a 5,000-deep list for a typed port": (
        lambda: Graph.model_validate(_node({"a": _nested(5000)}, "core.negate")),
        GraphValidationError,
        "param 'a' [0][0][0][0][0][0][0]",
    ),
    "a bomb in an any-typed param": (
        lambda: _node({"value": _laughs()}),
        GraphLoadError,
        "has more than 2,000,000 values",
    ),
    "a bomb for a typed port": (
        lambda: Graph.model_validate(_node({"a": _laughs(3)}, "core.negate")),
        GraphValidationError,
        "expected float, got list [[[['lol'",
    ),
    "a bomb in metadata": (
        lambda: _doc(metadata={"x": _laughs()}),
        GraphLoadError,
        "metadata.x[9][9][9]: the value has more than 2,000,000 values",
    ),
    "a bomb as choices": (
        lambda: _doc(inputs={"pick": {"type": "list", "default": [], "choices": [_laughs(4)]}}),
        GraphValidationError,
        "must be one of [[[[[['lol'",
    ),
    "a recursive param from Python": (
        lambda: Graph.model_validate(_node({"value": _recursive()})),
        GraphValidationError,
        "param 'value' [1] contains itself",
    ),
    "a date param from Python": (
        lambda: Graph.model_validate(_node({"value": datetime.date(2024, 1, 1)})),
        GraphValidationError,
        "param 'value' is a date",
    ),
    "mixed key types from Python": (
        lambda: _node({"value": {1: "a", 2.5: "b", None: "c"}}),
        GraphLoadError,
        "has a key 1 (int); mapping keys must be text",
    ),
    "an int too large for JSON": (
        lambda: _node({"value": 10**5000}),
        GraphLoadError,
        "an integer too large to write as JSON",
    ),
    "a timeout Python cannot wait for": (
        lambda: _node({"value": 1}, on_error={"timeout_seconds": 1e30}),
        GraphLoadError,
        "less than or equal to 2592000 (node 'n')",
    ),
}


def _measured(make: Callable[[], Any], registry: Any) -> tuple[BaseException | None, float, int]:
    """Load and bind what ``make`` gives; the error, the seconds and the peak bytes."""
    source = make()
    tracemalloc.start()
    started = time.perf_counter()
    caught: BaseException | None = None
    try:
        bind(load_graph(source), registry)
    except BaseException as exc:  # the test is which classes escape
        caught = exc
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return caught, elapsed, peak


def _check(caught: BaseException | None, kind: type[Exception], fragment: str) -> None:
    assert caught is not None, "accepted, but it must be refused"
    assert isinstance(caught, DOCUMENTED), f"{type(caught).__name__}: {bounded_repr(caught, 300)}"
    assert isinstance(caught, kind), f"{type(caught).__name__}: {caught}"
    message = str(caught)
    assert len(message) < MESSAGE_CHARS, f"a message of {len(message):,} characters"
    assert fragment in message, message


CLI_ONLY = {"markup_type.yaml", "json_escape.json"}
"""Corpus files that load fine: they broke the CLI's printing, or were misread."""


@pytest.mark.parametrize("name", sorted(p.name for p in CORPUS.iterdir() if p.name not in CLI_ONLY))
def test_corpus_file_gets_a_documented_error_within_budget(name, registry):
    caught, elapsed, peak = _measured(lambda: CORPUS / name, registry)
    _check(caught, *EXPECTED[name])  # a KeyError here: give the new file an expectation
    assert elapsed < SECONDS and peak < MEGABYTES * 2**20, (elapsed, peak)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_gets_a_documented_error_within_budget(name, registry):
    make, kind, fragment = RECIPES[name]
    caught, elapsed, peak = _measured(make, registry)
    _check(caught, kind, fragment)
    assert elapsed < SECONDS and peak < MEGABYTES * 2**20, (elapsed, peak)


def test_json_text_is_read_as_json():
    # "\/" is a JSON escape that PyYAML refuses: JSON text read as YAML failed here.
    text = (CORPUS / "json_escape.json").read_text()
    assert load_graph(text).description == "a/b é"
    # a YAML flow mapping starts with a brace too, and is still YAML
    assert load_graph("{name: flow, description: plain}").description == "plain"


def test_find_cycle_ignores_candidates_outside_the_cycle():
    # ComfyUI prompts pass every node as a candidate; a source among them raised ValueError.
    predecessors = {"a_source": [], "b": ["a_source", "b"], "c_after": ["b"]}
    assert find_cycle(predecessors, set(predecessors)) == ["b", "b"]
    with pytest.raises(ValueError, match="no cycle"):
        find_cycle({"x": [], "y": ["x"]})


runner = CliRunner()


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("markup_type.yaml", "core.[/x]"),
        ("bool_tag.yaml", "cannot read 'maybe'"),
        ("laughs_choices.yaml", "the max expanded YAML size"),
        ("date_param.yaml", "is a date"),
    ],
)
def test_cli_validate_reports_corpus_files_in_one_line(name, fragment):
    result = runner.invoke(cli.app, ["validate", str(CORPUS / name)])
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.exit_code == 1
    assert fragment in " ".join(result.output.split())
    assert_no_traceback(result.output)


def test_cli_validate_in_a_child_prints_no_traceback():
    # The report is a rich table, and "[/x]" in a message was read as markup.
    done = cli_child("validate", str(CORPUS / "markup_type.yaml"))
    assert done.returncode == 1
    assert "unknown node type 'core.[/x]'" in done.stdout
    assert_no_traceback(done.stdout, done.stderr)


def test_every_command_takes_config():
    group = typer.main.get_command(cli.app)
    missing = []

    def walk(command: Any, path: str) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                walk(sub, f"{path} {name}")
            return
        options = {opt for param in command.params for opt in getattr(param, "opts", [])}
        if not {"--config", "-c"} <= options:
            missing.append(path.strip())

    walk(group, "")
    assert missing == []


def test_status_takes_config(prefect_server, tmp_path):
    config = tmp_path / "nodegraph.yaml"
    config.write_text("execution: {strategy: sequential}\n")
    run_id = "00000000-0000-4000-8000-000000000000"
    result = runner.invoke(cli.app, ["status", run_id, "-c", str(config)])
    assert "No such option" not in result.output
    assert result.exit_code == 1 and run_id in result.output
    assert_no_traceback(result.output)


def test_an_unexpected_error_is_one_line_with_a_hint(monkeypatch):
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(cli, "load_graph", broken)
    monkeypatch.delenv("NODEGRAPH_DEBUG", raising=False)
    result = runner.invoke(cli.app, ["validate", str(CORPUS / "date_param.yaml")])
    assert result.exit_code == 1
    assert "unexpected RuntimeError: boom" in result.output
    assert "NODEGRAPH_DEBUG=1" in result.output
    assert_no_traceback(result.output)


def test_input_values_with_bad_tags_stay_text():
    graph = load_graph(Path(FIXTURES / "graphs" / "arithmetic.yaml"))
    values = cli.parse_inputs(graph, ["x=!!bool maybe", "divisor=" + "[" * 500])
    assert values == {"x": "!!bool maybe", "divisor": "[" * 500}


def test_nodegraph_debug_adds_the_traceback(monkeypatch):
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(cli, "load_graph", broken)
    monkeypatch.setenv("NODEGRAPH_DEBUG", "1")  # also not refused as an unknown setting
    result = runner.invoke(cli.app, ["validate", str(CORPUS / "date_param.yaml")])
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.output
    assert "unexpected RuntimeError: boom" in result.output
