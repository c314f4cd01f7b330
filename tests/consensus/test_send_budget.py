"""What a peer can make a replica send is bounded (issue 12, item 4): copies of one sync request
are answered once, replays of a validator's old requests and view changes send nothing, and a
validator asking for ever newer heights (or many view changes for old heights) gets at most its
budget of blocks and bytes per second; an honest laggard still catches up."""

from __future__ import annotations

from consensus.replica import ReplicaConfig
from consensus.send_budget import SendLimits
from tests.consensus.budget_harness import NETUID, served
from tests.consensus.harness import Cluster


def test_copies_of_one_sync_request_send_each_block_once_and_are_verified_once() -> None:
    s = served(tip=1000)
    request = s.sync_request(1)
    for _ in range(20):
        s.deliver(request, 0.0)
    assert [d.certificate.height for d in s.sent] == list(range(1, 33))  # one batch, not 20
    assert s.scheme.calls == 1


def test_replays_of_old_sync_requests_and_view_changes_send_nothing_and_cost_no_signature_check() -> None:
    s = served(tip=1000)
    old_request, old_vc = s.sync_request(1), s.view_change(5)
    s.deliver(old_request, 0.0)
    s.deliver(s.sync_request(33), 1.0)  # the asker got 1..32 and moved on
    sent, checks = len(s.sent), s.scheme.calls
    for i in range(50):  # a Byzantine peer replays what the asker signed when it was behind
        s.deliver(old_request, 10.0 + i)
        s.deliver(old_vc, 10.0 + i)
    assert len(s.sent) == sent and s.scheme.calls == checks


def test_a_peer_asking_for_ever_newer_heights_gets_its_block_budget_per_second() -> None:
    limits = SendLimits()
    s = served(tip=5000)
    for h in range(1, 5000, 32):  # distinct, signed, ascending: nothing to dedup
        s.deliver(s.sync_request(h), 0.0)
    burst = int(limits.blocks_per_s * limits.burst_s)
    assert len(s.sent) == burst
    for h in range(1, 5000, 32):
        s.deliver(s.sync_request(h), 3.0)  # three seconds later: three seconds' refill, no more
    assert len(s.sent) <= burst + 3 * limits.blocks_per_s
    refused = [a for a in s.deliver(s.sync_request(4000), 3.0) if getattr(a, "reason", "") == "send_budget"]
    assert len(s.sent) <= burst + 3 * limits.blocks_per_s and not refused  # budget spent: dropped unverified


def test_view_changes_for_many_decided_heights_get_the_block_budget() -> None:
    limits = SendLimits()
    s = served(tip=1000)
    for h in range(1, 1000):  # one view change per decided height, each validly signed
        s.deliver(s.view_change(h), 0.0)
    assert len(s.sent) == int(limits.blocks_per_s * limits.burst_s)


def test_large_blocks_are_bounded_in_bytes_per_second() -> None:
    limits = SendLimits(bytes_per_s=1024 * 1024, burst_s=2.0)
    s = served(tip=200, block_size=200_000, config=ReplicaConfig(netuid=NETUID, send_limits=limits))
    for t in range(10):
        for h in range(1, 200, 32):
            s.deliver(s.sync_request(h), float(t))
    # 2 MiB of burst plus 9 seconds at 1 MiB/s, whatever was asked (32 blocks a request)
    assert s.sent_bytes() <= 11 * 1024 * 1024 + 8 * 1024
    assert len(s.sent) < 200


def test_an_honest_laggard_still_catches_up_many_heights() -> None:
    """A validator that was down for 60 heights catches up from its peers' sync answers."""
    c = Cluster([1, 1, 1, 1], max_height=60)
    late = c.keys[3].public_key
    c.down.add(late)
    for hk, node in c.nodes.items():
        if hk != late:
            c.apply(hk, node.replica.start(c.now))
    for _ in range(200):  # the late node leads every fourth height: those need a view change
        c.deliver(limit=100_000)
        if min(h for hk, h in c.heights().items() if hk != late) == 60:
            break
        c.advance(3.0)
    assert max(c.heights().values()) == 60 and c.heights()[late] == 0
    c.restart(late)
    for _ in range(20):
        c.advance(1.0)
        c.deliver(limit=100_000)
    assert c.heights()[late] == 60


def test_copies_of_a_request_cut_short_by_the_byte_budget_are_not_verified_again() -> None:
    s = served(tip=100, block_size=1_000_000)  # 1 MB blocks: the 8 MiB burst holds 8 of them
    request = s.sync_request(1)
    for _ in range(20):
        s.deliver(request, 0.0)
    assert len(s.sent) == 8 and s.scheme.calls == 1
