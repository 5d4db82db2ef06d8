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
- ``nodes``: ComfyUI classes (V1 and V3) as node types; calling one with ComfyUI's list
  semantics; loading packs (``NODE_CLASS_MAPPINGS`` or ``comfy_entrypoint``).
- ``v3``: the ``comfy_api.latest`` shim V3 packs import, and how V3 methods are called.
- ``dynamic``: V3's dynamic inputs (Autogrow, DynamicCombo, DynamicSlot): expanding a
  class's inputs against a prompt's dotted names and nesting the values.
- ``validate``: ComfyUI's checks and its ``node_errors`` error types.
- ``execution``: the ComfyUI program the engine's scheduler runs a prompt with (output
  nodes as roots, lazy inputs, blockers, expansion); ``integration.prefect.comfy``
  runs it as a Prefect flow.

Nothing here imports Prefect. Importing this package registers its pack loader and
its document loader with the graph layer (``integration.graph.loaders``), so registries
load ComfyUI packs and ``load_graph`` reads ComfyUI files; ``import integration`` does it.
"""

from integration.comfy.nodes import install_pack_shims, pack_node_types
from integration.comfy.signatures import Signature, SignatureError, Signatures
from integration.comfy.workflow import (
    ComfyExportError,
    ComfyWorkflowError,
    Imported,
    import_workflow,
    load_document,
    read_workflow,
    to_api,
    to_ui,
    workflow_format,
)
from integration.graph.loaders import (
    DocumentLoader,
    PackLoader,
    register_document_loader,
    register_pack_loader,
)

register_pack_loader(PackLoader("comfyui", pack_node_types, before_import=install_pack_shims))
register_document_loader(DocumentLoader("comfyui", load_document))

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
