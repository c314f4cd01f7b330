"""Signatures are bound to subnet, message type, version and purpose."""

from __future__ import annotations

import pytest

from wire import keys
from wire.codec import U64, Bytes32, wire_message
from wire.envelope import SignedEnvelope, open_envelope, seal
from wire.errors import WireError


@wire_message("test.ping", version=1, domain="test-purpose-a")
class Ping:
    nonce: U64
    data: Bytes32


@wire_message("test.pong", version=1, domain="test-purpose-b")
class Pong:  # same layout as Ping on purpose: only the type/domain separates them
    nonce: U64
    data: Bytes32


ALICE = keys.Hotkey.from_name("alice")
MALLORY = keys.Hotkey.from_name("mallory")


def test_seal_and_open() -> None:
    env = seal(Ping(1, bytes(32)), ALICE, netuid=7)
    assert env.signer == ALICE.public_key
    assert open_envelope(env, Ping, 7) == Ping(1, bytes(32))


def test_signature_is_not_valid_for_another_netuid() -> None:
    env = seal(Ping(1, bytes(32)), ALICE, netuid=7)
    moved = SignedEnvelope(netuid=8, signer=env.signer, body=env.body, signature=env.signature)
    with pytest.raises(WireError, match="bad signature"):
        open_envelope(moved, Ping, 8)
    with pytest.raises(WireError, match="expected 8"):
        open_envelope(env, Ping, 8)


def test_signature_is_not_valid_for_another_message_type() -> None:
    env = seal(Ping(1, bytes(32)), ALICE, netuid=7)
    # a Pong with the same field values has a different body (tag), and even a body copied
    # verbatim does not verify as a Pong because the signing bytes name the type and purpose
    with pytest.raises(WireError):
        open_envelope(env, Pong, 7)


def test_tampering_is_detected() -> None:
    env = seal(Ping(1, bytes(32)), ALICE, netuid=7)
    other_body = seal(Ping(2, bytes(32)), ALICE, netuid=7).body
    for bad in (
        SignedEnvelope(7, env.signer, other_body, env.signature),
        SignedEnvelope(7, MALLORY.public_key, env.body, env.signature),
        SignedEnvelope(7, env.signer, env.body, bytes(64)),
    ):
        with pytest.raises(WireError, match="bad signature"):
            open_envelope(bad, Ping, 7)


def test_verify_rejects_garbage_keys_without_raising() -> None:
    assert not keys.verify(b"\xff" * 32, b"x", bytes(64))
    assert not keys.verify(b"short", b"x", bytes(64))
    assert keys.public_key_of(ALICE.ss58) == ALICE.public_key
    with pytest.raises(WireError):
        keys.public_key_of("not-an-address")
