"""Command-line options shared by every ``nodegraph`` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from integration.config import NodegraphConfig, load_config
from integration.errors import GraphLoadError
from integration.graph.limits import parse_yaml
from integration.graph.model import Graph

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="Config file (default: $NODEGRAPH_CONFIG, ./nodegraph.yaml)."
    ),
]
NodesOption = Annotated[
    list[Path] | None,
    typer.Option("--nodes", help="Extra folder of node packs (repeatable)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
OutputOption = Annotated[
    list[str] | None,
    typer.Option("--output", "-o", help="Output name or node.port (repeatable)."),
]
FileArgument = Annotated[Path, typer.Argument(help="Graph document (YAML or JSON).")]
StrategyOption = Annotated[
    str | None,
    typer.Option(
        "--strategy",
        "-s",
        help="sequential, parallel or distributed (default: the config's; for resume, "
        "the run's own).",
    ),
]


def load_cli_config(path: Path | None, nodes: list[Path] | None) -> NodegraphConfig:
    """The configuration a command runs with: ``--config`` (or the usual search), plus
    the ``--nodes`` folders after the configured ones."""
    config = load_config(path)
    if nodes:
        config.execution.node_paths = [*config.execution.node_paths, *nodes]
    return config


def parse_inputs(graph: Graph, pairs: list[str]) -> dict[str, Any]:
    """``name=value`` pairs; values read as YAML, except for ``str`` inputs."""
    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{pair!r}: write inputs as name=value", param_hint="--input")
        spec = graph.inputs.get(name)
        if spec is not None and spec.type == "str":
            values[name] = raw
            continue
        try:
            values[name] = parse_yaml(raw, f"--input {name}")[0] if raw else ""
        except GraphLoadError:
            values[name] = raw
    return values
