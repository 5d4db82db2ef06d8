"""Build the tier hierarchy a configuration describes, once per process.

    >>> from integration.config import CachingConfig
    >>> from integration.cache.factory import hierarchy_for
    >>> [t.name for t in hierarchy_for(CachingConfig(cache_levels=["memory"])).tiers]
    ['memory']

The same settings give the same ``CacheHierarchy`` object for the life of the process,
so the memory tier survives from one run to the next. A tier that cannot be set up
(an unwritable folder, say) is left out with a warning, as a tier that fails later is.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from integration.cache import besteffort
from integration.cache.hierarchy import CacheHierarchy
from integration.cache.signing import (
    KeyFileError,
    SigningKey,
    ephemeral_key,
    key_file_path,
    resolve_key,
)
from integration.cache.tiers import (
    DiskTier,
    MemoryTier,
    RedisTier,
    S3Tier,
    Tier,
    default_cache_dir,
)
from integration.config import CachingConfig

logger = logging.getLogger("nodegraph.cache")
_MB = 2**20
_built: dict[str, CacheHierarchy] = {}
_stand_ins: dict[str, SigningKey] = {}
_lock = threading.Lock()


def cache_folder(caching: CachingConfig) -> Path:
    """The disk tier's folder: ``caching.directory``, else ``$NODEGRAPH_CACHE_DIR``, else
    ``~/.cache/nodegraph``. Lock files and the run history live there too."""
    return caching.directory or default_cache_dir()


def build_tier(level: str, caching: CachingConfig) -> Tier:
    """One tier of the hierarchy, from the ``caching`` section."""
    if level == "memory":
        return MemoryTier(max_bytes=int(caching.memory_size_mb * _MB))
    if level == "disk":
        return DiskTier(cache_folder(caching), max_bytes=int(caching.max_cache_size_mb * _MB))
    if level == "redis":
        settings = caching.redis
        return RedisTier(
            settings.url, settings.prefix, caching.ttl_seconds, settings.timeout_seconds
        )
    if level == "s3":
        s3 = caching.s3
        return S3Tier(
            s3.bucket,
            s3.prefix,
            s3.endpoint_url,
            s3.access_key_id,
            s3.secret_access_key,
            s3.region,
            s3.timeout_seconds,
        )
    raise ValueError(f"unknown cache level {level!r}")


def signing_key_for(caching: CachingConfig) -> SigningKey:
    """The key entries are signed with (``signing.resolve_key``); when the local key
    cannot be had or trusted, a key of this process only, with a warning (once)."""
    try:
        key = resolve_key(caching)
        if not key.shared:
            path, folder = key_file_path().resolve(), cache_folder(caching).resolve()
            if path.is_relative_to(folder):
                raise KeyFileError(
                    f"cache key file {path} lies in the cache folder {folder}, where "
                    "whoever writes the cache could read it; set NODEGRAPH_CACHE_KEY_FILE "
                    "to a path outside it"
                )
        return key
    except KeyFileError as exc:
        with _lock:
            found = _stand_ins.get(str(exc))
            if found is None:
                logger.warning("cache: %s; caching in this process's memory only", exc)
                found = _stand_ins[str(exc)] = ephemeral_key(str(exc))
        return found


def hierarchy_for(caching: CachingConfig, key: SigningKey | None = None) -> CacheHierarchy:
    """The process's hierarchy for these settings, signing with ``key`` (default:
    ``signing_key_for(caching)``)."""
    if caching.directory is None:
        # $NODEGRAPH_CACHE_DIR is read now, so a changed variable gets its own hierarchy;
        # settings whose folder was fixed earlier (result storage) map to the same one.
        caching = caching.model_copy(update={"directory": cache_folder(caching)})
    key = key or signing_key_for(caching)
    # The secret dumps as "**********": the key id tells hierarchies of two keys apart.
    identity = f"{caching.model_dump_json(exclude={'secret'})}|{key.id}"
    with _lock:
        found = _built.get(identity)
        if found is not None:
            return found
        tiers = []
        # With a key no other process holds, durable entries could never be read back.
        levels = caching.cache_levels if key.durable else ["memory"]
        for level in levels:
            try:
                tiers.append(build_tier(level, caching))
            except Exception as exc:
                message = "cache tier %s cannot be set up (%s); going on without it"
                cause = getattr(exc, "cause", None)
                if cause is not None:  # the cache folder's: said once, with the records'
                    besteffort.warn_once(cause, message, level, exc)
                else:
                    logger.warning(message, level, exc)
        if not tiers:
            tiers.append(MemoryTier(max_bytes=int(caching.memory_size_mb * _MB)))
        hierarchy = CacheHierarchy(tiers, key=key, ttl_seconds=caching.ttl_seconds)
        _built[identity] = hierarchy
        return hierarchy
