"""Signed envelopes: a wire message, its signer and an sr25519 signature bound to its purpose.

The signature covers the canonical CBOR of
``["bt-platform/sig/1", domain, netuid, tag, version, body]`` where `body` is the message's own
canonical encoding. So a signature made for one subnet, message type, version or purpose
(domain) never verifies for another, even if the payload bytes happened to coincide.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from wire import cbor, keys
from wire.codec import U16, Bytes32, Bytes64, Len, decode, encode, spec_of, wire_message
from wire.errors import WireError

SIGNATURE_CONTEXT = "bt-platform/sig/1"
M = TypeVar("M")


@wire_message("wire.signed", version=1, max_size=4 * 1024 * 1024 + 1024)
class SignedEnvelope:
    netuid: U16
    signer: Bytes32
    body: Annotated[bytes, Len(1, 4 * 1024 * 1024)]
    signature: Bytes64


def signing_bytes(netuid: int, msg_cls: type, body: bytes) -> bytes:
    spec = spec_of(msg_cls)
    return cbor.dumps([SIGNATURE_CONTEXT, spec.domain, netuid, spec.tag, spec.version, body])


def seal(msg: Any, hotkey: keys.Hotkey, netuid: int) -> SignedEnvelope:
    """Sign `msg` with `hotkey` for subnet `netuid`."""
    body = encode(msg)
    sig = hotkey.sign(signing_bytes(netuid, type(msg), body))
    return SignedEnvelope(netuid=netuid, signer=hotkey.public_key, body=body, signature=sig)


def open_envelope(env: SignedEnvelope, expected: type[M], netuid: int) -> M:
    """Check subnet and signature, then decode the body as `expected`. Raises WireError."""
    if env.netuid != netuid:
        raise WireError(f"signed for netuid {env.netuid}, expected {netuid}")
    if not keys.verify(env.signer, signing_bytes(netuid, expected, env.body), env.signature):
        raise WireError(f"bad signature on {spec_of(expected).tag} from {env.signer.hex()[:16]}")
    return decode(env.body, expected)


def verify_envelope(env: SignedEnvelope, body_type: type, netuid: int) -> None:
    """Check subnet and signature of an envelope whose body the caller already decoded (as
    `body_type`), so an item is parsed once and cheap checks can run before the signature."""
    if env.netuid != netuid:
        raise WireError(f"signed for netuid {env.netuid}, expected {netuid}")
    if not keys.verify(env.signer, signing_bytes(netuid, body_type, env.body), env.signature):
        raise WireError(f"bad signature on {spec_of(body_type).tag} from {env.signer.hex()[:16]}")


def open_unverified(env: SignedEnvelope, expected: type[M]) -> M:
    """Decode the body without checking the signature (for callers that verify separately)."""
    return decode(env.body, expected)
