"""Real commit certificates for tests: sr25519 hotkeys sign COMMIT votes over a block hash."""

from __future__ import annotations

import hashlib

from consensus.certificates import build_certificate, vote_signing_bytes
from consensus.messages import PHASE_COMMIT, PHASE_PREPARE, DecisionPacket
from consensus.validators import ValidatorSet
from wire.keys import Hotkey

NETUID = 11
KEYS = [Hotkey.from_name(f"dht-test-v{i}") for i in range(4)]
STAKES = [40, 30, 20, 10]
VSET = ValidatorSet.of((k.public_key, s) for k, s in zip(KEYS, STAKES, strict=True))
OUTSIDER = Hotkey.from_name("dht-test-outsider")


def vset_for(height: int) -> ValidatorSet | None:
    """The validator set is known for heights below 1000 only (like a node that has not synced)."""
    return VSET if height < 1000 else None


def decision(
    height: int,
    block: bytes | None = None,
    signers: list[Hotkey] | None = None,
    *,
    netuid: int = NETUID,
    phase: int = PHASE_COMMIT,
    view: int = 0,
    cert_height: int | None = None,
) -> DecisionPacket:
    """A decided block at `height` whose certificate is signed by `signers` (default: a quorum)."""
    block = block if block is not None else f"block {height}".encode() * 8
    bh = hashlib.sha256(block).digest()
    h = height if cert_height is None else cert_height
    data = vote_signing_bytes(netuid, phase, h, view, bh)
    signers = signers if signers is not None else KEYS[:3]  # 90 of 100 stake
    sigs = {k.public_key: k.sign(data) for k in signers}
    return DecisionPacket(block=block, certificate=build_certificate(phase, h, view, bh, sigs))


__all__ = ["KEYS", "NETUID", "OUTSIDER", "PHASE_PREPARE", "VSET", "decision", "vset_for"]
