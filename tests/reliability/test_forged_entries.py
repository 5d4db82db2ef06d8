"""A forged cache entry is refused, never unpickled, with the default configuration.

The attacker can write a tier (the disk folder, Redis, the S3 bucket) but does not hold
the key: with no secret configured, that is this user's local key, which the session's
``NODEGRAPH_CACHE_KEY_FILE`` (tests/conftest.py) keeps out of the cache folder. Each
scenario writes a well-formed Prefect result record whose pickle runs code, sealed as
such an attacker can (the old unsigned layout with its sha256 recomputed, another
machine's key, a guessed signature naming our key), under the node's real cache key;
then ``nodegraph cache verify`` reports it, and ``nodegraph run`` runs in a child
process, as a user would run it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from prefect.results import ResultRecord, ResultRecordMetadata, get_default_result_serializer
from typer.testing import CliRunner

from integration.cache.envelope import check
from integration.cache.keys import graph_keys
from integration.cache.signing import SigningKey, resolve_key
from integration.cache.tiers import DiskTier, RedisTier, Tier
from integration.cli.app import app
from integration.graph import bind, load_graph
from integration.graph.validate import resolve_inputs
from tests.reliability.support import (
    FIXTURES,
    PACKS,
    assert_no_traceback,
    cli,
    forged_signed,
    forged_unsigned,
)

pytestmark = pytest.mark.integration

CHAIN = FIXTURES / "graphs" / "small_chain.yaml"


@pytest.fixture(autouse=True)
def _server(prefect_server):
    return prefect_server


class Payload:
    """Unpickling this touches ``marker``: code execution, as any pickle can do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (eval, (f"__import__('pathlib').Path({self.marker!r}).touch() or 999",))


def forged_record(key: str, marker: Path) -> bytes:
    """A Prefect result record, as Prefect itself would serialize it, carrying Payload."""
    return ResultRecord(
        result=Payload(marker),
        metadata=ResultRecordMetadata(serializer=get_default_result_serializer(), storage_key=key),
    ).serialize()


@dataclass
class Scenario:
    name: str
    tier: Tier
    config: Path | None
    forge: Callable[[bytes, SigningKey], bytes]
    strategy: tuple[str, ...] = ("--strategy", "sequential")

    def args(self) -> list[str]:
        return ["--config", str(self.config)] if self.config else []


def _config_file(folder: Path, caching: dict) -> Path:
    path = folder / "nodegraph.yaml"
    path.write_text(yaml.safe_dump({"caching": caching}))
    return path


@pytest.fixture(params=["disk", "redis", "s3"])
def scenario(request, tmp_path, _private_cache_dir):
    if request.param == "disk":
        # The attack: the unsigned layout, its sha256 recomputed. The recompute
        # runs in a pool worker, which must sign with the flow process's key.
        yield Scenario(
            "disk",
            DiskTier(_private_cache_dir),
            None,
            lambda payload, key: forged_unsigned(payload),
            ("--strategy", "parallel", "--processes"),
        )
        return
    prefix = f"forged-{uuid.uuid4().hex[:8]}"
    if request.param == "redis":
        url = request.getfixturevalue("redis_server").url
        tier = RedisTier(url, prefix=f"{prefix}:")
        caching = {
            "cache_levels": ["memory", "redis"],
            "redis": {"url": url, "prefix": f"{prefix}:"},
        }

        def other_machine(payload: bytes, key: SigningKey) -> bytes:
            other = SigningKey(b"o" * 32, "another machine", shared=False)
            return forged_signed(payload, other.short_id, other.secret)

        yield Scenario("redis", tier, _config_file(tmp_path, caching), other_machine)
        tier.clear()
        tier.close()
        return
    moto = request.getfixturevalue("moto_server")
    tier = moto.tier("forged", f"{prefix}/")
    s3 = {
        "bucket": "forged",
        "prefix": f"{prefix}/",
        "endpoint_url": moto.endpoint,
        "region": "eu-west-1",
        "access_key_id": "testing",
        "secret_access_key": "testing",
    }
    caching = {"cache_levels": ["memory", "s3"], "s3": s3}

    def guessed(payload: bytes, key: SigningKey) -> bytes:
        return forged_signed(payload, key.short_id, b"a guess")

    yield Scenario("s3", tier, _config_file(tmp_path, caching), guessed)
    tier.clear()


def verify(scenario: Scenario) -> tuple[int, dict]:
    """``nodegraph cache verify`` (in this process: it starts no run, and a child
    costs seconds of imports)."""
    args = ["cache", "verify", "--tier", scenario.name, "--json", *scenario.args()]
    done = CliRunner().invoke(app, args)
    assert_no_traceback(done.stdout)
    return done.exit_code, json.loads(done.stdout)


def test_a_forged_entry_is_refused_recomputed_and_replaced(scenario, registry, tmp_path):
    key = resolve_key()  # the session's local key: what the child processes use too
    bound = bind(load_graph(CHAIN), registry)
    keys = {node: key.key for node, key in graph_keys(bound, resolve_inputs(bound, {})).items()}
    double = keys["double"]

    probe = tmp_path / "probe"
    ResultRecord.deserialize(forged_record(double, probe))
    assert probe.exists(), "the forged record must be live: unpickling it runs code"

    marker = tmp_path / "payload-ran"
    scenario.tier.set(double, scenario.forge(forged_record(double, marker), key))

    code, report = verify(scenario)
    assert code == 1, report
    assert [(b["tier"], b["key"], b["problem"]) for b in report["bad"]] == [
        (scenario.name, double, "forged")
    ]
    assert key.id in report["key"]

    done = cli(
        "run", str(CHAIN), "--json", "--nodes", str(PACKS), *scenario.strategy, *scenario.args()
    )
    assert_no_traceback(done.stdout, done.stderr)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert not marker.exists(), "the forged pickle was unpickled"
    assert result["outputs"] == {"total": 7.0}  # 3 * 2 + 1: double's true value flowed on
    assert {n["node_id"]: n["state"] for n in result["nodes"]} == {
        "double": "completed",
        "plus": "completed",
    }
    refusals = [line for line in done.stderr.splitlines() if "refusing entry" in line]
    assert len(refusals) == 1, done.stderr[-3000:]
    assert f"cache tier {scenario.name}" in refusals[0] and key.id in refusals[0]
    if scenario.name != "disk":
        shared = [line for line in done.stderr.splitlines() if "tier is shared" in line]
        assert len(shared) == 1 and "will not verify" in shared[0], done.stderr[-3000:]

    for node_key in keys.values():
        verdict = check(scenario.tier.get(node_key), key)
        assert verdict.ok, verdict  # the recompute overwrote the forgery, signed
