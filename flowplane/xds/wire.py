"""Hand-assembled xDS response bytes from pre-encoded resources (DESIGN.md §2 "Encode once").

Resources are serialized once by the snapshot builder (as `google.protobuf.Any` bytes). A
response only *wraps* those bytes: each field written here is length-delimited (wire type 2),
so assembling a response is tag + length varint + the cached bytes, with no protobuf encoder
involved and nothing re-encoded per stream.

Fields are written in field-number order, which is what the upb encoder does, so the output is
byte-identical to `Message.SerializeToString(deterministic=True)` of the equivalent message (the
tests check this). Protobuf parsers accept fields in any order anyway, which is what makes
`with_nonce` (appending field 5 to a finished body) valid.

Pure functions of bytes and strings: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = [
    "EncodedResource",
    "delta_response",
    "encode_any",
    "length_delimited",
    "sotw_response_body",
    "varint",
    "with_nonce",
]


class EncodedResource(Protocol):
    """What `delta_response` reads of a resource; `flowplane.xds.snapshot.Resource` is one.

    A protocol rather than an import: `snapshot.py` imports this module to encode its `Any`s,
    and imports inside `xds/` flow one way (DESIGN.md §3).
    """

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def any_bytes(self) -> bytes: ...


# One-byte lengths (< 128) are by far the commonest: precompute them.
_SMALL = tuple(bytes((n,)) for n in range(128))


def varint(n: int) -> bytes:
    """The base-128 varint encoding of a non-negative integer `n`."""
    if n < 128:
        if n < 0:
            raise ValueError("varint takes a non-negative integer")
        return _SMALL[n]
    out = bytearray()
    while n >= 128:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _tag(field_number: int) -> bytes:
    return varint((field_number << 3) | 2)  # wire type 2: length-delimited


def length_delimited(field_number: int, data: bytes) -> bytes:
    """One length-delimited field: tag, length, `data`."""
    return _tag(field_number) + varint(len(data)) + data


# Tags used on the hot path (all fields < 16, so one byte each).
_F1, _F2, _F3, _F4, _F5, _F6 = (_tag(n) for n in range(1, 7))


def _string(tag: bytes, value: str) -> bytes:
    # proto3: an empty string is the default and is not written (matches upb's output).
    if not value:
        return b""
    raw = value.encode()
    return tag + varint(len(raw)) + raw


def encode_any(type_url: str, value: bytes) -> bytes:
    """Serialized `google.protobuf.Any{type_url=1, value=2}` around already-encoded `value`.

    Equal to `Any(type_url=..., value=...).SerializeToString()`; avoids the double encode of
    `Any.Pack` (which serializes the message, then copies it again into the Any).
    """
    return _string(_F1, type_url) + (_F2 + varint(len(value)) + value if value else b"")


def sotw_response_body(
    version_info: str, type_url: str, resources_any_bytes: Sequence[bytes]
) -> bytes:
    """A `DiscoveryResponse` without its nonce: version_info (1), resources (2), type_url (4).

    `resources_any_bytes` are serialized `Any`s, written as they are, in the given order. The
    result is the same for every stream that is owed this content; `with_nonce` personalises it.
    """
    parts = [_string(_F1, version_info)]
    for raw in resources_any_bytes:
        parts.append(_F2)
        parts.append(varint(len(raw)))
        parts.append(raw)
    parts.append(_string(_F4, type_url))
    return b"".join(parts)


def with_nonce(body: bytes, nonce: str) -> bytes:
    """`body` (from `sotw_response_body`) with field 5, `nonce`, appended.

    Field 5 follows fields 1-4, so the result is also byte-identical to upb's own encoding.
    """
    return body + _string(_F5, nonce)


def delta_response(
    system_version_info: str,
    type_url: str,
    resources: Sequence[EncodedResource],
    removed: Sequence[str],
    nonce: str,
) -> bytes:
    """A serialized `DeltaDiscoveryResponse` built from cached resource bytes.

    Fields: system_version_info (1), resources (2), type_url (4), nonce (5),
    removed_resources (6). Each `envoy.service.discovery.v3.Resource` carries version (1),
    resource (2, the cached `Any` bytes as they are) and name (3); xds rule 13 makes its
    version the resource's content hash.
    """
    parts = [_string(_F1, system_version_info)]
    for res in resources:
        inner = b"".join(
            (
                _string(_F1, res.version),
                _F2,
                varint(len(res.any_bytes)),
                res.any_bytes,
                _string(_F3, res.name),
            )
        )
        parts.append(_F2)
        parts.append(varint(len(inner)))
        parts.append(inner)
    parts.append(_string(_F4, type_url))
    parts.append(_string(_F5, nonce))
    for name in removed:
        raw = name.encode()
        parts.append(_F6)
        parts.append(varint(len(raw)))
        parts.append(raw)
    return b"".join(parts)
