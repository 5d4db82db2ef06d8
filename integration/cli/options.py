"""Command-line options shared by every ``nodegraph`` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
