"""The simulated application: a hash-linked chain of blocks with a validity rule.

A block is canonical CBOR ``[height, parent_hash, payload]``; it is valid at height h only if its
parent is the block this node decided at h-1. That makes any fork visible to the checker and gives
the replica's injected validity check something real to refuse.

With epochs (`schedule` given), the first block of every epoch is
``[height, parent_hash, payload, snapshot]``: the snapshot names the next epoch's validator set
(`consensus/sim/epochs.py`) and must equal the schedule's (the simulated chain's) set, and the
application answers the replica's `vset_for(height)` from the blocks it has decided, as the node
does (`validator_node/pipeline/validator_sets.py`): epoch 0 is the genesis set, epoch e+1 is the
set in epoch e's decided first block, and a height of an epoch not known yet gets the set of the
next height to decide.
"""

from __future__ import annotations

import hashlib
from typing import Any

from consensus.messages import Certificate, DecisionPacket
from consensus.sim.epochs import EpochSchedule, decode_snapshot, encode_snapshot
from consensus.validators import ValidatorSet
from wire import cbor
from wire.errors import WireError

GENESIS = bytes(32)
MAX_PAYLOAD = 4096
MAX_BLOCK = 64 * 1024  # a payload of up to 32 KiB (`SimConfig.payload_bytes`) and a 256-member snapshot


def make_block(height: int, parent: bytes, payload: bytes, snapshot: list[Any] | None = None) -> bytes:
    if snapshot is None:
        return cbor.dumps([height, parent, payload])
    return cbor.dumps([height, parent, payload, snapshot])


class ChainApp:
    """One node's view of the decided chain (the 'application store' in the simulator)."""

    def __init__(self, genesis: ValidatorSet | None = None, schedule: EpochSchedule | None = None) -> None:
        self.decided: dict[int, bytes] = {}  # height -> block hash
        self._top = 0  # the highest decided height
        self.proofs: dict[int, DecisionPacket] = {}  # height -> block and commit certificate
        self.schedule = schedule
        self.genesis = genesis if genesis is not None or schedule is None else schedule.sets[0]
        # epoch -> its set, as learnt from decided blocks (epochs only)
        self.sets: dict[int, ValidatorSet] = {} if self.genesis is None else {0: self.genesis}

    def tip(self) -> tuple[int, bytes]:
        if not self._top:
            return 0, GENESIS
        return self._top, self.decided[self._top]

    # --- validator sets ---------------------------------------------------------------------

    def vset_for(self, height: int) -> ValidatorSet:
        """The set that certifies `height`, from decided blocks only (see the module docstring)."""
        if self.schedule is None:
            assert self.genesis is not None, "a ChainApp without a genesis set has no vset_for"
            return self.genesis
        found = self.sets.get(self.schedule.epoch_of(height))
        if found is None:
            found = self.sets[self.schedule.epoch_of(self.tip()[0] + 1)]
        return found

    def snapshot_due(self, height: int) -> list[Any] | None:
        """The snapshot a proposal at `height` must carry (None unless it opens an epoch)."""
        s = self.schedule
        if s is None or (height - 1) % s.epoch_blocks:
            return None
        return encode_snapshot(s.set_of_epoch(s.epoch_of(height) + 1))

    # --- blocks -----------------------------------------------------------------------------

    def validate(self, height: int, block: bytes) -> str | None:
        try:
            value = cbor.loads(block, MAX_BLOCK)
        except WireError as exc:
            return f"undecodable block: {exc}"
        due = self.snapshot_due(height)
        if not (isinstance(value, list) and len(value) == (3 if due is None else 4)):
            return "block is not [height, parent, payload" + ("]" if due is None else ", snapshot]")
        h, parent, payload = value[:3]
        if h != height:
            return f"block says height {h}"
        expected = GENESIS if height == 1 else self.decided.get(height - 1)
        if expected is None:
            return f"parent {height - 1} not decided here"
        if parent != expected:
            return "wrong parent"
        if not isinstance(payload, bytes):
            return "payload is not bytes"
        if due is not None and value[3] != due:
            return "the snapshot is not the chain's next validator set"
        return None

    def apply(self, height: int, block: bytes, certificate: Certificate | None = None) -> None:
        self.decided[height] = hashlib.sha256(block).digest()
        self._top = max(self._top, height)
        if certificate is not None:
            self.proofs[height] = DecisionPacket(block=block, certificate=certificate)
        s = self.schedule
        if s is not None and (height - 1) % s.epoch_blocks == 0:
            value = cbor.loads(block, MAX_BLOCK)
            quorum = (self.sets[0].quorum_num, self.sets[0].quorum_den)
            learnt = decode_snapshot(value[3] if len(value) == 4 else None, quorum)
            if learnt is not None:  # a snapshot without a usable set keeps the set before it
                self.sets[s.epoch_of(height) + 1] = learnt
            else:
                self.sets.setdefault(s.epoch_of(height) + 1, self.sets[s.epoch_of(height)])

    def decision(self, height: int) -> DecisionPacket | None:
        return self.proofs.get(height)
