"""Command-line options shared by every ``nodegraph`` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from integration.config import NodegraphConfig, load_config

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
