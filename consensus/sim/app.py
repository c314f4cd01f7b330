"""The simulated application: a hash-linked chain of blocks with a validity rule.

A block is canonical CBOR ``[height, parent_hash, payload]``; it is valid at height h only if its
parent is the block this node decided at h-1. That makes any fork visible to the checker and gives
the replica's injected validity check something real to refuse.
"""

from __future__ import annotations

import hashlib

from consensus.messages import Certificate, DecisionPacket
from wire import cbor
from wire.errors import WireError

GENESIS = bytes(32)
MAX_PAYLOAD = 4096


def make_block(height: int, parent: bytes, payload: bytes) -> bytes:
    return cbor.dumps([height, parent, payload])


class ChainApp:
    """One node's view of the decided chain (the 'application store' in the simulator)."""

    def __init__(self) -> None:
        self.decided: dict[int, bytes] = {}  # height -> block hash
        self.proofs: dict[int, DecisionPacket] = {}  # height -> block and commit certificate

    def tip(self) -> tuple[int, bytes]:
        if not self.decided:
            return 0, GENESIS
        h = max(self.decided)
        return h, self.decided[h]

    def validate(self, height: int, block: bytes) -> str | None:
        try:
            value = cbor.loads(block, MAX_PAYLOAD + 128)
        except WireError as exc:
            return f"undecodable block: {exc}"
        if not (isinstance(value, list) and len(value) == 3):
            return "block is not [height, parent, payload]"
        h, parent, payload = value
        if h != height:
            return f"block says height {h}"
        expected = GENESIS if height == 1 else self.decided.get(height - 1)
        if expected is None:
            return f"parent {height - 1} not decided here"
        if parent != expected:
            return "wrong parent"
        if not isinstance(payload, bytes):
            return "payload is not bytes"
        return None

    def apply(self, height: int, block: bytes, certificate: Certificate | None = None) -> None:
        self.decided[height] = hashlib.sha256(block).digest()
        if certificate is not None:
            self.proofs[height] = DecisionPacket(block=block, certificate=certificate)

    def decision(self, height: int) -> DecisionPacket | None:
        return self.proofs.get(height)
