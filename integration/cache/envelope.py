"""Entry envelopes: a checksum on every stored result, and an HMAC when a secret is set.

    >>> from integration.cache.envelope import seal, unseal
    >>> unseal(seal(b"payload", secret=b"k"), secret=b"k")
    b'payload'

Unpickling is code execution, so an entry read from a shared tier is verified before
its payload is handed to a deserializer: a corrupt entry fails its sha256 checksum, and
with ``NODEGRAPH_CACHE_SECRET`` set an unsigned or forged entry fails its HMAC-SHA256.

Layout: ``MAGIC | flags (1) | written_at (8, float seconds) | digest (32) | payload``.
The digest is sha256 of ``written_at + payload``, or HMAC-SHA256 of the same when the
entry is signed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import time

from integration.errors import NodegraphError

MAGIC = b"NGC1"
_SIGNED = 0x01
_HEADER = struct.Struct(">4sBd32s")
SECRET_ENV = "NODEGRAPH_CACHE_SECRET"


class CorruptEntry(NodegraphError):
    """A stored entry does not match its checksum (truncated, flipped bytes, ...)."""


class ForgedEntry(NodegraphError):
    """A stored entry is unsigned or its signature does not match the secret."""


def secret_from_env() -> bytes | None:
    """The HMAC secret from ``NODEGRAPH_CACHE_SECRET``, if set."""
    value = os.environ.get(SECRET_ENV)
    return value.encode() if value else None


def seal(payload: bytes, secret: bytes | None = None, written_at: float | None = None) -> bytes:
    """Wrap a payload with its write time and a checksum (or HMAC, given a secret)."""
    stamp = time.time() if written_at is None else written_at
    body = struct.pack(">d", stamp) + payload
    if secret:
        digest = hmac.new(secret, body, hashlib.sha256).digest()
        flags = _SIGNED
    else:
        digest = hashlib.sha256(body).digest()
        flags = 0
    return _HEADER.pack(MAGIC, flags, stamp, digest) + payload


def written_at(entry: bytes) -> float:
    """When the entry was written (seconds since the epoch), without verifying it."""
    if len(entry) < _HEADER.size or entry[:4] != MAGIC:
        raise CorruptEntry("not a nodegraph cache entry")
    return _HEADER.unpack_from(entry)[2]


def unseal(entry: bytes, secret: bytes | None = None) -> bytes:
    """The verified payload; ``CorruptEntry`` or ``ForgedEntry`` otherwise."""
    if len(entry) < _HEADER.size or entry[:4] != MAGIC:
        raise CorruptEntry("not a nodegraph cache entry (bad header)")
    _, flags, stamp, digest = _HEADER.unpack_from(entry)
    payload = entry[_HEADER.size :]
    body = struct.pack(">d", stamp) + payload
    if secret:
        if not flags & _SIGNED:
            raise ForgedEntry("entry is not signed, and a cache secret is configured")
        expected = hmac.new(secret, body, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, digest):
            raise ForgedEntry("entry signature does not match the cache secret")
        return payload
    if flags & _SIGNED:
        # Signed by someone with a secret we do not have: we cannot verify its checksum.
        raise ForgedEntry("entry is signed, but no cache secret is configured")
    if not hmac.compare_digest(hashlib.sha256(body).digest(), digest):
        raise CorruptEntry("entry checksum does not match its contents")
    return payload
