"""``nodegraph deploy``, ``serve``, ``submit``, ``status`` and ``cancel``: graphs as
Prefect deployments, and runs watched and stopped by id.

    $ nodegraph deploy flows/examples/hello.yaml --name hourly --cron "0 * * * *" --pool local
    $ nodegraph serve flows/examples/hello.yaml --name on-file \\
        --trigger files.landed --match prefect.resource.id=files.inbox \\
        --param "name={{ event.payload.name }}"
    $ nodegraph submit flows/examples/hello.yaml --deployment run-graph/hourly -i name=Ada
    $ nodegraph status RUN_ID
    $ nodegraph cancel RUN_ID
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from integration.cli.failures import print_error
from integration.cli.options import (
    ConfigOption,
    JsonOption,
    NodesOption,
    StrategyOption,
    load_cli_config,
    parse_inputs,
)
from integration.config import NodegraphConfig
from integration.errors import NodegraphError
from integration.observability.metrics import serve_metrics
from integration.prefect.deploy import (
    DeploymentError,
    EventTriggerSpec,
    after_graph,
    graph_deployment,
    parse_match,
    read_graph,
)
from integration.prefect.deploy import serve as serve_deployments
from integration.prefect.submit import RunHandle, RunNotFound
from integration.prefect.submit import cancel as cancel_run
from integration.prefect.submit import status as run_status
from integration.prefect.submit import submit as submit_run

out = Console()
err = Console(stderr=True)

GraphArgument = Annotated[
    str, typer.Argument(help="Graph document: a YAML/JSON path or an fsspec URL (s3://…).")
]
NameOption = Annotated[str, typer.Option("--name", "-n", help="Deployment name.")]
CronOption = Annotated[str | None, typer.Option("--cron", help='Cron schedule, e.g. "0 * * * *".')]
IntervalOption = Annotated[
    float | None, typer.Option("--interval", help="Run every N seconds.", min=0.001)
]
TriggerOption = Annotated[
    list[str] | None,
    typer.Option("--trigger", help="Run on this event name, e.g. files.landed (repeatable)."),
]
MatchOption = Annotated[
    list[str] | None,
    typer.Option(
        "--match",
        help="LABEL=VALUE the triggering event's resource must have (repeatable; applies "
        "to every --trigger).",
    ),
]
AfterOption = Annotated[
    list[str] | None,
    typer.Option("--after", help="Run when this graph completes (repeatable)."),
]
ParamOption = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        "-p",
        help="Graph input NAME=VALUE; a value with {{ }} is templated from the triggering "
        "event, e.g. 'path={{ event.payload.path }}' (repeatable).",
    ),
]
PoolOption = Annotated[
    str | None, typer.Option("--pool", help="Work pool whose workers run the deployment.")
]


def _deployment(
    graph: str,
    name: str,
    cron: str | None,
    interval: float | None,
    trigger: list[str] | None,
    match: list[str] | None,
    after: list[str] | None,
    param: list[str] | None,
    strategy: str | None,
    pool: str | None,
    config: NodegraphConfig,
) -> Any:
    source = read_graph(graph)
    templated = {
        key: value
        for key, _, value in (p.partition("=") for p in param or [])
        if "{{" in value and "}}" in value
    }
    fixed = [p for p in param or [] if p.partition("=")[0] not in templated]
    defaults = parse_inputs(source, fixed)
    if match and not trigger:
        raise DeploymentError("--match filters the events of a --trigger: give one")
    matched = parse_match(match or [])
    triggers = [EventTriggerSpec(event, matched, templated) for event in trigger or []]
    triggers += [after_graph(name_, templated) for name_ in after or []]
    if templated and not triggers:
        raise DeploymentError(
            f"--param {', '.join(templated)}: templated values need a --trigger or --after"
        )
    return graph_deployment(
        graph,
        name=name,
        cron=cron,
        interval=interval,
        triggers=triggers,
        inputs=defaults,
        strategy=strategy,
        work_pool=pool,
        settings=config,
    )


def deploy(
    graph: GraphArgument,
    name: NameOption,
    cron: CronOption = None,
    interval: IntervalOption = None,
    trigger: TriggerOption = None,
    match: MatchOption = None,
    after: AfterOption = None,
    param: ParamOption = None,
    strategy: StrategyOption = None,
    pool: PoolOption = None,
    as_json: JsonOption = False,
    config_file: ConfigOption = None,
    nodes: NodesOption = None,
) -> None:
    """Create or update a deployment of a graph (run by a work pool's workers, or by
    `nodegraph serve`), with optional schedule and event triggers."""
    try:
        config = load_cli_config(config_file, nodes)
        deployment = _deployment(
            graph, name, cron, interval, trigger, match, after, param, strategy, pool, config
        )
        deployment_id = deployment.apply(work_pool_name=pool)
    except (NodegraphError, ValueError) as exc:
        print_error(str(exc), err)
        raise typer.Exit(1) from None
    full_name = f"{deployment.flow_name}/{deployment.name}"
    if as_json:
        print(json.dumps({"id": str(deployment_id), "name": full_name}))
        return
    out.print(f"deployment [bold]{full_name}[/bold] ({deployment_id})")
    if not pool:
        out.print("no --pool: runs start only while `nodegraph serve` serves it")


def serve(
    graph: GraphArgument,
    name: NameOption,
    cron: CronOption = None,
    interval: IntervalOption = None,
    trigger: TriggerOption = None,
    match: MatchOption = None,
    after: AfterOption = None,
    param: ParamOption = None,
    strategy: StrategyOption = None,
    config_file: ConfigOption = None,
    nodes: NodesOption = None,
) -> None:
    """Serve a graph's deployment in the foreground: schedules and triggers run here,
    until interrupted."""
    try:
        config = load_cli_config(config_file, nodes)
        deployment = _deployment(
            graph, name, cron, interval, trigger, match, after, param, strategy, None, config
        )
    except (NodegraphError, ValueError) as exc:
        print_error(str(exc), err)
        raise typer.Exit(1) from None
    if config.monitoring.metrics_port is not None:
        port = serve_metrics(config.monitoring.metrics_port, config.monitoring.metrics_address)
        err.print(f"metrics on http://{config.monitoring.metrics_address}:{port}/metrics")
    serve_deployments(deployment)


def submit(
    graph: GraphArgument,
    deployment: Annotated[
        str,
        typer.Option("--deployment", "-d", help="Deployment to run it through: FLOW/NAME."),
    ],
    input_: Annotated[
        list[str] | None, typer.Option("--input", "-i", help="name=value (repeatable).")
    ] = None,
    strategy: StrategyOption = None,
    as_json: JsonOption = False,
    config_file: ConfigOption = None,
) -> None:
    """Start a run through a deployment and print its id without waiting."""
    try:
        load_cli_config(config_file, None)  # checked; the deployment's own settings apply
        inputs = parse_inputs(read_graph(graph), input_ or [])
        handle = submit_run(graph, inputs, strategy=strategy, deployment=deployment)
    except (NodegraphError, ValueError) as exc:
        print_error(str(exc), err)
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps({"id": handle.id}))
    else:
        out.print(handle.id)


RunIdArgument = Annotated[str, typer.Argument(help="The run's flow run id.")]


def status(
    run_id: RunIdArgument,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the run ends.")] = False,
    as_json: JsonOption = False,
    config_file: ConfigOption = None,
) -> None:
    """Show a run's state and how many nodes are done, failed and cached."""
    try:
        load_cli_config(config_file, None)  # checked; the state comes from the Prefect API
        current = RunHandle(run_id).wait() if wait else run_status(run_id)
    except (RunNotFound, NodegraphError) as exc:
        print_error(str(exc), err)
        raise typer.Exit(1) from None
    _print_status(current, as_json)


def cancel(
    run_id: RunIdArgument,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the run ends.")] = False,
    as_json: JsonOption = False,
    config_file: ConfigOption = None,
) -> None:
    """Cancel a run: no node starts afterwards; finished nodes stay in the cache."""
    try:
        load_cli_config(config_file, None)  # checked; the run is cancelled through the API
        current = cancel_run(run_id)
        if wait:
            current = RunHandle(run_id).wait()
    except (RunNotFound, NodegraphError) as exc:
        print_error(str(exc), err)
        raise typer.Exit(1) from None
    _print_status(current, as_json)


def _print_status(current: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(current.to_dict()))
        return
    table = Table(show_header=False, box=None)
    table.add_row("run", f"{current.name} ({current.id})")
    table.add_row("state", current.state + (f": {current.message}" if current.message else ""))
    if current.nodes is not None:
        table.add_row(
            "nodes",
            f"{current.done}/{current.nodes} done, {current.failed} failed, "
            f"{current.cached} cached",
        )
    out.print(table)
