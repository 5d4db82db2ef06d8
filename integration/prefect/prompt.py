"""ComfyUI prompts as flow runs: what the one flow body needs to run a prompt.

    >>> # prompt = prepare_prompt("tests/fixtures/comfy/lazy_mix_api.json", registry)
    >>> # integration.prefect.flow.run_plan(prompt, {}, config)

A ComfyUI workflow (a UI or API file, API data, or a graph imported from one) is
checked as ComfyUI checks it, then held as a ``ComfyPrompt``: the imported graph (the
document a run record keeps, so that ``nodegraph resume`` runs the same prompt again),
the checked prompt, its roots (the output nodes to run), the node types and the inputs.
The flow body (``integration.prefect.flow``) runs it on the engine's scheduler with
the ComfyUI program (``integration.comfy.execution.ComfyProgram``), exactly as it runs
a nodegraph plan: records and resume, events and artifacts, metrics, spans, profiles,
heartbeats and cancel are the same code.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from integration.comfy.execution import ComfyProgram, ResultStore
from integration.comfy.signatures import Signatures
from integration.comfy.validate import check_workflow
from integration.comfy.workflow import import_workflow
from integration.graph.model import Graph
from integration.graph.nodetype import NodeType
from integration.graph.policy import ErrorPolicy
from integration.graph.registry import NodeRegistry, PackSource

logger = logging.getLogger("nodegraph.comfy")


def is_comfy_graph(graph: Graph, registry: NodeRegistry) -> bool:
    """Whether a graph runs with ComfyUI semantics: it came from a ComfyUI file, or
    one of its nodes is a ComfyUI class."""
    if "comfy" in graph.metadata:
        return True
    comfy_types = registry.comfy_types()
    return any(spec.type in comfy_types for spec in graph.nodes)


def load_comfy_graph(
    source: Graph | str | Path | Mapping[str, Any],
    registry: NodeRegistry,
    signatures: Signatures | None = None,
) -> Graph:
    """A graph from a ComfyUI file or data (or the graph itself)."""
    if isinstance(source, Graph):
        return source
    return import_workflow(source, Signatures.from_registry(registry, signatures)).graph


@dataclass
class ComfyPrompt:
    """A checked ComfyUI prompt, ready to run as a flow (see the module docstring)."""

    graph: Graph
    prompt: dict[str, Any]
    roots: list[str]
    types: dict[str, NodeType]
    inputs: dict[str, Any] = field(default_factory=dict)
    node_errors: dict[str, Any] = field(default_factory=dict)
    """ComfyUI's ``node_errors`` of the outputs that failed validation and do not run."""

    @property
    def name(self) -> str:
        return self.graph.name

    def document(self) -> dict[str, Any]:
        """The graph as a run record keeps it (``load_graph`` reads it back)."""
        return self.graph.model_dump(mode="json", by_alias=True, exclude_none=True)

    def packs(self) -> list[PackSource]:
        """The packs of the prompt's types, which workers load."""
        return list({t.pack_source: None for t in self.types.values() if t.pack_source is not None})

    def program(
        self, run_id: str | None, policy: ErrorPolicy | None, store: ResultStore | None
    ) -> ComfyProgram:
        """A new program for one run (a program holds the state of its run)."""
        return ComfyProgram(
            self.prompt,
            self.roots,
            self.types,
            name=self.name,
            run_id=run_id,
            policy=policy,
            store=store,
            node_errors=self.node_errors,
        )


def prepare_prompt(
    source: Graph | str | Path | Mapping[str, Any],
    registry: NodeRegistry,
    signatures: Signatures | None = None,
    outputs: Sequence[str] | None = None,
    inputs: Mapping[str, Any] | None = None,
) -> ComfyPrompt:
    """Import and check a workflow; ``outputs`` are the node ids to run. As ComfyUI
    queues a prompt, outputs that fail validation are left out (their ``node_errors``
    kept on the prompt, and reported in the run's ``extra``); a workflow with no valid
    output raises ``GraphValidationError`` with ComfyUI's ``node_errors``."""
    graph = load_comfy_graph(source, registry, signatures)
    valid, types = check_workflow(graph, registry, signatures, outputs, inputs, partial=True)
    if valid.rejected is not None:
        logger.warning("%s; the other outputs run", valid.rejected)
    return ComfyPrompt(
        graph, valid.prompt, list(valid.outputs), types, dict(inputs or {}), valid.node_errors
    )
