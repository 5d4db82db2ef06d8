"""Serve the deployments of ``deployments/prefect.yaml`` with ``prefect.serve``: the
same schedules and triggers, run by this process instead of a work pool's workers.

    python deployments/serve.py [--prefect-file deployments/prefect.yaml]

Run it from the repository root (graph paths are relative to it). Each deployment
becomes ``integration.prefect.deploy.graph_deployment`` of its graph, so the Prefect UI
shows the graph's typed inputs as a form, as with ``nodegraph deploy``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml
from prefect import serve
from prefect.deployments.runner import RunnerDeployment

from integration.prefect.deploy import DeploymentError, EventTriggerSpec, graph_deployment

HERE = Path(__file__).resolve().parent


def deployments(prefect_file: Path = HERE / "prefect.yaml") -> list[RunnerDeployment]:
    """The deployments the file defines, ready to serve."""
    document = yaml.safe_load(prefect_file.read_text(encoding="utf-8"))
    return [_deployment(entry, prefect_file) for entry in document.get("deployments", [])]


def _deployment(entry: dict[str, Any], source: Path) -> RunnerDeployment:
    name = entry.get("name", "?")
    if entry.get("entrypoint") != "flows/run_graph.py:run_graph":
        raise DeploymentError(f"{source}: deployment {name!r} does not run run_graph")
    parameters = dict(entry.get("parameters") or {})
    graph = parameters.pop("graph", None)
    if graph is None:
        raise DeploymentError(f"{source}: deployment {name!r} has no graph parameter")
    crons = [s["cron"] for s in entry.get("schedules") or [] if "cron" in s]
    triggers = [
        EventTriggerSpec(
            event,
            dict(trigger.get("match") or {}),
            dict((trigger.get("parameters") or {}).get("inputs") or {}),
        )
        for trigger in entry.get("triggers") or []
        for event in trigger.get("expect") or []
    ]
    return graph_deployment(
        graph,
        name=name,
        cron=crons[0] if crons else None,
        triggers=triggers,
        inputs=parameters.get("inputs"),
        strategy=parameters.get("strategy"),
        config=parameters.get("config"),
        # graph_deployment adds the nodegraph and graph tags itself.
        tags=[t for t in entry.get("tags") or [] if t != "nodegraph" and ":" not in t],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prefect-file", type=Path, default=HERE / "prefect.yaml")
    args = parser.parse_args()
    serve(*deployments(args.prefect_file))


if __name__ == "__main__":
    main()
