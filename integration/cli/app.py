"""The ``nodegraph`` command: run, resume, validate, plan, nodes and schema; deploy,
serve, submit, status and cancel (``integration.cli.remote``).

    $ nodegraph run flows/examples/hello.yaml --input name=Ada
    $ nodegraph validate flows/examples/hello.yaml --json

Exit codes: 0 success; 1 the graph is invalid, its inputs are bad, or a node failed;
2 the command line itself is wrong; 3 the run completed partially (nodes were skipped
by a ``skip`` policy); 4 the run halted (a ``halt`` policy; resume it); 5 the run was
cancelled (resume it). With ``--json``
stdout carries exactly one JSON object and progress and logs go to stderr.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console

from integration.cache.factory import cache_folder
from integration.cli import remote, render
from integration.cli.cache import cache_app
from integration.cli.comfy import comfy_app
from integration.cli.failures import NodegraphGroup, print_error, unexpected
from integration.cli.graph import graph_command
from integration.cli.options import (
    ConfigOption,
    FileArgument,
    JsonOption,
    NodesOption,
    OutputOption,
    StrategyOption,
    parse_inputs,
)
from integration.cli.options import load_cli_config as _config
from integration.comfy import Signatures
from integration.comfy.validate import check_workflow
from integration.config import NodegraphConfig
from integration.errors import ConfigError, GraphLoadError, NodegraphError
from integration.graph import GraphValidationError, NodeRegistry, bind, load_graph
from integration.graph.model import graph_json_schema
from integration.graph.policy import default_policy
from integration.observability.profile import ProfileReport
from integration.optimize import NodeDurations, optimization_report, optimizer_for
from integration.plan import make_plan
from integration.prefect import flow as runner
from integration.prefect.client import api_configured
from integration.result import RunResult, RunState
from integration.runs import load_record, runs_folder

app = typer.Typer(
    name="nodegraph",
    help="Run typed node graphs as Prefect flows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=NodegraphGroup,
)
app.add_typer(cache_app, name="cache")
app.add_typer(comfy_app, name="comfy")
app.command("graph")(graph_command)
out = Console()
err = Console(stderr=True)


def _fail(message: str, as_json: bool, payload: dict[str, Any] | None = None) -> typer.Exit:
    if as_json:
        print(json.dumps(payload or {"state": "error", "error": message}))
    print_error(message, err)
    return typer.Exit(1)


def _invalid(error: GraphValidationError, as_json: bool) -> typer.Exit:
    if as_json:
        print(json.dumps(error.to_dict()))
    else:
        render.problems(out, error)
    return typer.Exit(1)


@app.command()
def run(
    file: FileArgument,
    strategy: StrategyOption = None,
    processes: Annotated[
        bool | None, typer.Option("--processes/--threads", help="parallel: process pool.")
    ] = None,
    max_workers: Annotated[
        int | None, typer.Option(min=1, help="Pool size; distributed: local workers.")
    ] = None,
    address: Annotated[
        str | None,
        typer.Option("--address", help="distributed: an existing scheduler, tcp://host:port."),
    ] = None,
    input_: Annotated[
        list[str] | None, typer.Option("--input", "-i", help="name=value (repeatable).")
    ] = None,
    output: OutputOption = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Neither read nor write the result cache.")
    ] = False,
    refresh: Annotated[
        bool, typer.Option("--refresh", help="Recompute every node and overwrite the cache.")
    ] = False,
    profile: Annotated[
        bool,
        typer.Option("--profile", help="Measure every node and print the profile."),
    ] = False,
    as_json: JsonOption = False,
    config_file: ConfigOption = None,
    nodes: NodesOption = None,
) -> None:
    """Run a graph as a Prefect flow and print its outputs and a per-node summary."""
    try:
        config = _config(config_file, nodes)
        if profile:
            config.monitoring.profile = True
        if address:
            config.execution.dask_address = address
            strategy = strategy or "distributed"
        registry = NodeRegistry.from_config(config)
        graph = load_graph(file, Signatures.from_registry(registry))  # ComfyUI files too
        inputs = parse_inputs(graph, input_ or [])
    except (ConfigError, GraphLoadError, NodegraphError) as exc:
        raise _fail(str(exc), as_json) from None
    _execute(
        config,
        graph.name,
        as_json,
        lambda runner, progress: runner.run(
            graph,
            inputs=inputs,
            outputs=output,
            strategy=strategy,
            processes=processes,
            max_workers=max_workers,
            registry=registry,
            config=config,
            on_node_finished=progress.update,
            cache=False if no_cache else None,
            refresh=refresh,
            on_node_started=progress.started,
            on_node_progress=progress.hook,
        ),
    )


EXIT_CODES = {
    RunState.COMPLETED: 0,
    RunState.FAILED: 1,
    RunState.PARTIAL: 3,
    RunState.HALTED: 4,
    RunState.CANCELLED: 5,
}
"""The exit code of ``run`` and ``resume`` for each way a run ends."""


def _execute(
    config: NodegraphConfig,
    graph_name: str,
    as_json: bool,
    start: Callable[[Any, Any], RunResult],
) -> None:
    """Run (or resume) with progress, print the result, and exit with its code."""
    _quiet_prefect_console(config)
    if not api_configured():
        # The temporary server's telemetry heartbeat races its own SQLite setup and
        # prints a "database is locked" traceback; it also reaches outside the machine.
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        err.print(
            "No PREFECT_API_URL is set: starting Prefect's temporary local server "
            "(the first start takes several seconds; see the README to use your own).",
            style="dim",
        )
    show_progress = config.monitoring.progress and err.is_terminal
    try:
        with render.NodeProgress(err, enabled=show_progress) as progress:
            result = start(runner, progress)
    except GraphValidationError as exc:
        raise _fail(
            str(exc),
            as_json,
            {"graph": graph_name, "state": "invalid", "error": str(exc), **exc.to_dict()},
        ) from None
    except (NodegraphError, ValueError) as exc:
        raise _fail(
            str(exc), as_json, {"graph": graph_name, "state": "error", "error": str(exc)}
        ) from None
    except Exception as exc:
        # Infrastructure failures (Prefect API unreachable, ...) still end in one JSON
        # object and a one-line message; NODEGRAPH_DEBUG=1 adds the traceback.
        message = unexpected(exc)
        raise _fail(
            message, as_json, {"graph": graph_name, "state": "error", "error": message}
        ) from None
    if as_json:
        print(json.dumps(result.to_dict()))
    else:
        render.run_summary(out, result)
        if result.profile is not None:
            render.profile_table(out, result.profile)
    code = EXIT_CODES.get(RunState(result.state), 1)
    if code:
        raise typer.Exit(code)


@app.command()
def resume(
    run_id: Annotated[str, typer.Argument(help="The run to continue (its flow run id).")],
    strategy: StrategyOption = None,
    as_json: JsonOption = False,
    config_file: ConfigOption = None,
    nodes: NodesOption = None,
) -> None:
    """Continue a halted, failed or crashed run: finished nodes come from the cache."""
    try:
        config = _config(config_file, nodes)
        registry = NodeRegistry.from_config(config)
    except NodegraphError as exc:
        raise _fail(str(exc), as_json) from None
    _execute(
        config,
        run_id,
        as_json,
        lambda runner, progress: runner.resume(
            run_id,
            strategy=strategy,
            registry=registry,
            config=config,
            on_node_finished=progress.update,
        ),
    )


@app.command("profile")
def show_profile(
    run_id: Annotated[str, typer.Argument(help="A run recorded with profiling on.")],
    as_json: JsonOption = False,
    config_file: ConfigOption = None,
) -> None:
    """Show the profile of a past run: per-node costs, critical path, top nodes."""
    try:
        config = _config(config_file, None)
        record = load_record(runs_folder(cache_folder(config.caching)), run_id)
    except NodegraphError as exc:
        raise _fail(str(exc), as_json) from None
    data = record.extra.get("profile")
    if data is None:
        raise _fail(
            f"run {run_id} was not profiled; run it with --profile (or monitoring.profile: "
            "true) to record one",
            as_json,
        )
    if as_json:
        print(json.dumps(data))
    else:
        render.profile_table(out, ProfileReport.from_dict(data))


@app.command()
def validate(
    file: FileArgument,
    as_json: JsonOption = False,
    config_file: ConfigOption = None,
    nodes: NodesOption = None,
) -> None:
    """Check a graph without running it: exit 0 when valid, 1 with a report when not."""
    try:
        config = _config(config_file, nodes)
        registry = NodeRegistry.from_config(config)
        graph = load_graph(file, Signatures.from_registry(registry))
        if "comfy" in graph.metadata:
            valid, _ = check_workflow(graph, registry)
            _valid(graph.name, len(valid.prompt), as_json)
            return
        bound = bind(graph, registry)
    except GraphValidationError as exc:
        raise _invalid(exc, as_json) from None
    except GraphLoadError as exc:
        payload = {
            "graph": str(file),
            "valid": False,
            "problems": [
                {
                    "node_id": "<document>",
                    "code": "load_error",
                    "message": f"{where}: {msg}",
                    "details": "",
                }
                for where, msg in exc.problems
            ],
        }
        raise _fail(str(exc), as_json, payload) from None
    except NodegraphError as exc:
        raise _fail(str(exc), as_json) from None
    _valid(bound.name, len(bound.nodes), as_json)


def _valid(name: str, count: int, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"graph": name, "valid": True, "nodes": count, "problems": []}))
    else:
        out.print(f"[green]valid[/]: graph {name!r} with {count} nodes")


@app.command()
def plan(
    file: FileArgument,
    output: OutputOption = None,
    as_json: JsonOption = False,
    config_file: ConfigOption = None,
    nodes: NodesOption = None,
    strategy: StrategyOption = None,
) -> None:
    """Show what a run would execute: the order, the levels that run side by side, the
    critical path, and its tasks (fused chains and levels, batches, lone nodes), each
    with why it was formed or why its node runs alone."""
    try:
        config = _config(config_file, nodes)
        registry = NodeRegistry.from_config(config)
        graph = load_graph(file, Signatures.from_registry(registry))
        if "comfy" in graph.metadata:
            raise NodegraphError(
                f"{file} is a ComfyUI workflow: its nodes are planned as they run (lazy "
                "inputs and expansion decide), so there is no plan to show; use "
                "'nodegraph validate' to check it"
            )
        the_plan = make_plan(bind(graph, registry), output)
        optimizer = optimizer_for(
            the_plan,
            config.execution.fusion,
            default_policy(config),
            NodeDurations(cache_folder(config.caching)),
            config.caching,
            workers=config.execution.max_workers,
        )
        report = optimization_report(optimizer, strategy or config.execution.strategy)
    except GraphValidationError as exc:
        raise _invalid(exc, as_json) from None
    except NodegraphError as exc:
        raise _fail(str(exc), as_json) from None
    if as_json:
        print(json.dumps({**the_plan.to_dict(), "optimizer": report}))
    else:
        render.plan(out, the_plan, report)


@app.command("nodes")
def list_nodes(
    prefix: Annotated[str | None, typer.Argument(help="Only types starting with this.")] = None,
    as_json: JsonOption = False,
    config_file: ConfigOption = None,
    nodes: NodesOption = None,
) -> None:
    """List node types with their description and ports."""
    try:
        registry = NodeRegistry.from_config(_config(config_file, nodes))
    except NodegraphError as exc:
        raise _fail(str(exc), as_json) from None
    types = [t for t in registry if not prefix or t.qualified_name.startswith(prefix)]
    if as_json:
        print(json.dumps([t.describe() for t in types], default=repr))
    else:
        render.node_types(out, types)


@app.command()
def schema(config_file: ConfigOption = None) -> None:
    """Print the JSON Schema of graph documents."""
    _config(config_file, None)  # only checked: the schema is the same for every config
    print(json.dumps(graph_json_schema(), indent=2))


def _quiet_prefect_console(config: NodegraphConfig) -> None:
    # Prefect logs every task run at INFO; the progress bar says the same more briefly.
    # Only the console handler is quieted: the Prefect UI still receives every log.
    os.environ.setdefault(
        "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", config.monitoring.prefect_console_log_level
    )


for command in (remote.deploy, remote.serve, remote.submit, remote.status, remote.cancel):
    app.command()(command)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
