"""The registry: packs from folders and modules, namespacing, reloading elsewhere."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from integration.config import NodegraphConfig
from integration.graph import NodeRegistry, RegistryError
from integration.graph.registry import resolve_node_type
from tests.conftest import COMFY_TEST_PACK, FIXTURES


def test_default_registry_loads_the_repository_packs():
    registry = NodeRegistry.default()
    assert {"core", "arrays"} <= set(registry.packs)
    assert registry.get("core.add").pack == "core"
    assert registry.get("arrays.add") is not registry.get("core.add")


def test_folder_packs_are_namespaced_and_remember_their_source(registry, fixture_path):
    node_type = registry.get("testpack.divmod")
    assert node_type.qualified_name == "testpack.divmod"
    assert node_type.pack_source.kind == "path"
    assert node_type.pack_source.location == str((fixture_path / "packs" / "testpack").resolve())


def test_unknown_type_suggests_the_nearest_names(registry):
    with pytest.raises(KeyError, match="did you mean core.add"):
        registry.get("core.ad")
    assert set(registry.suggest("add")) >= {"arrays.add", "core.add"}


def _write_pack(folder, name, body, pack=None):
    target = folder / name
    target.mkdir(parents=True)
    header = "from integration.graph import node\n"
    if pack:
        header += f"PACK = {pack!r}\n"
    (target / "__init__.py").write_text(header + textwrap.dedent(body))
    return target


def test_pack_may_choose_its_namespace(tmp_path):
    _write_pack(
        tmp_path,
        "folder_name",
        """
        @node
        def hello(name: str = "x") -> str:
            '''Say hello.'''
            return "hello " + name
    """,
        pack="greetings",
    )
    registry = NodeRegistry()
    assert registry.load_path(tmp_path) == ["greetings"]
    assert registry.get("greetings.hello").invoke({"name": "a"}) == {"out": "hello a"}


def test_clashing_pack_names_are_refused(tmp_path):
    first = _write_pack(
        tmp_path / "one",
        "clashpack",
        """
        @node
        def a() -> int:
            return 1
    """,
    )
    second = _write_pack(
        tmp_path / "two",
        "clashpack",
        """
        @node
        def b() -> int:
            return 2
    """,
    )
    registry = NodeRegistry()
    registry.load_path(first)
    with pytest.raises(RegistryError, match="already loaded pack|clashes"):
        registry.load_path(second)


def test_a_pack_that_fails_to_import_names_its_path(tmp_path):
    broken = _write_pack(tmp_path, "brokenpack", "raise ImportError('missing dependency')\n")
    with pytest.raises(RegistryError, match="brokenpack.*missing dependency"):
        NodeRegistry().load_path(broken)


def test_missing_node_path_is_an_error(tmp_path):
    with pytest.raises(RegistryError, match="does not exist"):
        NodeRegistry().load_path(tmp_path / "nope")


def test_modules_load_as_packs():
    registry = NodeRegistry()
    assert registry.load_module("tests.fixtures.module_pack") == "modpack"
    assert registry.get("modpack.triple").invoke({"x": 2}) == {"out": 6}
    assert registry.get("modpack.triple").pack_source.kind == "module"


def test_env_node_path_adds_packs(tmp_path, monkeypatch):
    _write_pack(
        tmp_path,
        "envpack",
        """
        @node
        def seven() -> int:
            return 7
    """,
    )
    monkeypatch.setenv("NODEGRAPH_NODE_PATH", str(tmp_path))
    assert "envpack.seven" in NodeRegistry.default()


def test_a_fresh_process_reloads_a_pack_from_its_source(registry):
    source = registry.get("testpack.divmod").pack_source
    code = textwrap.dedent(f"""
        from integration.graph.registry import PackSource, resolve_node_type
        node_type = resolve_node_type(PackSource({source.kind!r}, {source.location!r},
                                                 {source.pack!r}), "testpack.divmod")
        print(node_type.invoke({{"a": 7, "b": 2}}))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "{'quotient': 3, 'remainder': 1}"
    assert resolve_node_type(source, "testpack.divmod") is registry.get("testpack.divmod")


def test_the_default_registry_leaves_out_the_test_pack():
    assert "comfy_testing" not in NodeRegistry.default().packs
    assert "StubImage" not in NodeRegistry.default()
    asked = NodeRegistry.default(extra_paths=[COMFY_TEST_PACK])
    assert asked.get("StubImage").qualified_name == "comfy_testing.StubImage"


def test_a_registry_from_the_config_has_its_paths_and_modules():
    execution = {"node_paths": [FIXTURES / "packs"], "node_modules": ["tests.fixtures.module_pack"]}
    config = NodegraphConfig(execution=execution)
    registry = NodeRegistry.from_config(config)
    assert {"core", "testpack", "modpack"} <= set(registry.packs)
    assert registry.get("modpack.triple").invoke({"x": 2}) == {"out": 6}
