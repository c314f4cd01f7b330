"""Dedup before verify (issue 12, item 5): a copy of a statement the replica already verified and
counted costs no signature check, and nothing that did not verify can take the slot of the real
statement."""

from __future__ import annotations

import hashlib

from consensus.certificates import build_certificate, vote_signing_bytes
from consensus.crypto import seal
from consensus.messages import (
    PHASE_PREPARE,
    PrePrepare,
    ProposalPacket,
    ViewChange,
    ViewChangePacket,
    Vote,
    VotePacket,
)
from consensus.sim.app import make_block
from tests.consensus.budget_harness import CountingScheme
from tests.consensus.harness import NETUID, Cluster
from wire.codec import decode, encode


def _counted(c: Cluster, i: int = 0):  # type: ignore[no-untyped-def]
    node = c.nodes[c.keys[i].public_key]
    node.replica.scheme = CountingScheme()
    return node


def test_a_replayed_view_change_with_a_prepared_certificate_is_checked_once() -> None:
    c = Cluster([1, 1, 1, 1], auto_propose=False)
    c.start()
    node = _counted(c)
    block = make_block(1, bytes(32), b"prepared")
    bh = hashlib.sha256(block).digest()
    data = vote_signing_bytes(NETUID, PHASE_PREPARE, 1, 0, bh)
    cert = build_certificate(PHASE_PREPARE, 1, 0, bh, {k.public_key: k.sign(data) for k in c.keys[1:]})
    vc = ViewChangePacket(seal(ViewChange(1, 1, 0, bh), c.keys[1], NETUID), cert, None)
    node.replica.on_message(encode(vc), 0.0)
    assert c.keys[1].public_key in node.replica.round.view_changes[1]
    first = node.replica.scheme.calls
    assert first == 1 + 3  # the envelope and the certificate's three signatures
    for _ in range(50):
        assert not node.replica.on_message(encode(vc), 0.0)
    assert node.replica.scheme.calls == first
    # the copy a replica sends the new leader carries the block: kept, still without a check
    node.replica.on_message(encode(ViewChangePacket(vc.view_change, cert, block)), 0.0)
    assert node.replica.round.blocks.get(bh) == block and node.replica.scheme.calls == first


def test_replayed_votes_now_and_for_a_future_height_are_verified_once() -> None:
    c = Cluster([1, 1, 1, 1], auto_propose=False)
    c.start()
    node = _counted(c)
    now_vote = VotePacket(seal(Vote(PHASE_PREPARE, 1, 0, b"a" * 32), c.keys[1], NETUID))
    next_vote = VotePacket(seal(Vote(PHASE_PREPARE, 2, 0, b"b" * 32), c.keys[2], NETUID))
    for _ in range(50):
        node.replica.on_message(encode(now_vote), 0.0)
        node.replica.on_message(encode(next_vote), 0.0)
    assert node.replica.scheme.calls == 2
    assert len(node.replica._future[2]) == 1  # replays do not fill the future buffer either


def test_a_forged_copy_sent_first_does_not_block_the_real_statement() -> None:
    c = Cluster([1, 1, 1, 1], auto_propose=False)
    c.start()
    node = c.nodes[c.keys[0].public_key]
    real = seal(Vote(PHASE_PREPARE, 1, 0, b"a" * 32), c.keys[1], NETUID)
    forged = type(real)(real.netuid, real.signer, real.body, bytes(64))
    out = node.replica.on_message(encode(VotePacket(forged)), 0.0)
    assert [a.reason for a in out] == ["bad_signature"]
    node.replica.on_message(encode(VotePacket(real)), 0.0)
    assert c.keys[1].public_key in node.replica.round.tally(PHASE_PREPARE, 0, b"a" * 32)


def test_a_new_view_proposal_stripped_of_its_justification_does_not_block_the_real_one() -> None:
    """A relay that strips the justification off the new leader's proposal and delivers it first
    gets it refused; the real proposal, arriving next, is not dropped as a duplicate."""
    c = Cluster([1, 1, 1, 1])
    silent = c.vset.leader(1, 0)
    c.down.add(silent)
    for hk, node in c.nodes.items():
        if hk != silent:
            c.apply(hk, node.replica.start(c.now))
    c.deliver()
    c.advance(5.0)
    new_leader = c.vset.leader(1, 1)
    victim = next(hk for hk in c.nodes if hk not in (silent, new_leader))
    for _ in range(10_000):  # deliver until the new leader's proposal is queued for the victim
        found = [
            (i, d) for i, (dst, d) in enumerate(c.queue) if dst == victim and b"consensus.proposal" in d[:40]
        ]
        if found:
            break
        c.deliver(limit=1)
    _, data = found[0]
    real = decode(data, ProposalPacket)
    assert real.justification
    stripped = ProposalPacket(pre_prepare=real.pre_prepare, block=real.block, justification=())
    out = c.nodes[victim].replica.on_message(encode(stripped), c.now)
    assert "invalid_justification" in [getattr(a, "reason", None) for a in out]
    c.deliver()
    assert any(r.kind == PHASE_PREPARE and r.view == 1 for r in c.nodes[victim].records)
    assert all(n.decided for hk, n in c.nodes.items() if hk != silent)


def test_a_leader_flooding_new_view_proposals_gets_two_justification_checks_a_view() -> None:
    """Each junk proposal costs the check of the leader's own signature; the view changes in
    justifications are verified for at most two blocks a view, and one stripped of its view
    changes, or claiming what they do not prove, costs no check of them at all."""
    c = Cluster([1, 1, 1, 1], auto_propose=False)
    c.start()
    leader_hk = c.vset.leader(1, 1)
    leader = next(k for k in c.keys if k.public_key == leader_hk)
    victim = next(hk for hk in c.nodes if hk != leader_hk)
    node = c.nodes[victim]
    node.replica.scheme = CountingScheme()
    others = [k for k in c.keys if k.public_key != victim][:3]
    vcs = tuple(
        sorted(
            (ViewChangePacket(seal(ViewChange(1, 1, None, None), k, NETUID), None, None) for k in others),
            key=lambda p: p.view_change.signer,
        )
    )
    forged = ViewChangePacket(
        type(vcs[0].view_change)(NETUID, vcs[0].view_change.signer, vcs[0].view_change.body, bytes(64)),
        None,
        None,
    )
    for i in range(100):
        block = make_block(1, bytes(32), b"junk%d" % i)
        pp = seal(PrePrepare(1, 1, hashlib.sha256(block).digest()), leader, NETUID)
        node.replica.on_message(encode(ProposalPacket(pp, block, (forged, *vcs[1:]))), 0.0)
    assert node.replica.scheme.calls <= 100 + 2
    assert not any(r.kind == PHASE_PREPARE for r in node.records)
