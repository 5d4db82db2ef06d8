"""ComfyUI compatibility: workflow files, node packs and ComfyUI's execution semantics.

    >>> from integration.comfy import import_workflow, to_api
    >>> graph = import_workflow({"1": {"class_type": "X", "inputs": {"v": 1}}}).graph
    >>> to_api(graph)
    {'1': {'inputs': {'v': 1}, 'class_type': 'X'}}

- ``workflow``: read UI (0.4 and 1, subgraphs included) and API files into a ``Graph``;
  write both formats back.
- ``shapes``: the shape and size checks every reader runs before it uses a field, so
  a broken file is reported by node and field, never with a traceback.
- ``signatures``: what a node class takes and returns, from loaded packs or from a
  ComfyUI install's ``/object_info``.
- ``nodes``: ComfyUI classes as node types; calling one with ComfyUI's list semantics.
- ``validate``: ComfyUI's checks and its ``node_errors`` error types.
- ``execution``: the executor (output nodes as roots, lazy inputs, blockers,
  expansion), which ``integration.prefect.comfy`` runs as a Prefect flow.

Nothing here imports Prefect.
"""

from integration.comfy.signatures import Signature, SignatureError, Signatures
from integration.comfy.workflow import (
    ComfyExportError,
    ComfyWorkflowError,
    Imported,
    import_workflow,
    read_workflow,
    to_api,
    to_ui,
    workflow_format,
)

__all__ = [
    "ComfyExportError",
    "ComfyWorkflowError",
    "Imported",
    "Signature",
    "SignatureError",
    "Signatures",
    "import_workflow",
    "read_workflow",
    "to_api",
    "to_ui",
    "workflow_format",
]
