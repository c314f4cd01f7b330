from __future__ import annotations

from collections import Counter

import pytest

from consensus.validators import ValidatorSet


def vset(stakes: list[int]) -> ValidatorSet:
    return ValidatorSet.of((bytes([i]) * 32, s) for i, s in enumerate(stakes))


def test_quorum_is_strictly_more_than_two_thirds() -> None:
    vs = vset([1, 1, 1])
    assert not vs.is_quorum(2)  # exactly 2/3 is not enough
    assert vs.is_quorum(3)
    vs = vset([100, 100, 100, 1])  # total 301
    assert not vs.is_quorum(200)
    assert vs.is_quorum(201)
    assert vs.quorum_count() == 3
    assert vs.exceeds_one_third(101) and not vs.exceeds_one_third(100)


def test_rejects_bad_sets() -> None:
    with pytest.raises(ValueError):
        vset([])
    with pytest.raises(ValueError):
        vset([1, 0])
    with pytest.raises(ValueError):
        ValidatorSet.of([(b"a" * 32, 1), (b"a" * 32, 2)])


def test_leader_is_deterministic_and_stake_proportional() -> None:
    stakes = [10, 20, 30, 40]
    a, b = vset(stakes), vset(list(stakes))
    counts = Counter(a.leader(h, 0) for h in range(4000))
    assert all(a.leader(h, v) == b.leader(h, v) for h in range(50) for v in range(5))
    for i, s in enumerate(stakes):
        share = counts[bytes([i]) * 32] / 4000
        assert abs(share - s / 100) < 0.03, (i, share)


def test_successive_views_try_every_validator() -> None:
    vs = vset([5, 1, 1, 90, 3])
    for h in range(20):
        assert {vs.leader(h, v) for v in range(5)} == {v.hotkey for v in vs.validators}
