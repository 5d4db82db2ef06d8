"""The node registry: node types by qualified name, loaded from packs.

    >>> from integration.graph.registry import NodeRegistry
    >>> registry = NodeRegistry.default()
    >>> registry.get("core.add").inputs["a"].type
    'float'

A pack is a folder (``nodes/core/``, a module or package found by path, like ComfyUI's
``custom_nodes/``) or an importable Python module. Every ``NodeType`` the pack's module
exposes joins the registry as ``<pack>.<name>``; a module may set ``PACK = "name"`` to
choose its namespace and ``NODE_TYPES = [...]`` to choose what it exports.

The registry records how each pack was loaded (a ``PackSource``), so another process,
such as a process-pool worker or a Dask worker, loads the same pack again by itself.

Packs of other kinds load through the pack loaders other layers register
(``integration.graph.loaders``). A module that exports ``NODE_CLASS_MAPPINGS`` is a
ComfyUI pack: each class joins as ``<pack>.<class type>`` (see
``integration.comfy.nodes``), and ``get`` also finds it by its bare class type, which
is how ComfyUI workflows name it. As in ComfyUI, a class type defined by two packs
resolves to the one loaded last.

The default registry loads the repository's packs but not its test packs
(``TEST_PACKS``), which tests and users load by path like any other pack.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import sys
import threading
import types
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from integration.errors import NodegraphError
from integration.graph.loaders import pack_loaders
from integration.graph.nodetype import NodeType

if TYPE_CHECKING:
    from integration.config import NodegraphConfig

PACKS_MODULE = "nodegraph_packs"
"""Packs loaded by path are imported as ``nodegraph_packs.<pack>``."""

DEFAULT_NODE_PATH = Path(__file__).resolve().parents[2] / "nodes"
"""The repository's ``nodes/`` folder, whose packs every default registry loads."""

TEST_PACKS = frozenset({"comfy_testing", "comfy_testing_v3"})
"""Packs in ``nodes/`` that only tests use: the default registry leaves them out."""


class RegistryError(NodegraphError):
    """A pack could not be loaded, or two packs claim the same name."""


@dataclass(frozen=True)
class PackSource:
    """How to load a pack again: a file-system path or a module name."""

    kind: Literal["path", "module"]
    location: str
    pack: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.location}"

    def resolve_node_type(self, name: str) -> NodeType:
        """The type ``name`` of this pack, loading it in this process if needed."""
        return resolve_node_type(self, name)


class NodeRegistry:
    """Node types by qualified name, with the packs they came from."""

    def __init__(self) -> None:
        self._types: dict[str, NodeType] = {}
        self._packs: dict[str, PackSource] = {}
        # Types from pack loaders by bare class type, as their documents name them.
        self._class_types: dict[str, NodeType] = {}

    @classmethod
    def default(
        cls, extra_paths: Iterable[str | Path] = (), modules: Iterable[str] = ()
    ) -> NodeRegistry:
        """The repository's packs (not ``TEST_PACKS``) plus ``NODEGRAPH_NODE_PATH``
        folders and extra ones."""
        registry = cls()
        paths = [*_default_packs(), *_env_paths(), *map(Path, extra_paths)]
        seen: set[Path] = set()
        for path in paths:
            resolved = path.resolve()
            if resolved in seen:
                continue
            seen.add(resolved)
            registry.load_path(resolved)
        for module in modules:
            registry.load_module(module)
        return registry

    @classmethod
    def from_config(cls, config: NodegraphConfig) -> NodeRegistry:
        """The default registry plus the config's node paths and modules
        (``execution.node_paths``, ``execution.node_modules``)."""
        return cls.default(
            extra_paths=config.execution.node_paths, modules=config.execution.node_modules
        )

    def __contains__(self, name: object) -> bool:
        return name in self._types or name in self._class_types

    def __iter__(self) -> Iterator[NodeType]:
        return iter(self._types[name] for name in sorted(self._types))

    def __len__(self) -> int:
        return len(self._types)

    @property
    def packs(self) -> dict[str, PackSource]:
        return dict(self._packs)

    def get(self, name: str) -> NodeType:
        """The type named ``name``; ``KeyError`` naming the closest names if unknown."""
        try:
            return self._types[name]
        except KeyError:
            if name in self._class_types:
                return self._class_types[name]
            hint = self.suggest(name)
            suffix = f"; did you mean {', '.join(hint)}?" if hint else ""
            raise KeyError(f"unknown node type {name!r}{suffix}") from None

    def find(self, name: str) -> NodeType | None:
        return self._types.get(name) or self._class_types.get(name)

    def comfy_types(self) -> dict[str, NodeType]:
        """The types pack loaders added (ComfyUI classes), by class type."""
        return dict(self._class_types)

    def suggest(self, name: str, limit: int = 3) -> list[str]:
        """Known names closest to ``name``, best first."""
        names = list(self._types)
        close = difflib.get_close_matches(name, names, n=limit * 3, cutoff=0.5)
        close.sort(key=lambda candidate: not candidate.startswith(name))  # typos drop letters
        short = name.rpartition(".")[2]
        same_short = [n for n in names if n.rpartition(".")[2] == short and n not in close]
        return (close[:limit] + sorted(same_short))[:limit]

    def register(self, node_type: NodeType, pack: str | None = None) -> NodeType:
        """Add one type, namespaced by ``pack`` if it has none yet."""
        if pack is not None and node_type.pack is None:
            node_type.pack = pack
        name = node_type.qualified_name
        existing = self._types.get(name)
        if existing is not None and existing is not node_type:
            raise RegistryError(f"node type {name!r} is registered twice")
        self._types[name] = node_type
        return node_type

    def load_path(self, path: str | Path) -> list[str]:
        """Load every pack in a folder of packs, or the pack that ``path`` itself is.

        A folder holding ``__init__.py`` or a ``.py`` file is one pack; any other folder
        is a folder of packs whose entries (not starting with ``_`` or ``.``) are loaded.
        """
        path = Path(path).resolve()
        if not path.exists():
            raise RegistryError(f"node path {path} does not exist")
        if path.suffix == ".py" or (path / "__init__.py").exists():
            return [self._load_pack_at(path)]
        return [self._load_pack_at(entry) for entry in sorted(path.iterdir()) if _is_pack(entry)]

    def load_module(self, module_name: str) -> str:
        """Load an importable module as a pack."""
        module = importlib.import_module(module_name)
        pack = getattr(module, "PACK", module_name.rpartition(".")[2])
        source = PackSource("module", module_name, pack)
        self._add_pack(source, module)
        return pack

    def _load_pack_at(self, path: Path) -> str:
        pack = path.stem if path.suffix == ".py" else path.name
        source = PackSource("path", str(path), pack)
        module = _import_path(source)
        pack = getattr(module, "PACK", pack)
        self._add_pack(PackSource("path", str(path), pack), module)
        return pack

    def _add_pack(self, source: PackSource, module: types.ModuleType) -> None:
        known = self._packs.get(source.pack)
        if known is not None and known != source:
            raise RegistryError(
                f"pack {source.pack!r} from {source} clashes with the pack of the same "
                f"name from {known}; rename one of them or set PACK in its module"
            )
        self._packs[source.pack] = source
        for loader in pack_loaders():
            try:
                loaded = loader.node_types(module)
            except NodegraphError as exc:
                raise RegistryError(f"pack {source} ({loader.name}): {exc}") from exc
            if loaded is not None:
                self._add_class_types(source, loaded)
                return
        for node_type in _exported_types(module):
            if node_type.pack not in (None, source.pack):
                continue  # imported from another pack, which registers it itself
            node_type.pack = source.pack
            node_type.pack_source = source
            self.register(node_type)
        _remember(source, self)

    def _add_class_types(self, source: PackSource, loaded: list[NodeType]) -> None:
        for node_type in loaded:
            node_type.pack = source.pack
            node_type.pack_source = source
            self.register(node_type)
            self._class_types[node_type.name] = node_type
        _remember(source, self)

    def merge(self, other: NodeRegistry) -> None:
        for node_type in other:
            self.register(node_type)
        self._packs.update(other._packs)
        self._class_types.update(other._class_types)


def _default_packs() -> list[Path]:
    return [
        entry
        for entry in sorted(DEFAULT_NODE_PATH.iterdir())
        if _is_pack(entry) and entry.stem not in TEST_PACKS
    ]


def _is_pack(entry: Path) -> bool:
    if entry.name.startswith(("_", ".")):
        return False
    return entry.suffix == ".py" or (entry / "__init__.py").exists()


def _env_paths() -> list[Path]:
    raw = os.environ.get("NODEGRAPH_NODE_PATH", "")
    return [Path(p) for p in raw.split(os.pathsep) if p]


def _exported_types(module: types.ModuleType) -> list[NodeType]:
    declared = getattr(module, "NODE_TYPES", None)
    if declared is not None:
        return list(declared)
    return [value for value in vars(module).values() if isinstance(value, NodeType)]


_import_lock = threading.Lock()


def _import_path(source: PackSource) -> types.ModuleType:
    """Import a pack by file path as ``nodegraph_packs.<folder name>``, once per process."""
    path = Path(source.location)
    module_name = f"{PACKS_MODULE}.{path.stem if path.suffix == '.py' else path.name}"
    with _import_lock:
        module = sys.modules.get(module_name)
        if module is not None:
            known = getattr(module, "__file__", "") or ""
            if Path(known).resolve().is_relative_to(path) or Path(known).resolve() == path:
                return module
            raise RegistryError(
                f"pack folder {path} is named like the already loaded pack at {known}"
            )
        if PACKS_MODULE not in sys.modules:
            namespace = types.ModuleType(PACKS_MODULE)
            namespace.__path__ = []
            sys.modules[PACKS_MODULE] = namespace
        init = path if path.suffix == ".py" else path / "__init__.py"
        spec = importlib.util.spec_from_file_location(
            module_name,
            init,
            submodule_search_locations=None if path.suffix == ".py" else [str(path)],
        )
        if spec is None or spec.loader is None:
            raise RegistryError(f"cannot import the pack at {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        # ComfyUI packs import ComfyUI's own modules; its pack loader provides them.
        for loader in pack_loaders():
            loader.before_import()
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[module_name]
            raise RegistryError(f"pack at {path} failed to import: {exc!r}") from exc
        return module


_loaded: dict[PackSource, NodeRegistry] = {}


def _remember(source: PackSource, registry: NodeRegistry) -> None:
    _loaded.setdefault(source, registry)


def resolve_pack(source: PackSource) -> NodeRegistry:
    """The types of a pack, loading it in this process if needed (workers do this)."""
    registry = _loaded.get(source)
    if registry is None:
        registry = NodeRegistry()
        if source.kind == "path":
            registry._load_pack_at(Path(source.location))
        else:
            registry.load_module(source.location)
        _loaded[source] = registry
    return registry


def resolve_node_type(source: PackSource, name: str) -> NodeType:
    """Find a type by pack source and name, loading the pack in this process if needed.

    This is what a pickled ``NodeType`` turns back into on a worker.
    """
    registry = resolve_pack(source)
    if name not in registry:
        _loaded.pop(source, None)  # a stale registry: load the pack again
        registry = resolve_pack(source)
    return registry.get(name)
