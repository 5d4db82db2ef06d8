"""The signing key: the local key file, configured secrets, and where the key travels."""

from __future__ import annotations

import base64
import json
import logging
import multiprocessing
import os
import pickle
import stat
import uuid

import cloudpickle
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from integration.cache.envelope import check
from integration.cache.factory import hierarchy_for
from integration.cache.signing import (
    KeyFileError,
    SigningKey,
    key_file_path,
    local_key,
    resolve_key,
)
from integration.cli import app as cli
from integration.config import CachingConfig, load_config
from integration.errors import ConfigError
from integration.prefect.secrets import key_for_workers, resolve_secret_block
from integration.prefect.storage import TieredResultStorage
from integration.runs import RunRecord, UnknownRunError
from tests.reliability.support import forged_unsigned

KEY = "5e" + "d" * 62


@pytest.fixture
def xdg(tmp_path, monkeypatch):
    """No key file override: the key goes to $XDG_CONFIG_HOME/nodegraph/cache.key."""
    monkeypatch.delenv("NODEGRAPH_CACHE_KEY_FILE")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config" / "nodegraph" / "cache.key"


def test_the_local_key_is_created_once_private_and_outside_the_cache(xdg, _private_cache_dir):
    assert key_file_path() == xdg
    key = resolve_key()
    assert xdg.exists() and not key.shared
    assert stat.S_IMODE(xdg.stat().st_mode) == 0o600
    assert stat.S_IMODE(xdg.parent.stat().st_mode) == 0o700
    assert not xdg.is_relative_to(_private_cache_dir)
    assert resolve_key() == key and len(key.secret) == 32
    assert key.describe() == f"local key {key.id} ({xdg})"
    cache = hierarchy_for(CachingConfig())
    assert cache.key == key
    cache.store(KEY, "signed")
    assert not list(_private_cache_dir.rglob("*.key"))


def _take_key(path: str, barrier: object, found: object) -> None:
    barrier.wait()  # type: ignore[attr-defined]
    found.put(local_key(path).secret.hex())  # type: ignore[attr-defined]


def test_processes_racing_to_create_the_key_all_get_the_same_one(tmp_path):
    path = str(tmp_path / "race" / "cache.key")
    context = multiprocessing.get_context("fork")
    barrier, found = context.Barrier(6), context.Queue()
    racers = [context.Process(target=_take_key, args=(path, barrier, found)) for _ in range(6)]
    for racer in racers:
        racer.start()
    keys = [found.get(timeout=30) for _ in racers]
    for racer in racers:
        racer.join(10)
    assert len(set(keys)) == 1
    assert local_key(path).secret.hex() == keys[0]
    assert [p.name for p in (tmp_path / "race").iterdir()] == ["cache.key"]  # no leftovers


def test_a_key_file_others_could_write_is_refused(tmp_path, monkeypatch, caplog):
    path = tmp_path / "cache.key"
    local_key(path)
    path.chmod(0o620)
    with pytest.raises(KeyFileError, match=r"writable by others \(mode 0620\).*chmod 600"):
        local_key(path)
    if os.getuid() == 0:  # only root can give a file away
        path.chmod(0o600)
        os.chown(path, 65534, -1)
        with pytest.raises(KeyFileError, match="owned by uid 65534, not by you"):
            local_key(path)
    path.write_text("not a key\n")
    os.chown(path, os.getuid(), -1)
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="does not hold a nodegraph key"):
        local_key(path)
    # A run goes on without a trusted key: in memory only, and says why.
    monkeypatch.setenv("NODEGRAPH_CACHE_KEY_FILE", str(path))
    with caplog.at_level(logging.WARNING, logger="nodegraph.cache"):
        cache = hierarchy_for(CachingConfig())
    assert [t.name for t in cache.tiers] == ["memory"] and not cache.key.durable
    assert "does not hold a nodegraph key" in caplog.text and "memory only" in caplog.text


def test_a_key_file_inside_the_cache_folder_is_refused(monkeypatch, _private_cache_dir, caplog):
    monkeypatch.setenv("NODEGRAPH_CACHE_KEY_FILE", str(_private_cache_dir / "cache.key"))
    with caplog.at_level(logging.WARNING, logger="nodegraph.cache"):
        cache = hierarchy_for(CachingConfig())
    assert [t.name for t in cache.tiers] == ["memory"]
    assert "lies in the cache folder" in caplog.text


def test_a_configured_secret_wins_over_the_local_key(monkeypatch):
    caching = CachingConfig(secret=SecretStr("from yaml"))
    assert resolve_key(caching).describe().startswith("configured secret ")
    assert resolve_key(caching).secret == b"from yaml"
    monkeypatch.setenv("NODEGRAPH_CACHE_SECRET", "from env")
    assert resolve_key(caching).secret == b"from env"
    assert resolve_key(caching).where == "NODEGRAPH_CACHE_SECRET"
    yaml_config = load_config(environ={"NODEGRAPH_CACHING__SECRET": "s"}).caching
    assert yaml_config.secret.get_secret_value() == "s" and "'s'" not in repr(yaml_config)


def test_the_runs_key_travels_to_local_workers_and_never_to_a_remote_cluster(caplog):
    local = resolve_key()
    storage = TieredResultStorage.for_config(CachingConfig(), key_for_workers(local, None))
    assert local.secret.hex() not in repr(storage)
    worker = cloudpickle.loads(cloudpickle.dumps(storage))  # as a process pool gets it
    assert worker.hierarchy().key == local
    with caplog.at_level(logging.WARNING, logger="nodegraph.cache"):
        assert key_for_workers(local, "tcp://10.0.0.9:8786") is None
    assert "tcp://10.0.0.9:8786" in caplog.text and "caching.secret" in caplog.text
    shared = SigningKey(b"s" * 32, "caching.secret", shared=True)
    assert key_for_workers(shared, "tcp://10.0.0.9:8786") == shared


def test_a_secret_block_is_read_by_the_flow_process(prefect_server):
    from prefect.blocks.system import Secret

    name = f"cache-secret-{uuid.uuid4().hex[:8]}"
    Secret(value="block value").save(name)
    resolved = resolve_secret_block(CachingConfig(secret_block=name))
    key = resolve_key(resolved)
    assert key.secret == b"block value" and key.shared and name in key.describe()
    with pytest.raises(ConfigError, match="no-such-block.*cannot load the Prefect Secret"):
        resolve_secret_block(CachingConfig(secret_block="no-such-block"))


class Payload:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_pickled_run_inputs_are_unpickled_only_when_they_verify(tmp_path):
    record = RunRecord.begin("r1", "g", {}, {"x": {1, 2}}, [], "sequential", scope="r1")
    assert "signature" in record.inputs and record.decoded_inputs() == {"x": {1, 2}}
    target = tmp_path / "pwned"
    record.inputs["pickle"] = base64.b64encode(pickle.dumps({"x": Payload(str(target))})).decode()
    with pytest.raises(UnknownRunError, match="run 'r1' do not verify with local key"):
        record.decoded_inputs()
    del record.inputs["signature"]
    with pytest.raises(UnknownRunError, match="not unpickled"):
        record.decoded_inputs()
    assert not target.exists()


def test_cache_inspect_says_which_key_verified_an_entry(_private_cache_dir):
    cache = hierarchy_for(load_config().caching)
    cache.store(KEY, {"a": 1})
    runner = CliRunner()
    shown = json.loads(runner.invoke(cli.app, ["cache", "inspect", KEY, "--json"]).stdout)
    disk = next(row for row in shown["tiers"] if row["tier"] == "disk")
    assert disk["verified"] and disk["verified_by"] == cache.key.describe()
    forged = forged_unsigned(pickle.dumps("forged"))
    cache.tiers[1].set(KEY, forged)
    assert check(forged, cache.key).problem == "forged"
    shown = json.loads(runner.invoke(cli.app, ["cache", "inspect", KEY, "--json"]).stdout)
    disk = next(row for row in shown["tiers"] if row["tier"] == "disk")
    assert not disk["verified"] and disk["verified_by"] is None
    assert disk["problem"].startswith("forged: entry is not signed")
