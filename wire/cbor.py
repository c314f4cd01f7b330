"""Canonical CBOR: the only byte form of anything that is signed, hashed or agreed on.

Decoding is strict: the input must be exactly one item, and re-encoding it canonically must give
back the same bytes. That makes every value's encoding unique, so a hash or signature over bytes
is a hash or signature over the value, and a peer cannot produce malleated variants.
"""

from __future__ import annotations

import io
from typing import Any

import cbor2

from wire.errors import WireError


def dumps(value: Any) -> bytes:
    """Encode `value` as canonical CBOR (RFC 8949 core deterministic encoding)."""
    try:
        return cbor2.dumps(value, canonical=True)
    except (cbor2.CBOREncodeError, TypeError, ValueError, OverflowError) as exc:
        raise WireError(f"cannot encode value: {exc}") from None


def loads(data: bytes, max_size: int, *, plain_check: bool = True) -> Any:
    """Decode exactly one canonical CBOR item of at most `max_size` bytes.

    Refuses oversized input before touching it, trailing bytes, tags (bignums, dates and other
    extensions are not part of any message), floats, maps, and any non-canonical encoding.
    `plain_check=False` skips the walk that refuses floats and maps, for callers (the message
    codec) that check every value against a schema anyway.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise WireError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > max_size:
        raise WireError(f"encoding is {len(data)} bytes, over the cap of {max_size}")
    if not data:
        raise WireError("empty input")
    stream = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(stream, tag_hook=_refuse_tag).decode()
    except WireError:
        raise
    except Exception as exc:  # cbor2 raises several types; all mean "malformed"
        raise WireError(f"malformed CBOR: {exc}") from None
    if stream.tell() != len(data):
        raise WireError(f"{len(data) - stream.tell()} trailing bytes after the CBOR item")
    if plain_check:
        _check_plain(value, depth=0)
    if dumps(value) != data:
        raise WireError("encoding is not canonical")
    return value


def _refuse_tag(decoder: Any, tag: Any) -> Any:
    raise WireError(f"CBOR tag {tag.tag} is not allowed")


_MAX_DEPTH = 32


def _check_plain(value: Any, depth: int) -> None:
    """Only ints, bools, None, bytes, text and arrays may appear in a message."""
    if depth > _MAX_DEPTH:
        raise WireError(f"nesting deeper than {_MAX_DEPTH}")
    if value is None or isinstance(value, bool | int | bytes | str):
        return
    if isinstance(value, list):
        for item in value:
            _check_plain(item, depth + 1)
        return
    raise WireError(f"CBOR type {type(value).__name__} is not allowed")
