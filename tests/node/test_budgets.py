"""The p2p budget pieces (validator_node/p2p/budgets.py), driven by a hand-held clock."""

from __future__ import annotations

import pytest

from validator_node.p2p.budgets import (
    ConcurrencyLimit,
    OverLimit,
    P2PLimits,
    PeerBudgets,
    Rate,
    RateLimitedLog,
    TokenBucket,
)
from validator_node.p2p.host import MAX_FRAME


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_passes_its_burst_then_its_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=10, burst=5, clock=clock)
    assert [bucket.take() for _ in range(6)] == [True] * 5 + [False]
    clock.now += 0.25  # 2.5 tokens
    assert [bucket.take() for _ in range(3)] == [True, True, False]
    clock.now += 100  # refills to the burst, no further
    assert bucket.tokens == 5
    assert not bucket.take(6)  # a cost over the burst never passes
    assert bucket.take(5)


def test_a_clock_going_back_adds_nothing() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=1, burst=1, clock=clock)
    assert bucket.take()
    clock.now -= 50
    assert not bucket.take()
    clock.now += 50.5  # still short: time already counted is not counted again
    assert not bucket.take()
    clock.now += 0.5
    assert bucket.take()


def test_peer_budgets_charge_every_cost_or_none() -> None:
    clock = Clock()
    budgets: PeerBudgets[str] = PeerBudgets({"frames": Rate(1, 10), "bytes": Rate(100, 1000)}, clock)
    assert budgets.allow("a", frames=1, bytes=900)
    assert not budgets.allow("a", frames=1, bytes=200)  # bytes short: the frame is not charged
    assert budgets.allow("a", frames=9, bytes=100)
    assert not budgets.allow("a", frames=1, bytes=0)
    assert budgets.allow("b", frames=10, bytes=1000)  # another peer has its own buckets


def test_the_peer_table_is_bounded_and_evicts_the_least_recently_used() -> None:
    clock = Clock()
    budgets: PeerBudgets[int] = PeerBudgets({"requests": Rate(0.001, 1)}, clock, max_peers=3)
    for peer in range(3):
        assert budgets.allow(peer, requests=1)
    assert not budgets.allow(0, requests=1)  # 0 is now the most recently used
    assert budgets.allow(99, requests=1)  # evicts 1, the least recently used
    assert len(budgets) == 3
    assert not budgets.allow(0, requests=1) and not budgets.allow(2, requests=1)
    assert budgets.allow(1, requests=1)  # forgotten, so fresh: why a global cap sits behind


def test_a_concurrency_limit_refuses_at_once_in_total_and_per_key() -> None:
    limit: ConcurrencyLimit[str] = ConcurrencyLimit(total=3, per_key=2)
    assert limit.try_acquire("a") and limit.try_acquire("a")
    assert not limit.try_acquire("a")  # per key
    assert limit.try_acquire("b")
    assert not limit.try_acquire("c")  # in total
    limit.release("a")
    assert limit.try_acquire("c")
    assert limit.peak == 3 and limit.held == 3
    with pytest.raises(OverLimit), limit.hold("d"):
        pass
    for key in ("a", "b", "c"):
        limit.release(key)
    with limit.hold("d"):
        assert limit.held_by("d") == 1
    assert limit.held == 0 and limit.held_by("d") == 0


def test_a_weighted_limit_bounds_bytes_in_flight() -> None:
    limit: ConcurrencyLimit[str] = ConcurrencyLimit(total=64, per_key=36)
    assert limit.try_acquire("a", 17) and limit.try_acquire("a", 17)
    assert not limit.try_acquire("a", 17)
    assert limit.try_acquire("b", 17)
    assert not limit.try_acquire("c", 17)  # 68 > 64
    assert limit.try_acquire("c", 13)


def test_a_flood_logs_one_line_per_period_with_its_count() -> None:
    clock = Clock()
    logs = RateLimitedLog(clock, every=10)
    assert logs.due("p") == 1
    assert [logs.due("p") for _ in range(99)] == [0] * 99
    assert logs.due("q") == 1
    clock.now += 10
    assert logs.due("p") == 100  # the 99 held back, and this one


def test_default_limits_fit_the_largest_honest_frame_and_batch() -> None:
    lim = P2PLimits()
    assert lim.link_bytes.burst >= MAX_FRAME
    assert lim.link_bytes.burst >= 32 * (1024 * 1024 + 80 * 1024)  # a whole sync batch
    assert lim.link_frames.burst >= 32 + 4  # a sync batch and a height's messages
    assert lim.outbound_bytes >= 32 * (1024 * 1024 + 80 * 1024) + 6 * 1024 * 1024
    assert lim.submit_inflight_bytes_per_peer >= 2 * 17 * 1024 * 1024
    assert lim.submit_inflight_bytes >= lim.submit_inflight_bytes_per_peer


def test_honest_traffic_at_64_validators_never_meets_the_link_budget() -> None:
    """The envelope P2PLimits is sized against, replayed through the budget: 10 heights/s with
    a full 1 MiB block at every height from the same sender (it leads every height: a bound),
    two votes and a view change per height, and catch-up at the 32 blocks/s and 4 MiB/s a
    sender's own budget allows after its 2 s burst of 64 blocks. Nothing is refused."""
    clock = Clock()
    lim = P2PLimits()
    budgets: PeerBudgets[str] = PeerBudgets({"frames": lim.link_frames, "bytes": lim.link_bytes}, clock)
    block, vote, view_change, decision = (
        1024 * 1024 + 4096,
        400,
        1024 * 1024 + 80 * 1024,
        1024 * 1024 + 80 * 1024,
    )
    for _ in range(64):  # the catch-up burst: 64 decisions, but no more than 8 MiB of them
        assert budgets.allow("v", frames=1, bytes=min(decision, 8 * 1024 * 1024 // 64))
    for step in range(10 * 600):  # ten minutes at 10 heights/s
        clock.now += 0.1
        for cost in (block, vote, vote, view_change):
            assert budgets.allow("v", frames=1, bytes=cost), step
        if step % 10 == 0:  # each second: catch-up's 4 MiB in decisions (about 4 blocks)
            for _ in range(4):
                assert budgets.allow("v", frames=1, bytes=decision - 80 * 1024), step
