"""A cache folder that cannot be written, created or filled costs a warning, never the run.

Each scenario runs ``nodegraph run`` in a child process, as a user would, on a real
broken folder: immutable (``chattr +i``: we run as root, and root ignores modes), under
a regular file, or on a small tmpfs that is full, or fills up while the run goes on.
The next run, in this process (a child costs seconds of the suite's budget), must
succeed with one warning too.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import integration
from integration.config import CachingConfig, NodegraphConfig
from integration.errors import NodegraphError
from tests.reliability.support import FIXTURES, PACKS, assert_no_traceback, cli

pytestmark = pytest.mark.integration

CHAIN = FIXTURES / "graphs" / "small_chain.yaml"
FILLS_DISK = FIXTURES / "graphs" / "fills_disk.yaml"


@pytest.fixture(autouse=True)
def _server(prefect_server):
    return prefect_server


def _cannot(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what}; CI runs as root on Linux and must be able to")
    pytest.skip(what)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """Mount a tmpfs of ``size_kb`` (unmounted at teardown); skip where mount is refused."""
    mounted: list[Path] = []

    def mount(size_kb: int) -> Path:
        folder = tmp_path / f"tmpfs-{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            _cannot(f"cannot mount a tmpfs: {done.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def immutable() -> Iterator[Callable[[Path], None]]:
    """``chattr +i`` a folder (undone at teardown); skip where the file system refuses."""
    frozen: list[Path] = []

    def freeze(folder: Path) -> None:
        if shutil.which("chattr") is None:
            _cannot("chattr is not installed")
        done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
        if done.returncode != 0:
            _cannot(f"chattr +i refused: {done.stderr.strip()}")
        frozen.append(folder)
        try:
            (folder / "probe").touch()
        except OSError:
            return
        _cannot(f"{folder} is still writable after chattr +i (not running as root?)")

    yield freeze
    for folder in frozen:
        subprocess.run(["chattr", "-i", str(folder)], check=False)


def run_cli(folder: Path, graph: Path = CHAIN, *inputs: str) -> tuple[dict, str]:
    """``nodegraph run --json`` with ``folder`` as the cache folder: (result, stderr)."""
    args = [str(graph), "--json", "--nodes", str(PACKS), "--strategy", "sequential"]
    for value in inputs:
        args += ["-i", value]
    done = cli("run", *args, env={"NODEGRAPH_CACHE_DIR": str(folder)})
    assert_no_traceback(done.stdout, done.stderr)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    return json.loads(done.stdout), done.stderr


class Warnings(logging.Handler):
    """Warnings of nodegraph's cache and run loggers, whatever Prefect does to root."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.text = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.text += f"{record.name} - {record.getMessage()}\n"


def run_here(cache: Path, registry, graph: Path = CHAIN, **inputs) -> tuple[dict, str]:
    """The same run in this process: (result as the CLI's JSON, warnings)."""
    handler = Warnings()
    loggers = [logging.getLogger(name) for name in ("nodegraph.cache", "nodegraph.run")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        config = NodegraphConfig(caching=CachingConfig(directory=cache))
        result = integration.run(
            graph, inputs=inputs, registry=registry, config=config, strategy="sequential"
        )
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    assert result.ok, result
    return result.to_dict(), handler.text


def states(result: dict) -> dict[str, str]:
    return {report["node_id"]: report["state"] for report in result["nodes"]}


def assert_one_warning(folder: Path, printed: str, cause: str) -> None:
    """One warning line names the folder and the cause. Locks say separately that
    they are off (``nodegraph.lock``): another consequence, checked with locking."""
    lines = [
        line
        for line in printed.splitlines()
        if str(folder) in line and "nodegraph.lock" not in line
    ]
    assert len(lines) == 1, printed[-3000:]
    assert cause in lines[0], lines[0]


def test_an_immutable_cache_folder_even_when_the_graph_is_cached(tmp_path, immutable, registry):
    folder = tmp_path / "cache"
    cached, _ = run_here(folder, registry)
    assert states(cached) == {"double": "completed", "plus": "completed"}
    immutable(folder)
    result, stderr = run_cli(folder)
    assert result["outputs"] == {"total": 7.0}
    assert_one_warning(folder, stderr, "Operation not permitted")
    again, warned = run_here(folder, registry)
    assert again["outputs"] == {"total": 7.0}
    assert_one_warning(folder, warned, "Operation not permitted")


def test_a_cache_folder_under_a_regular_file(tmp_path, registry):
    parent = tmp_path / "not-a-folder"
    parent.write_text("a file where the cache folder's parent should be")
    folder = parent / "cache"
    result, stderr = run_cli(folder)
    assert result["outputs"] == {"total": 7.0}
    assert states(result) == {"double": "completed", "plus": "completed"}
    assert_one_warning(folder, stderr, "Not a directory")
    again, warned = run_here(folder, registry)
    assert again["outputs"] == {"total": 7.0}
    assert_one_warning(folder, warned, "Not a directory")
    assert parent.read_text().startswith("a file")
    # `nodegraph resume` of a run that could not be recorded says why.
    with pytest.raises(NodegraphError, match="cannot be written.*was not recorded"):
        integration.resume(
            result["flow_run_id"],
            registry=registry,
            config=NodegraphConfig(caching=CachingConfig(directory=folder)),
        )


def test_a_full_cache_folder(tmpfs, registry):
    folder = tmpfs(512)
    with open(folder / "filler", "ab", buffering=0) as handle:
        try:
            while handle.write(b"\0" * 4096):
                pass
        except OSError:
            pass
    result, stderr = run_cli(folder)
    assert result["outputs"] == {"total": 7.0}
    assert_one_warning(folder, stderr, "No space left on device")
    again, warned = run_here(folder, registry)
    assert again["outputs"] == {"total": 7.0}
    assert_one_warning(folder, warned, "No space left on device")


def test_the_disk_filling_up_mid_run_keeps_the_outputs(tmpfs, registry):
    folder = tmpfs(512)
    result, stderr = run_cli(folder, FILLS_DISK, f"folder={folder}")
    assert result["outputs"] == {"total": 7.0, "filled": 0.0}
    assert states(result) == {"a_fill": "completed", "double": "completed", "plus": "completed"}
    assert_one_warning(folder, stderr, "No space left on device")
    assert not list(folder.rglob("*.tmp")), "a half-written file was left behind"
    # The next run starts on the full disk.
    again, warned = run_here(folder, registry, FILLS_DISK, folder=str(folder))
    assert again["outputs"] == {"total": 7.0, "filled": 0.0}
    assert_one_warning(folder, warned, "No space left on device")


def test_a_half_written_record_never_blocks_the_next_run(tmp_path, registry):
    folder = tmp_path / "cache"
    runs = folder / "runs"
    (runs / "active").mkdir(parents=True)
    # What a full disk or a kill leaves: a record cut short and its marker, a record of
    # the wrong shape, and a stale temporary.
    (runs / "cut.json").write_text('{"run_id": "cut", "graph": "small-ch')
    (runs / "active" / "cut").touch()
    (runs / "wrong.json").write_text('["not", "a", "record"]')
    (runs / "active" / "wrong").touch()
    stale = runs / "old.123.abc.tmp"
    stale.write_text('{"run_id": "o')
    os.utime(stale, (1, 1))
    result, _ = run_here(folder, registry)
    assert result["outputs"] == {"total": 7.0}
    assert os.listdir(runs / "active") == []
    assert not stale.exists()
    with pytest.raises(NodegraphError, match="unreadable"):
        integration.resume(
            "cut",
            registry=registry,
            config=NodegraphConfig(caching=CachingConfig(directory=folder)),
        )
