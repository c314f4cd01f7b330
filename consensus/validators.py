"""The validator set of one epoch: hotkeys with integer stake, the quorum rule and leader election.

Stake is an integer (rao). A quorum is strictly more than 2/3 of the total stake, checked in
integers (3 * stake > 2 * total), so every validator computes exactly the same answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Validator:
    hotkey: bytes  # sr25519 public key, 32 bytes
    stake: int


@dataclass(frozen=True)
class ValidatorSet:
    """An immutable, canonically ordered validator set.

    `quorum_num/quorum_den` exist only so that a test can deliberately weaken the rule and prove
    the simulator's checker catches the resulting safety violation; production code never sets them.
    """

    validators: tuple[Validator, ...]
    quorum_num: int = 2
    quorum_den: int = 3
    _index: dict[bytes, int] = field(init=False, repr=False, compare=False)
    _leader_cache: dict[int, tuple[int, ...]] = field(init=False, repr=False, compare=False)
    _stakes: dict[bytes, int] = field(init=False, repr=False, compare=False)
    _total: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        keys = [v.hotkey for v in self.validators]
        if list(keys) != sorted(keys):
            raise ValueError("validators must be sorted by hotkey (use ValidatorSet.of)")
        if len(set(keys)) != len(keys):
            raise ValueError("duplicate hotkey in validator set")
        if any(v.stake <= 0 or type(v.stake) is not int for v in self.validators):
            raise ValueError("every validator needs a positive integer stake")
        if not self.validators:
            raise ValueError("empty validator set")
        object.__setattr__(self, "_index", {k: i for i, k in enumerate(keys)})
        object.__setattr__(self, "_stakes", {v.hotkey: v.stake for v in self.validators})
        object.__setattr__(self, "_total", sum(v.stake for v in self.validators))
        object.__setattr__(self, "_leader_cache", {})

    @classmethod
    def of(cls, members: Iterable[tuple[bytes, int]], *, quorum: tuple[int, int] = (2, 3)) -> ValidatorSet:
        vals = tuple(sorted((Validator(bytes(k), int(s)) for k, s in members), key=lambda v: v.hotkey))
        return cls(vals, quorum[0], quorum[1])

    # --- membership and stake ------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.validators)

    def __contains__(self, hotkey: object) -> bool:
        return hotkey in self._index

    @property
    def total_stake(self) -> int:
        return self._total

    def stake_of(self, hotkey: bytes) -> int:
        return self._stakes.get(hotkey, 0)

    def stake_of_all(self, hotkeys: Iterable[bytes]) -> int:
        return sum(self.stake_of(h) for h in set(hotkeys))

    def is_quorum(self, stake: int) -> bool:
        """Strictly more than 2/3 of the total stake (integer arithmetic)."""
        return stake * self.quorum_den > self.total_stake * self.quorum_num

    def exceeds_one_third(self, stake: int) -> bool:
        """More than 1/3 of stake: at least one honest validator is among them."""
        return stake * 3 > self.total_stake

    def quorum_count(self) -> int:
        """The smallest number of validators (taken by stake, largest first) that forms a quorum."""
        acc, n = 0, 0
        for v in sorted(self.validators, key=lambda v: -v.stake):
            acc += v.stake
            n += 1
            if self.is_quorum(acc):
                return n
        return n

    def fingerprint(self) -> bytes:
        h = hashlib.sha256(b"bt-platform/vset/1")
        for v in self.validators:
            h.update(v.hotkey + v.stake.to_bytes(16, "big"))
        return h.digest()

    # --- leader election -----------------------------------------------------------------------

    def leader(self, height: int, view: int) -> bytes:
        """Deterministic, stake-proportional leader of (height, view).

        For each height a stake-weighted permutation of the set is drawn from a hash of
        (set fingerprint, height); view v uses the v-th entry, cycling. The view-0 leader is
        therefore chosen with probability proportional to stake, and successive view changes try
        every validator once before repeating, so at most (number of faulty validators + 1)
        consecutive views can have a faulty leader.
        """
        order = self._leader_cache.get(height)
        if order is None:
            order = self._leader_order(height)
            if len(self._leader_cache) > 256:
                self._leader_cache.clear()
            self._leader_cache[height] = order
        return self.validators[order[view % len(order)]].hotkey

    def _leader_order(self, height: int) -> tuple[int, ...]:
        remaining = list(range(len(self.validators)))
        seed = hashlib.sha256(
            b"bt-platform/leader/1" + self.fingerprint() + height.to_bytes(8, "big")
        ).digest()
        order: list[int] = []
        draw = 0
        while remaining:
            total = sum(self.validators[i].stake for i in remaining)
            r = int.from_bytes(hashlib.sha256(seed + draw.to_bytes(4, "big")).digest(), "big") % total
            draw += 1
            for pos, i in enumerate(remaining):
                r -= self.validators[i].stake
                if r < 0:
                    order.append(remaining.pop(pos))
                    break
        return tuple(order)
