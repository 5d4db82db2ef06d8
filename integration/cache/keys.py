"""Content-addressed cache keys, computed for a whole graph before anything runs.

    >>> from integration.cache.keys import value_digest
    >>> value_digest({"b": 1, "a": [0.0, "x"]}) == value_digest({"a": [-0.0, "x"], "b": 1})
    True

A node's key is ``sha256`` over its type name, the type's version, its canonical
literal inputs, the keys and ports of the nodes feeding it (with the edge transform),
an optional fingerprint, and ``CACHE_VERSION``. Keys come from upstream *keys*, not
upstream data, so every key of a graph is known before the first node runs. The node
id never enters a key: two identical sub-chains share their results.

Canonical values: ``-0.0`` is ``0.0``; every NaN is the same NaN; mappings ignore key
order; tuples are lists; numpy scalars are the equal Python numbers; arrays hash by
dtype, shape and contents whatever their memory layout. ``int``, ``float`` and
``bool`` stay distinct (``1``, ``1.0`` and ``True`` are different inputs to a node).
Other objects may define ``__nodegraph_hash__() -> bytes | str``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import struct
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from integration.graph.transforms import TransformSpec
from integration.graph.validate import BoundGraph, BoundNode

CACHE_VERSION = "nodegraph-cache-1"
"""Bump to invalidate every stored result (for example when the key recipe changes)."""

KeyScope = Literal["content", "run"]


class UnhashableValueError(TypeError):
    """A literal input has no canonical form, so it cannot join a cache key."""


@dataclass(frozen=True)
class NodeKey:
    """A node's cache key. ``scope="run"`` keys are valid for one run only."""

    key: str
    scope: KeyScope = "content"

    @property
    def shared(self) -> bool:
        """Whether other runs may reuse a result stored under this key."""
        return self.scope == "content"


def value_digest(value: Any) -> str:
    """The canonical sha256 hex digest of a literal value."""
    digest = hashlib.sha256()
    _feed(digest.update, value)
    return digest.hexdigest()


def _feed(write: Callable[[bytes], Any], value: Any) -> None:
    # Every value is written as a type tag plus a length-prefixed body, so that no two
    # different values can produce the same byte stream.
    if value is None:
        write(b"N")
    elif value is True or value is False:
        write(b"T" if value else b"F")
    elif isinstance(value, int):
        text = str(value).encode()
        write(b"i" + struct.pack(">I", len(text)) + text)
    elif isinstance(value, float):
        write(b"f" + _float_bytes(value))
    elif isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        write(b"s" + struct.pack(">Q", len(data)) + data)
    elif isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        write(b"b" + struct.pack(">Q", len(data)) + data)
    elif isinstance(value, list | tuple):
        write(b"l" + struct.pack(">Q", len(value)))
        for item in value:
            _feed(write, item)
    elif isinstance(value, Mapping):
        items = sorted((value_digest(k), v) for k, v in value.items())
        write(b"d" + struct.pack(">Q", len(items)))
        for key_digest, item in items:
            write(bytes.fromhex(key_digest))
            _feed(write, item)
    elif isinstance(value, set | frozenset):
        digests = sorted(value_digest(item) for item in value)
        write(b"S" + struct.pack(">Q", len(digests)))
        for item_digest in digests:
            write(bytes.fromhex(item_digest))
    elif _is_numpy(value):
        _feed_numpy(write, value)
    elif hasattr(value, "__nodegraph_hash__"):
        data = value.__nodegraph_hash__()
        data = data.encode() if isinstance(data, str) else bytes(data)
        name = _qualified(type(value)).encode()
        write(b"o" + struct.pack(">I", len(name)) + name + struct.pack(">Q", len(data)) + data)
    elif hasattr(value, "model_dump") and hasattr(type(value), "model_fields"):
        _feed_object(write, value, value.model_dump(mode="python"))
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        _feed_object(write, value, dataclasses.asdict(value))
    else:
        raise UnhashableValueError(
            f"cannot build a cache key from a {_qualified(type(value))} value; use JSON "
            "types, numpy arrays, dataclasses or pydantic models, or give the class a "
            "__nodegraph_hash__() method"
        )


def _feed_object(write: Callable[[bytes], Any], value: Any, fields: dict[str, Any]) -> None:
    name = _qualified(type(value)).encode()
    write(b"m" + struct.pack(">I", len(name)) + name)
    _feed(write, fields)


def _float_bytes(value: float) -> bytes:
    if math.isnan(value):
        return b"nan"
    if value == 0.0:
        value = 0.0  # folds -0.0 into 0.0
    return struct.pack(">d", value)


def _is_numpy(value: Any) -> bool:
    return type(value).__module__ == "numpy"


def _feed_numpy(write: Callable[[bytes], Any], value: Any) -> None:
    # Lazy: numpy takes about 0.1 s to import, and only numpy values need it.
    import numpy as np

    if isinstance(value, np.generic):
        _feed(write, value.item())
        return
    if not isinstance(value, np.ndarray):
        raise UnhashableValueError(f"cannot build a cache key from numpy {type(value).__name__}")
    if value.dtype.hasobject:
        write(b"A" + struct.pack(">Q", value.ndim) + struct.pack(f">{value.ndim}Q", *value.shape))
        _feed(write, value.tolist())
        return
    array = np.ascontiguousarray(value)
    if array.dtype.kind == "f":
        array = np.where(array == 0, np.zeros((), array.dtype), array)  # -0.0 -> 0.0
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    array = array.astype(dtype, copy=False)
    header = f"{dtype.str}|{array.shape}".encode()
    write(b"a" + struct.pack(">I", len(header)) + header)
    if array.dtype.kind in "fc":
        # NaN payloads differ bit-wise; one canonical NaN per dtype
        nan_mask = np.isnan(array)
        if nan_mask.any():
            array = array.copy()
            array[nan_mask] = np.nan
    write(array.tobytes())


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


InputKey = tuple[Literal["edge"], str, str, TransformSpec | None] | tuple[Literal["value"], str]


def node_key(
    type_name: str,
    version: str,
    inputs: Mapping[str, InputKey | tuple[Literal["default"]]],
    fingerprint: Any = None,
    run_id: str | None = None,
) -> str:
    """The sha256 key of one node.

    ``inputs`` maps each port to ``("edge", upstream key, upstream port, transform)``,
    ``("value", value digest)`` or ``("default",)``. A ``run_id`` scopes the key to a run.
    """
    # The bytes are those of ``_feed`` over the same lists, spelled out for the common
    # shapes and joined for one sha256 call: keys are computed for every node of a
    # graph before it runs, and the generic walk cost ~15 µs a node.
    parts = [_header(type_name, version), struct.pack(">Q", len(inputs))]
    append = parts.append
    for port in sorted(inputs):
        binding = inputs[port]
        append(_text(port))
        if binding[0] == "edge":
            _, upstream_key, upstream_port, transform = binding
            append(_EDGE)
            append(_text(upstream_key))
            append(_text(upstream_port))
            if transform is None:
                append(b"N")
            else:
                _feed(append, transform.canonical())
        elif binding[0] == "value":
            append(_VALUE)
            append(_text(binding[1]))
        else:
            append(_DEFAULT)
    if fingerprint is None:
        append(_NO_FINGERPRINT)
    else:
        _feed(append, ["fingerprint", fingerprint])
    if run_id is None:
        append(_NO_RUN)
    else:
        _feed(append, ["run", run_id])
    return hashlib.sha256(b"".join(parts)).hexdigest()


def _fed(value: Any) -> bytes:
    parts: list[bytes] = []
    _feed(parts.append, value)
    return b"".join(parts)


def _text(value: str) -> bytes:
    data = value.encode("utf-8", "surrogatepass")
    return b"s" + struct.pack(">Q", len(data)) + data


@functools.lru_cache(maxsize=4096)
def _header(type_name: str, version: str) -> bytes:
    return _fed([CACHE_VERSION, type_name, version])


# Openings of the lists ``node_key`` feeds: ["edge", ...4], ["value", ...2], ["default"].
_EDGE = b"l" + struct.pack(">Q", 4) + _text("edge")
_VALUE = b"l" + struct.pack(">Q", 2) + _text("value")
_DEFAULT = _fed(["default"])
_NO_FINGERPRINT = _fed(["fingerprint", None])
_NO_RUN = _fed(["run", None])


def graph_keys(
    bound: BoundGraph, inputs: Mapping[str, Any], run_id: str | None = None
) -> dict[str, NodeKey]:
    """Every node's key, in topological order, before anything runs.

    ``inputs`` are the graph input values of this run. Nodes marked
    ``cacheable=False``, and nodes whose fingerprint is NaN, get run-scoped keys (and so
    does everything downstream of them, since their keys feed their consumers').
    """
    run_id = run_id or uuid.uuid4().hex
    keys: dict[str, NodeKey] = {}
    digests: dict[int, str] = {}
    for node_id in bound.order:
        node = bound.nodes[node_id]
        port_keys: dict[str, Any] = {}
        scoped = not node.type.cacheable
        for port, binding in node.bindings.items():
            if binding.kind == "edge":
                upstream = keys[binding.source]
                scoped = scoped or not upstream.shared
                port_keys[port] = ("edge", upstream.key, binding.source_port, binding.transform)
            elif binding.kind == "param":
                port_keys[port] = ("value", _cached_digest(digests, binding.value))
            elif binding.kind == "input":
                value = inputs[binding.source_port]
                port_keys[port] = (
                    "edge",
                    f"input:{_cached_digest(digests, value)}",
                    "",
                    binding.transform,
                )
            else:
                port_keys[port] = ("default",)
        fingerprint = _fingerprint(node, inputs)
        if isinstance(fingerprint, float) and math.isnan(fingerprint):
            scoped = True
        key = node_key(
            node.type.qualified_name,
            node.type.version,
            port_keys,
            fingerprint,
            run_id if scoped else None,
        )
        keys[node_id] = NodeKey(key, "run" if scoped else "content")
    return keys


def _cached_digest(digests: dict[int, str], value: Any) -> str:
    # Literals repeat across large graphs (the same param on many nodes); hash each
    # object once. Keyed by id() only within this call, while the values are alive.
    found = digests.get(id(value))
    if found is None:
        found = digests[id(value)] = value_digest(value)
    return found


def _fingerprint(node: BoundNode, inputs: Mapping[str, Any]) -> Any:
    fingerprint = node.type.fingerprint
    if fingerprint is None:
        return None
    literals: dict[str, Any] = {}
    for port, binding in node.bindings.items():
        if binding.kind in ("param", "default"):
            literals[port] = binding.value
        elif binding.kind == "input" and binding.transform is None:
            literals[port] = inputs[binding.source_port]
    return fingerprint(**literals)
