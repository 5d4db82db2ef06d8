"""The nodegraph command: validate, plan, nodes and schema in-process; run end to end."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from integration.cli import app as cli
from integration.cli.render import NodeProgress
from integration.result import NodeReport, NodeState

ROOT = Path(__file__).resolve().parents[1]
GRAPHS = ROOT / "tests" / "fixtures" / "graphs"
PACKS = ROOT / "tests" / "fixtures" / "packs"
HELLO = ROOT / "flows" / "examples" / "hello.yaml"
runner = CliRunner()


def invoke(*args):
    return runner.invoke(cli.app, [str(a) for a in args])


def test_validate_valid_graph_exits_zero():
    result = invoke("validate", HELLO)
    assert result.exit_code == 0
    assert "valid" in result.stdout and "'hello' with 4 nodes" in result.stdout


def test_validate_reports_every_problem_and_exits_one():
    result = invoke("validate", GRAPHS / "invalid_everything.yaml")
    assert result.exit_code == 1
    assert "15 problems" in result.stdout
    assert "unknown_type" in result.stdout and "input_fed_twice" in result.stdout


def test_validate_json_is_the_same_report_as_data():
    result = invoke("validate", GRAPHS / "invalid_everything.yaml", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["valid"] is False and len(report["problems"]) == 15
    assert report["node_errors"]["typo"]["class_type"] == "core.ad"
    ok = json.loads(invoke("validate", HELLO, "--json").stdout)
    assert ok == {"graph": "hello", "valid": True, "nodes": 4, "problems": []}


def test_validate_malformed_document_names_file_and_line():
    path = GRAPHS / "bad_schema.yaml"
    result = invoke("validate", path, "--json")
    assert result.exit_code == 1
    messages = [p["message"] for p in json.loads(result.stdout)["problems"]]
    assert f"{path}:4:5 nodes[0].type: Field required" in messages
    human = invoke("validate", path)
    assert human.exit_code == 1 and "Traceback" not in human.output
    assert "nodes[0].type" in human.output


def test_plan_shows_order_and_levels():
    result = invoke("plan", GRAPHS / "arithmetic.yaml", "--nodes", PACKS, "--json")
    assert result.exit_code == 0
    plan = json.loads(result.stdout)
    assert plan["levels"][0] == ["parsed", "split"]
    assert plan["skipped_as_unneeded"] == ["unused"]
    human = invoke("plan", GRAPHS / "arithmetic.yaml", "--nodes", PACKS, "-o", "total")
    assert "split → scaled → total" in human.stdout


def test_nodes_lists_types_with_descriptions_and_ports():
    result = invoke("nodes", "core.ad", "--json")
    (add,) = json.loads(result.stdout)
    assert add["type"] == "core.add" and add["description"] == "a + b."
    assert [p["name"] for p in add["inputs"]] == ["a", "b"]
    table = invoke("nodes", "arrays.")
    assert "arrays.reduce" in table.stdout and "core.add" not in table.stdout


def test_schema_prints_the_json_schema():
    schema = json.loads(invoke("schema").stdout)
    assert "nodegraph/v1" in schema["title"]


def test_bad_config_is_a_clear_error(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("execution:\n  strategy: warp\n")
    result = invoke("validate", HELLO, "--config", config)
    assert result.exit_code == 1
    assert "execution.strategy" in result.output and "Traceback" not in result.output


def test_progress_bar_counts_nodes():
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=100)
    with NodeProgress(console) as progress:
        for done, node_id in enumerate(["a", "b", "c"], start=1):
            progress.update(NodeReport(node_id, "core.add", NodeState.COMPLETED, 0.1), done, 3)
            progress._progress.refresh()
    assert "3/3" in buffer.getvalue()


def test_a_large_run_summary_lists_only_what_did_not_complete():
    from integration.cli import render
    from integration.result import RunResult

    nodes = {
        f"n{i}": NodeReport(f"n{i}", "core.add", NodeState.COMPLETED, 1e-5) for i in range(150)
    }
    nodes["n7"] = NodeReport("n7", "core.add", NodeState.CACHED, cache_tier="disk")
    nodes["n9"] = NodeReport("n9", "core.divide", NodeState.UPSTREAM_FAILED, reason="upstream")
    buffer = io.StringIO()
    render.run_summary(Console(file=buffer, width=120), RunResult("big", "failed", {}, nodes))
    text = " ".join(buffer.getvalue().split())  # the caption wraps at the table's width
    assert re.search(r"\bn9\b", text) and not re.search(r"\bn(7|8|10)\b", text)
    assert "1 of 150 nodes shown; all: 148 completed, 1 cached, 1 upstream_failed" in text
    done = {n: r for n, r in nodes.items() if r.state == NodeState.COMPLETED}
    buffer = io.StringIO()
    render.run_summary(Console(file=buffer, width=120), RunResult("big", "completed", {}, done))
    assert "0 of 148 nodes shown; all: 148 completed" in buffer.getvalue()
    assert "┃ node" not in buffer.getvalue()  # no empty table


def test_large_outputs_and_problem_lists_are_shortened_with_their_totals():
    from integration.cli import render
    from integration.graph.validate import GraphValidationError, Problem
    from integration.result import RunResult

    # A graph whose every leaf is an output (no ``outputs:``) may have 50,000 of them.
    outputs = {f"out{i}": i for i in range(150)}
    buffer = io.StringIO()
    render.run_summary(Console(file=buffer, width=120), RunResult("wide", "completed", outputs, {}))
    text = buffer.getvalue()
    assert "out99" in text and "out100" not in text
    assert "100 of 150 outputs shown (--json: all)" in " ".join(text.split())

    problems = [Problem(f"n{i}", "type_mismatch", "wrong type") for i in range(120)]
    problems += [Problem(f"m{i}", "input_fed_twice", "fed twice") for i in range(30)]
    buffer = io.StringIO()
    render.problems(Console(file=buffer, width=120), GraphValidationError("wide", problems, {}))
    text = " ".join(buffer.getvalue().split())
    assert "(150 problems)" in text and "n99" in text and "n100" not in text
    assert "100 of 150 problems shown (--json: all): 120 type_mismatch, 30 input_fed_twice" in text


def nodegraph(*args, env=None):
    command = [str(Path(sys.executable).parent / "nodegraph"), *map(str, args)]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )


@pytest.mark.integration
def test_run_json_is_one_documented_object(prefect_server):
    done = nodegraph("run", HELLO, "--input", "name=Ada", "--json")
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert {"graph", "state", "outputs", "nodes"} <= set(payload)
    assert payload["state"] == "completed"
    assert payload["outputs"] == {"message": "HELLO, ADA!", "letters_doubled": 6}
    node = payload["nodes"][0]
    assert {"node_id", "type", "state", "duration_s", "error"} <= set(node)
    assert {"cache_tier", "cache_key"} <= set(node)  # added by the cache, never renamed


@pytest.mark.integration
def test_run_failure_exits_nonzero_with_the_error(prefect_server):
    done = nodegraph("run", GRAPHS / "failing_branch.yaml", "--json", "-s", "parallel")
    assert done.returncode == 1
    payload = json.loads(done.stdout)
    states = {n["node_id"]: n["state"] for n in payload["nodes"]}
    assert states["bad_divide"] == "failed" and states["after_bad"] == "upstream_failed"
    error = next(n["error"] for n in payload["nodes"] if n["node_id"] == "bad_divide")
    assert error["error_type"] == "runtime" and "division by zero" in error["message"]
    assert error["recoverable"] is True and "node_traceback" in error
    human = nodegraph("run", GRAPHS / "failing_branch.yaml")
    assert human.returncode == 1
    assert "bad_divide (core.divide) failed: runtime" in human.stdout
    assert "in divide" in human.stdout and "return a / b" in human.stdout


@pytest.mark.integration
def test_run_summary_table_and_output_selection(prefect_server):
    done = nodegraph(
        "run", GRAPHS / "arithmetic.yaml", "--nodes", PACKS, "-o", "total", "-i", "x=9"
    )
    assert done.returncode == 0, done.stderr
    assert "completed" in done.stdout and "split" in done.stdout
    # 9 = 1 * 5 + 4, so total = 1 * 10 + 4; the outputs table has the row "total | 14"
    assert re.search(r"total\s+\S\s+14\s", done.stdout), done.stdout


@pytest.mark.integration
def test_run_invalid_graph_exits_one_without_traceback(prefect_server):
    done = nodegraph("run", GRAPHS / "cycle.yaml", "--json")
    assert done.returncode == 1
    payload = json.loads(done.stdout)
    assert payload["state"] == "invalid" and payload["problems"][0]["code"] == "cycle"
    assert "Traceback" not in done.stderr
    bad_input = nodegraph("run", HELLO, "--input", "nobody=1")
    assert bad_input.returncode == 1 and "unknown input(s) nobody" in bad_input.stderr


@pytest.mark.integration
def test_run_announces_the_temporary_server(prefect_server, monkeypatch):
    monkeypatch.setattr(cli, "api_configured", lambda: False)
    result = invoke("run", HELLO, "--json")
    assert result.exit_code == 0, result.output
    assert "starting Prefect's temporary local server" in result.stderr
    assert json.loads(result.stdout)["state"] == "completed"
