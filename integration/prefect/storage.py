"""Node results on Prefect's result persistence, under the node's cache key.

    >>> from integration.prefect.storage import NodeKeyPolicy
    >>> NodeKeyPolicy().compute_key(None, {"cache_key": "ab12"}, {})
    'ab12'

- ``NodeKeyPolicy`` is a Prefect ``CachePolicy`` whose key is the node key the planner
  computed (passed to the task as its ``cache_key`` parameter). The Prefect cache key
  *is* the node key, so Prefect's ``TASK_SOURCE`` collision (prefect issue #23062),
  where two tasks with the same source share results, cannot happen: the node type's
  name and version are inside the key.
- ``TieredResultStorage`` is a ``WritableFileSystem`` block over the tier hierarchy.
  Prefect writes each result record through it, and it seals (checksum and HMAC) what
  it stores and verifies what it reads before Prefect unpickles anything. The flow
  process's signing key travels inside it to the workers nodegraph starts (process
  pool, local Dask cluster), so every process of a run signs with the same key.

``Task()`` refuses unsaved result-storage blocks, because a deployment's worker loads
a task's storage by reference. nodegraph's node tasks travel by value instead (they are
pickled with the storage settings inside), so the block is set on the task after
construction and never has to be saved on a server, temporary or persistent.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from prefect.cache_policies import CachePolicy
from prefect.filesystems import WritableFileSystem
from prefect.results import ResultRecord, ResultRecordMetadata, resolve_serializer
from prefect.serializers import Serializer
from prefect.settings import get_current_settings
from pydantic import SecretStr

from integration.cache.factory import cache_folder, hierarchy_for
from integration.cache.hierarchy import CacheHierarchy
from integration.cache.signing import SigningKey
from integration.config import CachingConfig
from integration.prefect.locking import lock_manager_for


@dataclass
class NodeKeyPolicy(CachePolicy):
    """The cache key is the ``cache_key`` task parameter: the node's content key."""

    def compute_key(
        self,
        task_ctx: Any,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        return inputs.get("cache_key")


class TieredResultStorage(WritableFileSystem):
    """Prefect result storage backed by nodegraph's memory/disk/Redis/S3 hierarchy."""

    _block_type_name = "nodegraph tiered cache"
    _block_type_slug = "nodegraph-tiered-cache"

    caching: dict[str, Any]
    signing_key: SecretStr | None = None
    signing_where: str = ""
    signing_shared: bool = False
    signing_durable: bool = True

    @classmethod
    def for_config(
        cls, caching: CachingConfig, key: SigningKey | None = None
    ) -> TieredResultStorage:
        """Storage for ``caching``, signing with ``key``; without one, each process
        resolves its own (``NODEGRAPH_CACHE_SECRET``, or its machine's local key)."""
        # The folder is fixed here, in the flow's process: a worker process (a Dask
        # worker started elsewhere) must not fall back to its own default folder.
        fixed = caching.model_copy(update={"directory": cache_folder(caching)})
        # The secret travels as ``signing_key`` only: JSON would dump it as asterisks.
        storage = cls(caching=fixed.model_dump(mode="json", exclude={"secret"}))
        if key is not None:
            storage.signing_key = SecretStr(key.secret.hex())
            storage.signing_where = key.where
            storage.signing_shared = key.shared
            storage.signing_durable = key.durable
        return storage

    def signing(self) -> SigningKey | None:
        """The key the flow process handed over, if any."""
        if self.signing_key is None:
            return None
        secret = bytes.fromhex(self.signing_key.get_secret_value())
        return SigningKey(secret, self.signing_where, self.signing_shared, self.signing_durable)

    def hierarchy(self) -> CacheHierarchy:
        return hierarchy_for(CachingConfig.model_validate(self.caching), self.signing())

    def _resolve_path(self, path: str) -> None:
        # Prefect maps keys of unsaved blocks to file paths through this hook (and falls
        # back to the working directory without it); node keys are not paths: None
        # tells it to use the key as it is.
        return None

    # Prefect's synchronous engine passes ``_sync=True`` (its async_dispatch convention).
    def read_path(self, path: str, _sync: bool | None = None) -> bytes:
        found = self.hierarchy().load_bytes(path)
        if found is None:
            raise FileNotFoundError(f"no cached result under {path}")
        return found[0]

    def write_path(self, path: str, content: bytes, _sync: bool | None = None) -> str:
        self.hierarchy().store_bytes(path, content)
        return path

    async def aread_path(self, path: str) -> bytes:
        return await anyio.to_thread.run_sync(self.read_path, path)

    async def awrite_path(self, path: str, content: bytes) -> str:
        return await anyio.to_thread.run_sync(self.write_path, path, content)


def key_policy(caching: CachingConfig) -> NodeKeyPolicy:
    """The cache policy for ``caching``, with node-key locks unless it opts out.

    Locking uses Prefect's SERIALIZABLE isolation: the first run to reach a key holds
    its lock while it computes; another run waiting on the same key then reads the
    committed result instead of computing it again. The locks have a lease
    (``integration.prefect.locking``), so a dead holder's lock is taken over.
    """
    manager = lock_manager_for(caching)
    if manager is None:
        return NodeKeyPolicy()
    return NodeKeyPolicy(isolation_level="SERIALIZABLE", lock_manager=manager)


def load_cached_value(hierarchy: CacheHierarchy, key: str) -> tuple[Any, str, int] | None:
    """A result Prefect stored under ``key``, the tier it came from, and its size."""
    found = hierarchy.load_bytes(key)
    if found is None:
        return None
    payload, tier = found
    return ResultRecord.deserialize(payload).result, tier, len(payload)


@functools.lru_cache(maxsize=8)
def _default_serializer(name: str) -> Serializer:
    """Prefect's default result serializer, resolved once per setting rather than once
    per stored node (``get_default_result_serializer`` builds a new one each call)."""
    return resolve_serializer(name)


def store_result(hierarchy: CacheHierarchy, key: str, value: Any) -> None:
    """Persist ``value`` under ``key`` as Prefect's result store would (a serialized
    ``ResultRecord``), for nodes whose task is shared: fused and batched nodes keep
    their own cache entries, readable by ``load_cached_value`` and by Prefect alike."""
    serializer = _default_serializer(get_current_settings().results.default_serializer)
    record = ResultRecord(
        result=value, metadata=ResultRecordMetadata(serializer=serializer, storage_key=key)
    )
    hierarchy.store_bytes(key, record.serialize())
