"""Entry envelopes: every stored result is checksummed and signed (HMAC-SHA256).

    >>> from integration.cache.envelope import seal, unseal
    >>> from integration.cache.signing import SigningKey
    >>> key = SigningKey(b"k" * 32, "example", shared=True)
    >>> unseal(seal(b"payload", key), key)
    b'payload'

Unpickling is code execution, so an entry read from any tier is verified before its
payload is handed to a deserializer. Two checks, so that the two failures read apart:

- ``CorruptEntry``: the bytes were damaged (truncated, flipped, not an entry at all):
  its sha256 checksum, which anyone can compute, does not match.
- ``ForgedEntry``: the checksum holds but the HMAC does not: the entry was written
  without the key (forged, by anyone who can write the tier), signed with another key
  (another machine's local key), or by an older nodegraph that did not sign entries.

Layout: ``MAGIC | flags (1) | written_at (8, float seconds) | key id (4) | sha256 (32)
| hmac (32) | payload``. Both digests cover ``written_at + key id + payload``.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import time
from dataclasses import dataclass

from integration.cache.signing import SigningKey
from integration.errors import NodegraphError

MAGIC = b"NGC2"
_OLD_MAGIC = b"NGC1"  # unsigned or optionally signed entries of earlier versions
_HEADER = struct.Struct(">4sBd4s32s32s")
_STAMP = struct.Struct(">d")
_STAMP_OFFSET = 5  # the same in both layouts


class CorruptEntry(NodegraphError):
    """A stored entry does not match its checksum (truncated, flipped bytes, ...)."""


class ForgedEntry(NodegraphError):
    """A well-formed entry whose signature the key does not verify."""

    def __init__(self, message: str, signer: str | None = None) -> None:
        super().__init__(message)
        self.signer = signer
        """The key id the entry claims to be signed with (``None``: unsigned)."""


@dataclass(frozen=True)
class Verdict:
    """What ``check`` found about an entry, without unpickling it."""

    ok: bool
    problem: str | None = None
    """``None``, ``"forged"`` or ``"corrupt"``."""
    detail: str = ""
    signer: str | None = None
    written_at: float | None = None


def seal(payload: bytes, key: SigningKey, written_at: float | None = None) -> bytes:
    """Wrap a payload with its write time, a checksum and the key's HMAC."""
    stamp = time.time() if written_at is None else written_at
    body = _STAMP.pack(stamp) + key.short_id + payload
    checksum = hashlib.sha256(body).digest()
    signature = hmac.new(key.secret, body, hashlib.sha256).digest()
    return _HEADER.pack(MAGIC, 0, stamp, key.short_id, checksum, signature) + payload


def written_at(entry: bytes) -> float:
    """When the entry was written (seconds since the epoch), without verifying it."""
    if len(entry) < _STAMP_OFFSET + _STAMP.size or entry[:4] not in (MAGIC, _OLD_MAGIC):
        raise CorruptEntry("not a nodegraph cache entry")
    return _STAMP.unpack_from(entry, _STAMP_OFFSET)[0]


def unseal(entry: bytes, key: SigningKey) -> bytes:
    """The verified payload; ``CorruptEntry`` or ``ForgedEntry`` otherwise."""
    if entry[:4] == _OLD_MAGIC:
        raise ForgedEntry("entry is not signed (written by an older nodegraph, or forged)")
    if len(entry) < _HEADER.size or entry[:4] != MAGIC:
        raise CorruptEntry("not a nodegraph cache entry (bad header)")
    _, _, stamp, signer, checksum, signature = _HEADER.unpack_from(entry)
    payload = entry[_HEADER.size :]
    body = _STAMP.pack(stamp) + signer + payload
    if not hmac.compare_digest(hashlib.sha256(body).digest(), checksum):
        raise CorruptEntry("entry checksum does not match its contents")
    if not hmac.compare_digest(hmac.new(key.secret, body, hashlib.sha256).digest(), signature):
        if signer != key.short_id:
            raise ForgedEntry(f"entry is signed with another key ({signer.hex()})", signer.hex())
        raise ForgedEntry("entry signature does not match", signer.hex())
    return payload


def check(entry: bytes, key: SigningKey) -> Verdict:
    """Verify an entry without unpickling or returning its payload."""
    try:
        unseal(entry, key)
    except ForgedEntry as exc:
        return Verdict(False, "forged", str(exc), exc.signer, _stamp_or_none(entry))
    except CorruptEntry as exc:
        return Verdict(False, "corrupt", str(exc))
    return Verdict(True, signer=key.id, written_at=written_at(entry))


def _stamp_or_none(entry: bytes) -> float | None:
    try:
        return written_at(entry)
    except CorruptEntry:
        return None
