"""A replica that has decided many heights, and a validator asking it for them (real sr25519)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from consensus.actions import Send
from consensus.certificates import build_certificate, vote_signing_bytes
from consensus.crypto import Sr25519Scheme, seal
from consensus.messages import (
    PHASE_COMMIT,
    DecisionPacket,
    SyncPacket,
    SyncRequest,
    ViewChange,
    ViewChangePacket,
)
from consensus.replica import Replica, ReplicaConfig
from consensus.sim.app import make_block
from consensus.validators import ValidatorSet
from wire.codec import encode
from wire.keys import Hotkey

NETUID = 7


class CountingScheme:
    """The real sr25519 check, counted: how many signatures a replica verified."""

    def __init__(self) -> None:
        self.calls = 0
        self._real = Sr25519Scheme()

    def verify(self, public_key: bytes, data: bytes, signature: bytes) -> bool:
        self.calls += 1
        return self._real.verify(public_key, data, signature)


@dataclass
class Served:
    """`server` has decided heights 1..tip; `asker` is a validator that lags behind it."""

    keys: list[Hotkey]
    vset: ValidatorSet
    server: Replica
    scheme: CountingScheme
    tip: int
    block_size: int
    sent: list[DecisionPacket] = field(default_factory=list)

    @property
    def asker(self) -> Hotkey:
        return self.keys[1]

    def deliver(self, packet: Any, now: float) -> list[Any]:
        actions = self.server.on_message(encode(packet), now)
        for a in actions:
            if isinstance(a, Send) and isinstance(a.packet, DecisionPacket):
                assert a.to == self.asker.public_key
                self.sent.append(a.packet)
        return actions

    def sync_request(self, height: int) -> SyncPacket:
        return SyncPacket(request=seal(SyncRequest(height=height), self.asker, NETUID))

    def view_change(self, height: int, view: int = 1) -> ViewChangePacket:
        env = seal(ViewChange(height, view, None, None), self.asker, NETUID)
        return ViewChangePacket(view_change=env, prepared=None, block=None)

    def sent_bytes(self) -> int:
        return sum(len(encode(d)) for d in self.sent)


def served(tip: int, block_size: int = 64, config: ReplicaConfig | None = None) -> Served:
    keys = [Hotkey.from_name(f"budget-v{i}") for i in range(4)]
    vset = ValidatorSet.of((k.public_key, 1) for k in keys)

    @cache
    def decision(height: int) -> DecisionPacket | None:
        if not 1 <= height <= tip:
            return None
        block = make_block(height, bytes(32), bytes(block_size))
        bh = hashlib.sha256(block).digest()
        data = vote_signing_bytes(NETUID, PHASE_COMMIT, height, 0, bh)
        sigs = {k.public_key: k.sign(data) for k in keys[:3]}
        return DecisionPacket(block=block, certificate=build_certificate(PHASE_COMMIT, height, 0, bh, sigs))

    scheme = CountingScheme()
    server = Replica(
        keys[0],
        lambda h: vset,
        lambda h, b: None,
        config or ReplicaConfig(netuid=NETUID, base_timeout=1.0),
        scheme=scheme,
        committed_height=tip,
        decisions=decision,
    )
    server.start(0.0)
    return Served(keys, vset, server, scheme, tip, block_size)
