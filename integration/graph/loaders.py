"""Hooks through which other layers teach the graph layer formats it does not know.

    >>> from integration.graph.loaders import document_loaders, pack_loaders
    >>> import integration  # installs the ComfyUI loaders
    >>> [loader.name for loader in pack_loaders()], [l.name for l in document_loaders()]
    (['comfyui'], ['comfyui'])

The graph layer imports no ComfyUI code: ``integration.comfy`` registers a pack loader
(modules exporting ``NODE_CLASS_MAPPINGS``) and a document loader (ComfyUI workflow
files) here when it is imported, and ``import integration`` imports it, so every entry
point (the library, the CLI, process-pool and Dask workers) has them.
"""

from __future__ import annotations

import threading
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from integration.graph.model import Graph
from integration.graph.nodetype import NodeType


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class PackLoader:
    """Loads packs of a kind that another layer defines.

    ``node_types(module)`` gives the types of a pack module of its kind, or ``None``
    when the module is not of its kind; it raises ``NodegraphError`` for a pack of its
    kind that is broken. Its types are also found by their bare name, as documents of
    that kind name them (ComfyUI workflows name a class by its class type).
    ``before_import`` runs before any pack is imported by path (ComfyUI packs import
    ComfyUI's own modules, which it provides).
    """

    name: str
    node_types: Callable[[types.ModuleType], list[NodeType] | None]
    before_import: Callable[[], None] = _nothing


@dataclass(frozen=True)
class DocumentLoader:
    """Reads documents of a format that another layer defines into a ``Graph``.

    ``load(data, source, signatures)`` gives the graph, or ``None`` when ``data`` is
    not of its format; ``source`` names the document (a path, or ``<data>``/``<text>``)
    and ``signatures`` is what the caller of ``load_graph`` passed for it.
    """

    name: str
    load: Callable[[dict[str, Any], str, Any], Graph | None]


_lock = threading.Lock()
_packs: dict[str, PackLoader] = {}
_documents: dict[str, DocumentLoader] = {}


def register_pack_loader(loader: PackLoader) -> None:
    """Add (or, by name, replace) a pack loader."""
    with _lock:
        _packs[loader.name] = loader


def register_document_loader(loader: DocumentLoader) -> None:
    """Add (or, by name, replace) a document loader."""
    with _lock:
        _documents[loader.name] = loader


def pack_loaders() -> list[PackLoader]:
    """The registered pack loaders, in the order they were first registered."""
    return list(_packs.values())


def document_loaders() -> list[DocumentLoader]:
    """The registered document loaders, in the order they were first registered."""
    return list(_documents.values())
