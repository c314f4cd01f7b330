"""Signing for consensus statements, with the scheme injected.

Production uses sr25519 hotkeys (`wire.keys`). The simulator may use `MacScheme`, a keyed-hash
stand-in that is unforgeable *inside the simulation* (a simulated Byzantine validator only holds
its own key) and ~50x cheaper, so thousands of seeds run in minutes. Both go through the same
domain-separated signing bytes, so the protocol code cannot tell them apart.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Protocol, TypeVar

from wire import keys
from wire.codec import decode, encode, spec_of
from wire.envelope import SignedEnvelope, signing_bytes
from wire.errors import WireError

M = TypeVar("M")


class Signer(Protocol):
    public_key: bytes

    def sign(self, data: bytes) -> bytes: ...


class Scheme(Protocol):
    def verify(self, public_key: bytes, data: bytes, signature: bytes) -> bool: ...


class Sr25519Scheme:
    """The real scheme: Bittensor sr25519 hotkeys."""

    def verify(self, public_key: bytes, data: bytes, signature: bytes) -> bool:
        return keys.verify(public_key, data, signature)


class MacKey:
    """A simulation-only key: public key = H(secret), signature = HMAC(secret, data) (64 bytes)."""

    __slots__ = ("_secret", "public_key")

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self.public_key = hashlib.sha256(b"mac-pub" + secret).digest()

    def sign(self, data: bytes) -> bytes:
        return hmac.new(self._secret, data, hashlib.sha512).digest()


class MacScheme:
    """Verifies `MacKey` signatures; the registry of secrets plays the role of the math."""

    def __init__(self) -> None:
        self._secrets: dict[bytes, bytes] = {}

    def key(self, name: str) -> MacKey:
        k = MacKey(hashlib.sha256(b"mac-secret" + name.encode()).digest())
        self._secrets[k.public_key] = k._secret
        return k

    def verify(self, public_key: bytes, data: bytes, signature: bytes) -> bool:
        secret = self._secrets.get(public_key)
        if secret is None or len(signature) != 64:
            return False
        return hmac.compare_digest(hmac.new(secret, data, hashlib.sha512).digest(), signature)


def seal(msg: Any, signer: Signer, netuid: int) -> SignedEnvelope:
    body = encode(msg)
    sig = signer.sign(signing_bytes(netuid, type(msg), body))
    return SignedEnvelope(netuid=netuid, signer=signer.public_key, body=body, signature=sig)


def open_signed(env: SignedEnvelope, expected: type[M], netuid: int, scheme: Scheme) -> M:
    """Decode and verify; raises WireError naming what was wrong."""
    if env.netuid != netuid:
        raise WireError(f"signed for netuid {env.netuid}, expected {netuid}")
    msg = decode(env.body, expected)
    if not scheme.verify(env.signer, signing_bytes(netuid, expected, env.body), env.signature):
        raise WireError(f"bad signature on {spec_of(expected).tag}")
    return msg
