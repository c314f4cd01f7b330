"""Wire format: canonical CBOR messages, sr25519 hotkeys and signed, domain-separated envelopes."""

from wire.codec import (
    U8,
    U16,
    U32,
    U64,
    Bytes32,
    Bytes64,
    Len,
    Range,
    decode,
    decode_any,
    digest,
    encode,
    spec_of,
    wire_message,
)
from wire.errors import WireError

__all__ = [
    "U8",
    "U16",
    "U32",
    "U64",
    "Bytes32",
    "Bytes64",
    "Len",
    "Range",
    "WireError",
    "decode",
    "decode_any",
    "digest",
    "encode",
    "spec_of",
    "wire_message",
]
