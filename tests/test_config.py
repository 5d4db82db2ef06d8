"""Configuration: a YAML file, NODEGRAPH_* overrides, unknown keys are errors."""

from __future__ import annotations

import pytest

from integration.config import find_config_file, load_config
from integration.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "nodegraph.yaml"
    path.write_text(text)
    return path


def test_defaults_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(None, environ={})
    assert config.execution.strategy == "sequential"
    assert config.execution.tag_node_types is True


def test_file_in_the_seed_shape(tmp_path):
    path = write(
        tmp_path,
        """
execution:
  strategy: parallel
  max_workers: 3
  processes: true
resource_management: {}
caching: {}
monitoring:
  progress: false
""",
    )
    config = load_config(path, environ={})
    assert (config.execution.strategy, config.execution.max_workers) == ("parallel", 3)
    assert config.execution.processes and not config.monitoring.progress


def test_environment_overrides_the_file_key_by_key(tmp_path):
    path = write(tmp_path, "execution:\n  strategy: parallel\n  max_workers: 3\n")
    config = load_config(path, environ={"NODEGRAPH_EXECUTION__MAX_WORKERS": "8"})
    assert config.execution.max_workers == 8
    assert config.execution.strategy == "parallel"


def test_a_section_built_in_code_overrides_the_environment_field_by_field(monkeypatch):
    from integration.config import ExecutionConfig, NodegraphConfig

    monkeypatch.setenv("NODEGRAPH_EXECUTION__TAG_NODE_TYPES", "false")
    monkeypatch.setenv("NODEGRAPH_EXECUTION__MAX_WORKERS", "7")
    config = NodegraphConfig(execution=ExecutionConfig(strategy="parallel", max_workers=3))
    # What the code sets wins; what it leaves unset still comes from the environment.
    assert (config.execution.strategy, config.execution.max_workers) == ("parallel", 3)
    assert config.execution.tag_node_types is False
    explicit = NodegraphConfig(execution=ExecutionConfig(tag_node_types=True))
    assert explicit.execution.tag_node_types is True


def test_unknown_keys_in_the_file_are_errors(tmp_path):
    path = write(tmp_path, "execution:\n  stratgy: parallel\nextras: 1\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    message = str(caught.value)
    assert str(path) in message
    assert "execution.stratgy: unknown key" in message and "extras: unknown key" in message


def test_unknown_environment_variables_are_errors():
    with pytest.raises(ConfigError, match="NODEGRAPH_EXECUTION__STRATGY"):
        load_config(None, environ={"NODEGRAPH_EXECUTION__STRATGY": "parallel"})


def test_bad_values_name_the_key(tmp_path):
    path = write(tmp_path, "execution:\n  strategy: warp\n  max_workers: 0\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert "execution.strategy: Input should be 'sequential', 'parallel' or 'distributed'" in str(
        caught.value
    )
    assert "execution.max_workers" in str(caught.value)


def test_search_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_config_file(None, environ={}) is None
    local = write(tmp_path, "{}")
    assert find_config_file(None, environ={}).resolve() == local.resolve()
    other = tmp_path / "other.yaml"
    other.write_text("{}")
    assert find_config_file(None, environ={"NODEGRAPH_CONFIG": str(other)}) == other
    assert find_config_file(local, environ={"NODEGRAPH_CONFIG": str(other)}) == local


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.yaml", environ={})
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(write(tmp_path, "execution: [unclosed\n"), environ={})
