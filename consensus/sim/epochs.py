"""Epoch-scheduled validator sets for the simulator: joins, leaves and stake moves.

The node's rule (`validator_node/pipeline/validator_sets.py`): the set of epoch e+1 is the
permit holders with stake in the metagraph snapshot carried by epoch e's first decided block, so
it is known a whole epoch before it is used; epoch 0 uses the genesis set. The simulator models
the chain's metagraph as a per-seed `EpochSchedule` (the set each epoch's snapshot names) and the
rule itself in `ChainApp` (`consensus/sim/app.py`): the proposer of an epoch's first block puts
the schedule's next set in it, every honest validator refuses a first block whose snapshot is not
that set (as a node checks the snapshot against its chain view at the pinned block), and each
node's replica asks its own application, which knows a set only once the block naming it is
decided.

Set changes between epochs, drawn from a seeded RNG of their own (so a seed without epochs runs
exactly as before): some honest validators leave, some new ones join (a joiner comes online when
the snapshot naming it is first decided, brought up to date by state sync, and follows the
network for an epoch before it votes), and stake moves (each member's stake scaled by 1/2..2,
sometimes one member becomes a whale holding half). The Byzantine validators stay in every set
and their stake is cut to strictly under 1/3 of each epoch's total. Integers throughout.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from consensus.validators import ValidatorSet


@dataclass(frozen=True)
class EpochSchedule:
    epoch_blocks: int
    sets: tuple[ValidatorSet, ...]  # sets[e]: the set of epoch e; the last one holds after the end

    def epoch_of(self, height: int) -> int:
        return (height - 1) // self.epoch_blocks

    def first_height(self, epoch: int) -> int:
        return epoch * self.epoch_blocks + 1

    def set_of_epoch(self, epoch: int) -> ValidatorSet:
        return self.sets[min(max(epoch, 0), len(self.sets) - 1)]

    def set_for(self, height: int) -> ValidatorSet:
        return self.set_of_epoch(self.epoch_of(height))

    def first_epoch_of(self, hotkey: bytes) -> int | None:
        """The first epoch whose set holds `hotkey` (None: never a member)."""
        return next((e for e, s in enumerate(self.sets) if hotkey in s), None)

    def changes(self) -> list[tuple[int, int, int]]:
        """(joined, left, stake changed) for each transition e -> e+1."""
        out = []
        for a, b in zip(self.sets, self.sets[1:], strict=False):
            joined = sum(1 for v in b.validators if v.hotkey not in a)
            left = sum(1 for v in a.validators if v.hotkey not in b)
            moved = sum(1 for v in b.validators if v.hotkey in a and a.stake_of(v.hotkey) != v.stake)
            out.append((joined, left, moved))
        return out


def cap_byzantine(stakes: dict[bytes, int], byzantine: set[bytes]) -> None:
    """Scale the Byzantine members' stake down, in place, to strictly under 1/3 of the total."""
    byz = [k for k in stakes if k in byzantine]
    if not byz:
        return
    honest_total = sum(s for k, s in stakes.items() if k not in byzantine)
    cap = (honest_total - 1) // 2  # 3 * byzantine < byzantine + honest  <=>  2 * byzantine < honest
    total = sum(stakes[k] for k in byz)
    if total > cap:
        for k in byz:
            stakes[k] = max(1, stakes[k] * cap // total)
        while sum(stakes[k] for k in byz) > cap:
            j = max(byz, key=lambda k: stakes[k])
            stakes[j] -= 1
        if any(stakes[k] <= 0 for k in byz):
            raise ValueError("cannot keep byzantine stake under 1/3 with these validators")


def make_schedule(
    rng: random.Random,
    genesis: ValidatorSet,
    pool: Sequence[bytes],
    byzantine: set[bytes],
    epochs: int,
    epoch_blocks: int,
    quorum: tuple[int, int] = (2, 3),
) -> EpochSchedule:
    """`epochs` set changes after `genesis`, drawing joiners from `pool` (hotkeys never used)."""
    n0 = len(genesis)
    lo, hi = max(3, n0 - n0 // 4 - 1), n0 + n0 // 4 + 1  # the set's size stays near its start
    unit = 10**9
    sets = [genesis]
    fresh = list(pool)
    for _ in range(epochs):
        stakes = {v.hotkey: v.stake for v in sets[-1].validators}
        honest = sorted(k for k in stakes if k not in byzantine)
        size = len(stakes)
        n_leave = rng.randint(0, max(0, min(len(honest) - 1, size - lo, max(1, n0 // 8))))
        for k in rng.sample(honest, n_leave):
            del stakes[k]
        n_join = rng.randint(0, max(0, min(len(fresh), hi - len(stakes), max(1, n0 // 8))))
        if len(stakes) < lo:
            n_join = max(n_join, min(len(fresh), lo - len(stakes)))
        for _ in range(n_join):
            stakes[fresh.pop(0)] = rng.randint(1, 1000) * unit
        for k in sorted(stakes):
            if rng.random() < 0.5:
                stakes[k] = max(1, stakes[k] * rng.randint(50, 200) // 100)
        if rng.random() < 0.2:
            whale = rng.choice(sorted(stakes))
            stakes[whale] = sum(s for k, s in stakes.items() if k != whale)  # half of the new total
        cap_byzantine(stakes, byzantine)
        sets.append(ValidatorSet.of(stakes.items(), quorum=quorum))
    return EpochSchedule(epoch_blocks, tuple(sets))


def encode_snapshot(vset: ValidatorSet) -> list[list[bytes | int]]:
    """What an epoch's first block carries: [[hotkey, stake], ...] in the set's canonical order."""
    return [[v.hotkey, v.stake] for v in vset.validators]


def decode_snapshot(snapshot: object, quorum: tuple[int, int] = (2, 3)) -> ValidatorSet | None:
    """The set a snapshot names, or None if it is not a well-formed, canonical one."""
    if not isinstance(snapshot, list) or not snapshot:
        return None
    members = []
    for item in snapshot:
        if not (isinstance(item, list) and len(item) == 2):
            return None
        key, stake = item
        if not (isinstance(key, bytes) and len(key) == 32 and type(stake) is int and stake > 0):
            return None
        members.append((key, stake))
    try:
        vset = ValidatorSet.of(members, quorum=quorum)
    except ValueError:
        return None
    return vset if encode_snapshot(vset) == snapshot else None
