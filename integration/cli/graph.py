"""``nodegraph graph``: draw a graph as mermaid, DOT, a self-contained HTML page or a PNG.

    $ nodegraph graph flows/examples/branches.yaml --format html -o branches.html
    $ nodegraph graph flows/examples/branches.yaml --format png --run RUN_ID -o run.png

With ``--run`` the nodes are coloured by the state they ended in that run, and the
HTML page shows each node's time on hover. PNG pictures are screenshots of the HTML
page taken by a headless Chromium (Debian: ``apt-get install -y chromium``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from integration.cache.factory import cache_folder
from integration.cli.failures import print_error
from integration.cli.options import ConfigOption, FileArgument, NodesOption, load_cli_config
from integration.errors import NodegraphError
from integration.graph import NodeRegistry, bind, load_graph
from integration.graph.render import html_page_size, to_dot, to_html, to_mermaid
from integration.runs import load_record, runs_folder

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


class PictureFormat(StrEnum):
    mermaid = "mermaid"
    dot = "dot"
    html = "html"
    png = "png"


class PictureError(NodegraphError):
    """A picture could not be made (no browser for PNG, an unknown run)."""


def find_browser() -> str:
    """The path of a Chromium-like browser, or ``PictureError`` saying how to get one."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    raise PictureError(
        "a PNG is a screenshot taken by headless Chromium, and none was found "
        f"(looked for {', '.join(BROWSERS)}); install it (apt-get install -y chromium) "
        "or use --format html"
    )


def screenshot(html: str, output: Path, size: tuple[int, int], timeout_s: float = 60) -> None:
    """Render ``html`` in headless Chromium and save a PNG of ``size`` (width, height)."""
    browser = find_browser()
    with tempfile.TemporaryDirectory(prefix="nodegraph-picture-") as folder:
        page = Path(folder) / "graph.html"
        page.write_text(html, encoding="utf-8")
        command = [
            browser,
            "--headless",
            "--no-sandbox",  # running as root, as in containers and CI
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={folder}/profile",
            f"--screenshot={output.resolve()}",
            f"--window-size={size[0]},{size[1]}",
            page.as_uri(),
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise PictureError(
                f"Chromium did not finish the screenshot in {timeout_s:g} s"
            ) from None
        if done.returncode != 0 or not output.exists():
            raise PictureError(f"Chromium failed ({done.returncode}): {done.stderr.strip()[-500:]}")


def _run_states(config: Any, run_id: str) -> tuple[dict[str, str], dict[str, float]]:
    record = load_record(runs_folder(cache_folder(config.caching)), run_id)
    nodes = record.extra.get("nodes")
    if nodes is None:
        raise PictureError(
            f"run {run_id} has no node report (it is still running, or it ended before "
            "this nodegraph recorded them)"
        )
    states = {node_id: entry["state"] for node_id, entry in nodes.items()}
    timings = {
        node_id: entry["duration_s"]
        for node_id, entry in nodes.items()
        if entry.get("duration_s") is not None
    }
    return states, timings


def graph_command(
    file: FileArgument,
    format: Annotated[
        PictureFormat, typer.Option("--format", "-f", help="mermaid, dot, html or png.")
    ] = PictureFormat.mermaid,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write.")] = None,
    run: Annotated[
        str | None, typer.Option("--run", help="Colour nodes by how they ended in this run.")
    ] = None,
    config_file: ConfigOption = None,
    nodes: NodesOption = None,
) -> None:
    """Draw a graph: mermaid or DOT text, an HTML page, or a PNG."""
    try:
        config = load_cli_config(config_file, nodes)
        registry = NodeRegistry.from_config(config)
        bound = bind(load_graph(file), registry)
        states, timings = _run_states(config, run) if run else (None, None)
        if format == PictureFormat.mermaid:
            text = to_mermaid(bound, states)
        elif format == PictureFormat.dot:
            text = to_dot(bound, states, timings)
        else:
            text = to_html(bound, states, timings)
        if format == PictureFormat.png:
            if output is None:
                raise PictureError("a PNG needs --output FILE")
            screenshot(text, output, html_page_size(bound))
            return
    except NodegraphError as exc:
        print_error(str(exc))
        raise typer.Exit(1) from None
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
