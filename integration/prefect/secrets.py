"""The cache signing key of a run: a Prefect ``Secret`` block, and which workers get it.

    >>> from integration.config import CachingConfig
    >>> from integration.prefect.secrets import resolve_secret_block
    >>> resolve_secret_block(CachingConfig()).secret is None  # no block named: unchanged
    True

``caching.secret_block`` names a Prefect ``Secret`` block that holds the secret every
machine sharing a Redis or S3 tier signs with. Loading a block is Prefect API, so the
flow process loads it here and carries the value on as ``caching.secret``; the cache
package (``integration.cache.signing``) never talks to Prefect.
"""

from __future__ import annotations

import json
import logging
import os

from prefect.blocks.system import Secret
from pydantic import SecretStr

from integration.cache.signing import SECRET_ENV, SigningKey
from integration.config import CachingConfig
from integration.errors import ConfigError

logger = logging.getLogger("nodegraph.cache")


def resolve_secret_block(caching: CachingConfig) -> CachingConfig:
    """``caching`` with ``secret`` filled from its Prefect ``Secret`` block, when one is
    named and no secret is set already (``NODEGRAPH_CACHE_SECRET`` or ``caching.secret``).

    Raises ``ConfigError`` naming the block when it cannot be loaded.
    """
    name = caching.secret_block
    if not name or caching.secret is not None or os.environ.get(SECRET_ENV):
        return caching
    try:
        value = Secret.load(name).get()
    except Exception as exc:  # a missing block, an unreachable API, a wrong block type
        raise ConfigError(
            f"caching.secret_block {name!r}: cannot load the Prefect Secret block "
            f"({type(exc).__name__}: {exc}); create it with "
            f"`Secret(value=...).save({name!r})` or unset caching.secret_block"
        ) from None
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    if not text:
        raise ConfigError(f"caching.secret_block {name!r}: the Prefect Secret block is empty")
    return caching.model_copy(update={"secret": SecretStr(text)})


def key_for_workers(key: SigningKey, dask_address: str | None) -> SigningKey | None:
    """The key to hand to the run's workers, or ``None`` where they must hold their own.

    Workers nodegraph starts on this machine (process pool, local Dask cluster) get the
    run's key. Workers of a scheduler at ``dask_address`` may run elsewhere: they get a
    configured secret, never this machine's local key, and a run that has only the local
    key says so, because what they write elsewhere would not verify here.
    """
    if dask_address is None or key.shared:
        return key
    logger.warning(
        "cache: no caching.secret is configured, and the Dask workers at %s are not "
        "given this machine's %s: entries they write on other machines are signed with "
        "their own local keys, so they will not verify here and are recomputed. Set the "
        "same caching.secret (or caching.secret_block, or NODEGRAPH_CACHE_SECRET) on "
        "this machine and on the workers",
        dask_address,
        key.describe(),
    )
    return None
