"""Run ComfyUI workflows as Prefect flows: one task run per node execution.

    >>> import integration
    >>> result = integration.run("tests/fixtures/comfy/lazy_mix_api.json")
    >>> result.outputs["7"]["values"]
    [0.0]

``run_workflow`` imports the file (UI or API format), checks it as ComfyUI does
(``integration.prefect.prompt``), and runs it through the one entry point of every
run (``integration.prefect.flow.run_plan``), in the same flow body as a nodegraph
graph: on the engine's scheduler with the ComfyUI program
(``integration.comfy.execution.ComfyProgram``) and the Prefect backend. Each node
execution is a Prefect task run named ``<class> #<node id>``, submitted through the
strategy's task runner (threads, the warm process pool or Dask), with the configured
retries and timeout. Node results go to the same cache tiers as graph nodes, in the
same entry format (signed Prefect result records) under content keys, so a second run
executes nothing. Like every run, a ComfyUI run is recorded (``nodegraph resume``
after a crash or a kill), emits ``nodegraph.node.*`` and ``nodegraph.graph.*`` events
and artifacts, feeds the metrics, spans and profiles, and can be cancelled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from integration.comfy.signatures import Signatures
from integration.config import NodegraphConfig, load_config
from integration.engine import NodeListener
from integration.graph.model import Graph
from integration.graph.registry import NodeRegistry
from integration.prefect.flow import RunSession, run_plan
from integration.prefect.prompt import (
    ComfyPrompt,
    is_comfy_graph,
    load_comfy_graph,
    prepare_prompt,
)
from integration.result import RunResult

__all__ = [
    "ComfyPrompt",
    "RunSession",
    "is_comfy_graph",
    "load_comfy_graph",
    "prepare_prompt",
    "run_workflow",
]


def run_workflow(
    source: ComfyPrompt | Graph | str | Path | Mapping[str, Any],
    *,
    inputs: Mapping[str, Any] | None = None,
    outputs: Sequence[str] | None = None,
    strategy: str | None = None,
    processes: bool | None = None,
    max_workers: int | None = None,
    registry: NodeRegistry | None = None,
    config: NodegraphConfig | None = None,
    on_node_finished: NodeListener | None = None,
    cache: bool | None = None,
    refresh: bool = False,
    signatures: Signatures | None = None,
    session: RunSession | None = None,
) -> RunResult:
    """Run a ComfyUI workflow (a file, API or UI data, an imported ``Graph``, or a
    ``ComfyPrompt`` that ``prepare_prompt`` checked already).

    ``outputs`` chooses the nodes to run (ComfyUI's partial execution); by default every
    output node runs. Invalid workflows raise ``GraphValidationError`` with ComfyUI's
    ``node_errors`` before anything runs. A failed node does not raise: the result says
    which nodes failed, and the nodes that needed them are ``upstream_failed``.

    ``session`` (instead of ``on_node_finished``) is for a caller that watches the run
    from another thread: its callbacks hear nodes start and finish, and once it is
    ``running`` its ``execution.cancel()`` cancels the run, keeping what finished.
    """
    config = config or load_config()
    registry = registry or NodeRegistry.from_config(config)
    if isinstance(source, ComfyPrompt):
        prompt = source
    else:
        prompt = prepare_prompt(source, registry, signatures, outputs, inputs)
    return run_plan(
        prompt,
        {},
        config,
        strategy=strategy,
        processes=processes,
        max_workers=max_workers,
        cache=cache,
        refresh=refresh,
        session=session or RunSession(listener=on_node_finished),
    )
