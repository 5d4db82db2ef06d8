"""Pictures of graphs: mermaid, DOT, the HTML page (checked in a real headless
Chromium) and PNG screenshots."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

import integration
from integration.cli import app as cli
from integration.graph import NodeRegistry, bind, load_graph
from integration.graph.render import to_dot, to_html
from tests.conftest import require_binary

EXAMPLES = Path(__file__).resolve().parents[1] / "flows" / "examples"
runner = CliRunner()


@pytest.fixture(scope="module")
def branches():
    return bind(load_graph(EXAMPLES / "branches.yaml"), NodeRegistry.default())


def test_dot_has_every_node_and_edge(branches):
    text = to_dot(branches, {"numbers": "completed", "total": "failed"}, {"numbers": 0.0123})
    for node_id in branches.order:
        assert f'"{node_id}" [label=' in text
    edges = sum(
        1 for n in branches.order for b in branches.nodes[n].bindings.values() if b.kind == "edge"
    )
    assert text.count(" -> ") == edges + len(branches.graph.outputs) + sum(
        1 for n in branches.order for b in branches.nodes[n].bindings.values() if b.kind == "input"
    )
    assert 'fillcolor="#fee2e2"' in text  # failed
    assert "12.3 ms" in text


def test_html_draws_every_node_with_state_and_time(branches):
    states = {n: "completed" for n in branches.order}
    states["total"] = "failed"
    page = to_html(branches, states, {"total": 0.5})
    drawn = re.findall(r'data-node="([^"]+)"', page)
    assert sorted(drawn) == sorted(branches.order)
    assert 'data-node="total" data-state="failed" data-seconds="0.500000"' in page
    assert "time: 500.0 ms" in page
    assert "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # self-contained


def _chromium_dom(page: Path) -> tuple[str, list[str]]:
    """The DOM after scripts ran, and every console message the page logged."""
    browser = require_binary("chromium")
    done = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            f"--user-data-dir={page.parent / 'profile'}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return done.stdout, console


def test_the_console_check_catches_errors(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text("<html><body><script>notDefined();</script></body></html>")
    _, console = _chromium_dom(page)
    assert any("notDefined is not defined" in line for line in console)


@pytest.mark.integration
def test_html_after_a_run_renders_in_chromium(prefect_server, tmp_path):
    result = integration.run(EXAMPLES / "branches.yaml", inputs={"n": 5}, cache=True)
    assert result.ok and result.resume_id
    page = tmp_path / "run.html"
    outcome = runner.invoke(
        cli.app,
        [
            "graph",
            str(EXAMPLES / "branches.yaml"),
            "-f",
            "html",
            "--run",
            result.resume_id,
            "-o",
            str(page),
        ],
    )
    assert outcome.exit_code == 0, outcome.output
    dom, console = _chromium_dom(page)
    assert console == []
    assert f'data-rendered-nodes="{len(result.nodes)}"' in dom
    for node_id, report in result.nodes.items():
        assert f'data-node="{node_id}" data-state="{report.state}"' in dom


def test_png_is_a_screenshot(tmp_path):
    require_binary("chromium")
    picture = tmp_path / "graph.png"
    outcome = runner.invoke(
        cli.app, ["graph", str(EXAMPLES / "branches.yaml"), "-f", "png", "-o", str(picture)]
    )
    assert outcome.exit_code == 0, outcome.output
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_graph_command_errors_are_messages(tmp_path):
    outcome = runner.invoke(
        cli.app, ["graph", str(EXAMPLES / "hello.yaml"), "--run", "no-such-run"]
    )
    assert outcome.exit_code == 1 and "no record of run 'no-such-run'" in outcome.output
    outcome = runner.invoke(cli.app, ["graph", str(EXAMPLES / "hello.yaml"), "-f", "png"])
    assert outcome.exit_code == 1 and "needs --output" in outcome.output
