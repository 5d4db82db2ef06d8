"""The package's layering: no import cycles, each layer imports only what it may, and
other layers plug formats into the graph layer through its loader hooks.

Imports are read statically with ``ast``, at module level and inside functions alike,
so a function-local import cannot hide a cycle or a forbidden dependency.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from integration.errors import GraphLoadError, NodegraphError
from integration.graph import NodeRegistry, RegistryError, load_graph, node
from integration.graph import loaders as hooks
from integration.graph.loaders import DocumentLoader, PackLoader
from integration.graph.model import Graph

PACKAGE = Path(__file__).resolve().parents[1] / "integration"
PREFECT = ("prefect", "prefect_dask", "prefect_redis")
DASK = ("dask", "distributed", "dask_cuda")


@dataclass(frozen=True)
class Import:
    """One import statement: the module that holds it, what it imports, and where."""

    module: str
    target: str
    line: int

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.target}"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(module: str, path: Path, known: set[str]) -> Iterator[Import]:
    """Every import in ``path``, relative ones resolved; ``from a import b`` names the
    module ``a.b`` when that is a module of the package, else ``a``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for statement in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(statement, ast.Import):
            for alias in statement.names:
                yield Import(module, alias.name, statement.lineno)
        elif isinstance(statement, ast.ImportFrom):
            base = statement.module or ""
            if statement.level:
                anchor = package.split(".")[: len(package.split(".")) - statement.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in statement.names:
                submodule = f"{base}.{alias.name}"
                yield Import(module, submodule if submodule in known else base, statement.lineno)


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    modules = _modules()
    known = set(modules)
    return [found for name, path in modules.items() for found in _imports(name, path, known)]


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path of modules (first == last), or None; walked
    iteratively so a deep package cannot hit the recursion limit."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for start in sorted(edges):
        if start in state:
            continue
        path = [start]
        stack = [iter(sorted(edges[start]))]
        state[start] = 1
        while stack:
            step = next(stack[-1], None)
            if step is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(step) == 1:
                return [*path[path.index(step) :], step]
            elif step not in state:
                state[step] = 1
                path.append(step)
                stack.append(iter(sorted(edges.get(step, ()))))
    return None


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _offending(imports: list[Import], layer: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        str(found)
        for found in imports
        if _under(found.module, layer) and any(_under(found.target, f) for f in forbidden)
    ]


def test_no_import_cycle_between_modules(imports):
    edges: dict[str, set[str]] = {}
    for found in imports:
        if _under(found.target, "integration") and found.target != found.module:
            edges.setdefault(found.module, set()).add(found.target)
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # it finds them
    cycle = _cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_graph_layer_imports_no_runtime_and_no_comfy(imports):
    forbidden = ("integration.comfy", "integration.prefect", *PREFECT, *DASK)
    assert _offending(imports, "integration.graph", forbidden) == []


def test_only_the_prefect_backend_imports_prefect(imports):
    outside = [
        str(found)
        for found in imports
        if any(_under(found.target, p) for p in PREFECT)
        and not _under(found.module, "integration.prefect")
    ]
    assert outside == []


def test_the_cli_reaches_prefect_only_through_the_backend(imports):
    assert _offending(imports, "integration.cli", PREFECT) == []


def test_the_engine_imports_neither_prefect_nor_dask(imports):
    if not (PACKAGE / "engine").is_dir():
        pytest.skip("integration/engine does not exist yet")
    forbidden = ("integration.prefect", *PREFECT, *DASK)
    assert _offending(imports, "integration.engine", forbidden) == []


def _flat_document(data: dict, source: str, signatures: object) -> Graph | None:
    if data.get("format") != "flat":
        return None
    return Graph(name=f"flat-{signatures}")


def test_a_registered_document_loader_reads_its_format(monkeypatch):
    monkeypatch.setitem(hooks._documents, "flat", DocumentLoader("flat", _flat_document))
    assert load_graph({"format": "flat"}, signatures="s1").name == "flat-s1"
    assert load_graph('{"format": "flat"}', signatures="s2").name == "flat-s2"
    # a nodegraph document (it names its schema) never reaches the loaders
    with pytest.raises(GraphLoadError, match="format: unknown field"):
        load_graph({"schema": "nodegraph/v1", "name": "g", "format": "flat"})


@node
def _doubled(x: int) -> int:
    return 2 * x


def test_a_registered_pack_loader_loads_its_packs(tmp_path, monkeypatch):
    executed_before: list[bool] = []

    def node_types(module):
        foreign = getattr(module, "FOREIGN", None)
        if foreign is None:
            return None
        if foreign == "broken":
            raise NodegraphError("FOREIGN is broken")
        return [_doubled]

    def before_import() -> None:
        module = sys.modules.get("nodegraph_packs.foreign_hook")
        executed_before.append(hasattr(module, "FOREIGN"))

    loader = PackLoader("foreign", node_types, before_import)
    monkeypatch.setitem(hooks._packs, "foreign", loader)
    pack = tmp_path / "foreign_hook.py"
    pack.write_text("FOREIGN = True\n")
    registry = NodeRegistry()
    assert registry.load_path(pack) == ["foreign_hook"]
    assert registry.get("foreign_hook._doubled") is _doubled
    assert registry.get("_doubled") is _doubled  # found by bare name, as its documents say
    assert registry.comfy_types() == {"_doubled": _doubled}
    assert executed_before and not any(executed_before)  # called before the pack ran
    broken = tmp_path / "broken_hook.py"
    broken.write_text("FOREIGN = 'broken'\n")
    with pytest.raises(RegistryError, match=r"broken_hook.py \(foreign\): FOREIGN is broken"):
        NodeRegistry().load_path(broken)


def _package_of(module: str) -> str:
    """``integration.cache.tiers`` -> ``integration.cache``; a module at the root of the
    package (``integration.plan``) is a layer of its own."""
    parts = module.split(".")
    return ".".join(parts[:2])


def test_no_import_cycle_between_packages(imports):
    edges: dict[str, set[str]] = {}
    for found in imports:
        if not _under(found.target, "integration") or found.target == "integration":
            continue
        source, target = _package_of(found.module), _package_of(found.target)
        if source != target and source != "integration":
            edges.setdefault(source, set()).add(target)
    cycle = _cycle(edges)
    assert cycle is None, "import cycle between packages: " + " -> ".join(cycle or [])
