"""``nodegraph comfy``: import and export ComfyUI workflows, list ComfyUI node packs.

    $ nodegraph comfy import workflow.json -o graph.yaml
    $ nodegraph comfy export graph.yaml --format api -o prompt.json
    $ nodegraph comfy nodes path/to/custom_nodes/my_pack

``nodegraph run workflow.json`` runs a ComfyUI file directly; it is told apart from a
nodegraph document by its shape.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
import yaml
from rich.console import Console
from rich.table import Table

from integration.cache.factory import cache_folder
from integration.cli.failures import print_error
from integration.cli.options import (
    ConfigOption,
    JsonOption,
    NodesOption,
    load_cli_config,
    parse_inputs,
)
from integration.comfy import Signatures, import_workflow, to_api, to_ui
from integration.errors import NodegraphError
from integration.graph import NodeRegistry, load_graph
from integration.server import ServerSettings, create_app

comfy_app = typer.Typer(
    help="Import and export ComfyUI workflows; list ComfyUI node packs.",
    no_args_is_help=True,
)
out = Console()
err = Console(stderr=True)

SignaturesOption = Annotated[
    Path | None,
    typer.Option(
        "--signatures",
        help="JSON saved from a ComfyUI install's GET /object_info, for classes whose "
        "packs are not loaded here.",
    ),
]


class ExportFormat(StrEnum):
    api = "api"
    ui = "ui"


def _fail(message: str) -> typer.Exit:
    print_error(message, err)
    return typer.Exit(1)


def _signatures(
    config_file: Path | None, nodes: list[Path] | None, signatures: Path | None
) -> tuple[NodeRegistry, Signatures]:
    config = load_cli_config(config_file, nodes)
    registry = NodeRegistry.from_config(config)
    extra = Signatures.from_file(signatures) if signatures is not None else None
    return registry, Signatures.from_registry(registry, extra)


def _write(data: Any, output: Path | None, as_yaml: bool) -> None:
    text = (
        yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        if as_yaml
        else json.dumps(data, indent=2) + "\n"
    )
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {output}", style="dim")


@comfy_app.command("import")
def import_command(
    workflow: Annotated[Path, typer.Argument(help="A ComfyUI workflow: UI or API JSON.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Graph file (.yaml or .json).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="The graph's name.")] = None,
    signatures: SignaturesOption = None,
    config_file: ConfigOption = None,
    nodes: NodesOption = None,
) -> None:
    """Convert a ComfyUI workflow into a nodegraph document."""
    try:
        _, known = _signatures(config_file, nodes, signatures)
        imported = import_workflow(workflow, known, name=name)
    except NodegraphError as exc:
        raise _fail(str(exc)) from None
    for warning in imported.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    as_yaml = output is None or output.suffix not in (".json",)
    _write(imported.graph.to_document(), output, as_yaml)


@comfy_app.command("export")
def export_command(
    graph: Annotated[Path, typer.Argument(help="A nodegraph document or a ComfyUI file.")],
    format: Annotated[
        ExportFormat, typer.Option("--format", "-f", help="api (POST /prompt) or ui (editor).")
    ] = ExportFormat.api,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="JSON file.")] = None,
    input_: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", help="name=value for graph inputs (repeatable)."),
    ] = None,
    signatures: SignaturesOption = None,
    config_file: ConfigOption = None,
    nodes: NodesOption = None,
) -> None:
    """Write a graph as a ComfyUI workflow."""
    try:
        registry, known = _signatures(config_file, nodes, signatures)
        loaded = load_graph(graph, known)
        values = parse_inputs(loaded, input_ or []) or None
        writer = to_api if format == ExportFormat.api else to_ui
        document = writer(loaded, known, values, registry)
    except NodegraphError as exc:
        raise _fail(str(exc)) from None
    _write(document, output, as_yaml=False)


@comfy_app.command("nodes")
def nodes_command(
    pack: Annotated[
        Path,
        typer.Argument(
            help="A pack folder exporting NODE_CLASS_MAPPINGS (V1) or comfy_entrypoint (V3), "
            "or a folder of them."
        ),
    ],
    as_json: JsonOption = False,
    object_info: Annotated[
        bool, typer.Option("--object-info", help="Print signatures as ComfyUI's /object_info.")
    ] = False,
    config_file: ConfigOption = None,
) -> None:
    """List the ComfyUI classes a pack folder defines, as nodegraph wraps them."""
    registry = NodeRegistry()
    try:
        load_cli_config(config_file, None)  # checked; only PACK is loaded
        registry.load_path(pack)
    except NodegraphError as exc:
        raise _fail(str(exc)) from None
    types = registry.comfy_types()
    if not types:
        raise _fail(
            f"{pack} defines no ComfyUI classes (no NODE_CLASS_MAPPINGS or comfy_entrypoint)"
        )
    if object_info:
        print(json.dumps({n: t.signature.to_object_info() for n, t in types.items()}, indent=2))  # type: ignore[attr-defined]
        return
    if as_json:
        print(json.dumps([t.describe() for t in types.values()], default=repr))
        return
    table = Table("class type", "nodegraph type", "inputs", "outputs", "output node")
    for class_type, node_type in types.items():
        signature = node_type.signature  # type: ignore[attr-defined]
        inputs = ", ".join(
            f"{s.name}: {s.type}{'?' if s.category == 'optional' else ''}"
            for s in signature.visible_inputs()
        )
        outputs = ", ".join(f"out{i} {name}" for i, name in enumerate(signature.return_names))
        table.add_row(
            class_type,
            node_type.qualified_name,
            inputs,
            outputs,
            "yes" if signature.output_node else "",
        )
    out.print(table)
    out.print(f"{len(types)} ComfyUI class(es) from {pack}")


@comfy_app.command("serve")
def serve_command(
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on; loopback unless --listen.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8188,
    listen: Annotated[
        str | None,
        typer.Option("--listen", help="Listen beyond loopback on this address (needs --token)."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="NODEGRAPH_SERVER_TOKEN",
            help="Token every request must send (Bearer, basic auth password, or ?token=).",
        ),
    ] = None,
    strategy: Annotated[
        str | None, typer.Option("--strategy", help="sequential, parallel or distributed.")
    ] = None,
    packs: Annotated[
        list[Path] | None,
        typer.Option("--packs", "--nodes", help="Extra folder of node packs (repeatable)."),
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option(
            "--state",
            help="Folder for the queue, the history and the input/output/temp folders "
            "(default: comfy-server in the cache folder).",
        ),
    ] = None,
    config_file: ConfigOption = None,
) -> None:
    """Serve ComfyUI's HTTP and websocket API: ComfyUI clients queue prompts that run as
    Prefect flows on nodegraph's engine."""
    try:
        config = load_cli_config(config_file, packs)
        settings = ServerSettings(
            state=state or cache_folder(config.caching) / "comfy-server",
            host=listen or host,
            token=token,
            strategy=strategy,
            registry=NodeRegistry.from_config(config),
            config=config,
        )
        settings.check()
        app = create_app(settings)
    except NodegraphError as exc:
        raise _fail(str(exc)) from None
    err.print(f"nodegraph ComfyUI server on http://{settings.host}:{port}")
    err.print(f"queue, history and files in {settings.state}")
    # log_config=None: uvicorn's own logging config would close every handler of the
    # process, Prefect's API log handler among them, and the runs' logs would be lost.
    uvicorn.run(app, host=settings.host, port=port, log_level="warning", log_config=None)
