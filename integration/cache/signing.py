"""The key that signs cache entries and run records: a configured secret, else a local key.

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "cache.key")
    >>> key = local_key(path)
    >>> key.shared, len(key.secret), local_key(path) == key
    (False, 32, True)

Unpickling is code execution, so nothing read from a cache tier is unpickled unless it
carries an HMAC-SHA256 made with a key that writing to the cache does not give:

- a configured secret (``NODEGRAPH_CACHE_SECRET``, then ``caching.secret``; the flow
  process resolves ``caching.secret_block`` into ``caching.secret``), the same on every
  machine that shares a Redis or S3 tier;
- otherwise this user's local key: 32 random bytes created on first use, mode 0600, at
  ``$NODEGRAPH_CACHE_KEY_FILE``, else ``$XDG_CONFIG_HOME/nodegraph/cache.key``, else
  ``~/.config/nodegraph/cache.key`` (never in the cache folder, which others may write).

A key file that others could have written (group or world writable, owned by someone
else) is refused: whoever wrote it could sign entries.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from integration.config import CachingConfig
from integration.errors import NodegraphError

SECRET_ENV = "NODEGRAPH_CACHE_SECRET"
KEY_FILE_ENV = "NODEGRAPH_CACHE_KEY_FILE"
_KEY_BYTES = 32


class KeyFileError(NodegraphError):
    """The local key file cannot be created, read, or trusted."""


@dataclass(frozen=True)
class SigningKey:
    """A key, where it came from, and whether other machines can hold it too."""

    secret: bytes = field(repr=False)
    where: str
    shared: bool
    durable: bool = True
    """False for a key of one process only (``ephemeral_key``): what it signs cannot
    be read back by any other process, so it signs the memory tier only."""

    @property
    def id(self) -> str:
        """A public name for the key: the first 8 hex digits of its sha256."""
        return hashlib.sha256(self.secret).hexdigest()[:8]

    @functools.cached_property  # read for every entry sealed or opened
    def short_id(self) -> bytes:
        """The 4 bytes of ``id`` that entries carry, to tell which key signed them."""
        return hashlib.sha256(self.secret).digest()[:4]

    def describe(self) -> str:
        kind = "configured secret" if self.shared else "local key"
        return f"{kind} {self.id} ({self.where})"


def key_file_path() -> Path:
    """Where the local key lives (see the module docstring)."""
    configured = os.environ.get(KEY_FILE_ENV)
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "nodegraph" / "cache.key"


def _shown(path: Path) -> str:
    home = str(Path.home())
    text = str(path)
    return "~" + text[len(home) :] if text.startswith(home + os.sep) else text


def _read_trusted(path: Path) -> bytes:
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise KeyFileError(f"cache key file {path} is not a regular file")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise KeyFileError(
            f"cache key file {path} is owned by uid {info.st_uid}, not by you "
            f"(uid {os.getuid()}); whoever owns it could sign cache entries. Remove it, "
            "and nodegraph makes a new one"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise KeyFileError(
            f"cache key file {path} is writable by others (mode "
            f"{stat.S_IMODE(info.st_mode):04o}); refusing it. Fix: chmod 600 {path}"
        )
    text = path.read_text(encoding="ascii", errors="replace").strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) != _KEY_BYTES:
        raise KeyFileError(
            f"cache key file {path} does not hold a nodegraph key ({_KEY_BYTES * 2} hex "
            "digits); remove it, and nodegraph makes a new one"
        )
    return secret


def local_key(path: str | Path | None = None) -> SigningKey:
    """This user's local key, created on first use (atomically: racing processes agree)."""
    where = Path(path) if path is not None else key_file_path()
    try:
        return SigningKey(_read_trusted(where), _shown(where), shared=False)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise KeyFileError(f"cannot read cache key file {where}: {exc}") from exc
    try:
        where.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = where.with_name(f".{where.name}.{os.getpid()}.{secrets.token_hex(4)}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "w", encoding="ascii") as out:
                out.write(secrets.token_bytes(_KEY_BYTES).hex() + "\n")
            # A hard link publishes the complete file or fails if another process won
            # the race: either way every process then reads the one key at ``where``.
            os.link(temporary, where)
        except FileExistsError:
            pass
        except OSError:
            # No hard links here (some network and FUSE file systems): O_EXCL still
            # lets one process win; the others read its key.
            _create_exclusively(where)
        finally:
            temporary.unlink(missing_ok=True)
        return SigningKey(_read_trusted(where), _shown(where), shared=False)
    except OSError as exc:
        raise KeyFileError(f"cannot create cache key file {where}: {exc}") from exc


def _create_exclusively(where: Path) -> None:
    try:
        descriptor = os.open(where, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(descriptor, "w", encoding="ascii") as out:
        out.write(secrets.token_bytes(_KEY_BYTES).hex() + "\n")


def configured_key(caching: CachingConfig | None = None) -> SigningKey | None:
    """The configured secret: ``NODEGRAPH_CACHE_SECRET``, then ``caching.secret``."""
    value = os.environ.get(SECRET_ENV)
    if value:
        return SigningKey(value.encode(), SECRET_ENV, shared=True)
    if caching is not None and caching.secret is not None:
        secret = caching.secret.get_secret_value()
        if secret:
            where = (
                f"Prefect Secret block {caching.secret_block!r}"
                if caching.secret_block
                else "caching.secret"
            )
            return SigningKey(secret.encode(), where, shared=True)
    return None


def resolve_key(caching: CachingConfig | None = None) -> SigningKey:
    """The key this process signs and verifies with; ``KeyFileError`` when the local key
    is needed and cannot be had."""
    found = configured_key(caching)
    if found is not None:
        return found
    if caching is not None and caching.secret_block:
        raise KeyFileError(
            f"caching.secret_block {caching.secret_block!r} is loaded by the flow process "
            "(integration.prefect.secrets.resolve_secret_block) and was not resolved here"
        )
    return local_key()


def ephemeral_key(reason: str) -> SigningKey:
    """A key that lives only in this process, for when no durable key can be had."""
    return SigningKey(
        secrets.token_bytes(_KEY_BYTES), f"temporary: {reason}", shared=False, durable=False
    )


def sign(key: SigningKey, data: bytes) -> str:
    """The HMAC-SHA256 of ``data`` under ``key``, in hex (for values outside the cache
    tiers, such as the pickled inputs of a run record)."""
    return hmac.new(key.secret, data, hashlib.sha256).hexdigest()


def verifies(key: SigningKey, data: bytes, signature: object) -> bool:
    """Whether ``signature`` is ``sign(key, data)``."""
    return isinstance(signature, str) and hmac.compare_digest(sign(key, data), signature)
