"""Replica behaviour with real sr25519 keys: decisions, certificates, bad input, crash recovery."""

from __future__ import annotations

import hashlib

import pytest

from consensus.actions import PersistVote
from consensus.certificates import CertificateError, verify_certificate, verify_vouched
from consensus.crypto import seal
from consensus.messages import (
    PHASE_COMMIT,
    PHASE_PREPARE,
    RECORD_VIEW_CHANGE,
    Certificate,
    DecisionPacket,
    PrePrepare,
    ProposalPacket,
    ViewChange,
    ViewChangePacket,
    Vote,
    VotePacket,
    VoteSignature,
)
from consensus.sim.app import make_block
from consensus.validators import ValidatorSet
from tests.consensus.harness import NETUID, Cluster
from wire.codec import decode, encode
from wire.envelope import open_envelope
from wire.keys import Hotkey


def test_four_validators_decide_with_verifiable_certificates() -> None:
    c = Cluster([100, 200, 300, 400])
    c.start()
    c.deliver()
    assert set(c.heights().values()) == {4}
    for node in c.nodes.values():
        for d in node.decided:
            verify_certificate(
                d.certificate, c.vset, NETUID, height=d.height, block_hash=hashlib.sha256(d.block).digest()
            )
    blocks = {n.decided[0].block for n in c.nodes.values()}
    assert len(blocks) == 1


def test_certificate_checks() -> None:
    c = Cluster([1, 1, 1, 1])
    c.start()
    c.deliver(limit=200)
    cert = next(n for n in c.nodes.values() if n.decided).decided[0].certificate
    verify_certificate(cert, c.vset, NETUID)
    with pytest.raises(CertificateError, match="not a quorum"):
        verify_certificate(
            Certificate(cert.phase, cert.height, cert.view, cert.block_hash, cert.signatures[:2]),
            c.vset,
            NETUID,
        )
    bad_sig = (VoteSignature(cert.signatures[0].signer, bytes(64)), *cert.signatures[1:])
    with pytest.raises(CertificateError, match="bad signature"):
        verify_certificate(
            Certificate(cert.phase, cert.height, cert.view, cert.block_hash, bad_sig), c.vset, NETUID
        )
    dup = (cert.signatures[0], *cert.signatures)
    with pytest.raises(CertificateError, match="sorted"):
        verify_certificate(
            Certificate(cert.phase, cert.height, cert.view, cert.block_hash, dup), c.vset, NETUID
        )
    with pytest.raises(CertificateError, match="not in the validator set"):
        other = ValidatorSet.of([(Hotkey.from_name("x").public_key, 1)])
        verify_certificate(cert, other, NETUID)
    with pytest.raises(CertificateError, match="bad signature"):
        verify_certificate(cert, c.vset, NETUID + 1)  # a certificate never transfers between subnets
    with pytest.raises(CertificateError, match="different block"):
        verify_certificate(cert, c.vset, NETUID, block_hash=bytes(32))


def test_vouched_certificates() -> None:
    """A reader whose only anchor is another set (today's chain): more than a third of that
    set's stake must have validly signed; signers it does not know are ignored."""
    c = Cluster([1, 1, 1, 1])
    c.start()
    c.deliver(limit=200)
    cert = next(n for n in c.nodes.values() if n.decided).decided[0].certificate
    signer = cert.signatures[0].signer
    stranger = Hotkey.from_name("vouch-stranger").public_key
    today = ValidatorSet.of([(signer, 40), (stranger, 60)])  # the signer holds 40 of 100
    verify_vouched(cert, today, NETUID)
    with pytest.raises(CertificateError, match="more than a third"):
        verify_vouched(cert, ValidatorSet.of([(signer, 30), (stranger, 70)]), NETUID)
    forged = (VoteSignature(signer, bytes(64)), *cert.signatures[1:])
    with pytest.raises(CertificateError, match="bad signature"):
        verify_vouched(
            Certificate(cert.phase, cert.height, cert.view, cert.block_hash, forged), today, NETUID
        )


def _leader_node(c: Cluster, height: int = 1, view: int = 0):  # type: ignore[no-untyped-def]
    return c.nodes[c.vset.leader(height, view)]


def test_bad_input_is_rejected_with_a_reason_and_changes_nothing() -> None:
    c = Cluster([1, 1, 1, 1], auto_propose=False)
    c.start()
    victim_hk = next(hk for hk in c.nodes if hk != c.vset.leader(1, 0))
    victim = c.nodes[victim_hk]
    leader = _leader_node(c)
    block = make_block(1, bytes(32), b"ok")
    bh = hashlib.sha256(block).digest()
    outsider = Hotkey.from_name("outsider")
    not_leader = c.nodes[next(hk for hk in c.nodes if hk not in (leader.key.public_key, victim_hk))]

    def send(pkt: object) -> list[object]:
        data = pkt if isinstance(pkt, bytes) else encode(pkt)
        return victim.replica.on_message(data, 0.0)

    cases = {
        "malformed": send(b"\x85garbage"),
        "unknown_signer": send(VotePacket(seal(Vote(PHASE_PREPARE, 1, 0, bh), outsider, NETUID))),
        "not_leader": send(ProposalPacket(seal(PrePrepare(1, 0, bh), not_leader.key, NETUID), block, ())),
        "block_hash_mismatch": send(
            ProposalPacket(seal(PrePrepare(1, 0, bytes(32)), leader.key, NETUID), block, ())
        ),
        "invalid_block": send(
            ProposalPacket(
                seal(PrePrepare(1, 0, hashlib.sha256(b"junk").digest()), leader.key, NETUID), b"junk", ()
            )
        ),
        "view_too_far": send(VotePacket(seal(Vote(PHASE_PREPARE, 1, 10_000, bh), leader.key, NETUID))),
    }
    wrong_net = seal(Vote(PHASE_PREPARE, 1, 0, bh), leader.key, NETUID + 1)
    cases["bad_signature"] = send(VotePacket(wrong_net))
    forged = seal(Vote(PHASE_PREPARE, 1, 0, bh), leader.key, NETUID)
    forged = type(forged)(forged.netuid, forged.signer, forged.body, bytes(64))
    cases["bad_signature "] = send(VotePacket(forged))
    for reason, actions in cases.items():
        reasons = [getattr(a, "reason", None) for a in actions]
        assert reason.strip() in reasons, (reason, actions)
        assert not any(isinstance(a, PersistVote) for a in actions), reason
    assert victim.replica.height == 1 and not victim.records


def test_equivocation_becomes_verifiable_evidence() -> None:
    c = Cluster([1, 1, 1, 1], auto_propose=False)
    c.start()
    byz = c.keys[0]
    victim = c.nodes[c.keys[1].public_key]
    a = victim.replica.on_message(
        encode(VotePacket(seal(Vote(PHASE_PREPARE, 1, 0, b"a" * 32), byz, NETUID))), 0
    )
    b = victim.replica.on_message(
        encode(VotePacket(seal(Vote(PHASE_PREPARE, 1, 0, b"b" * 32), byz, NETUID))), 0
    )
    assert not any(type(x).__name__ == "ReportEvidence" for x in a)
    ev = [x for x in b if type(x).__name__ == "ReportEvidence"]
    assert len(ev) == 1
    first = open_envelope(ev[0].evidence.first, Vote, NETUID)
    second = open_envelope(ev[0].evidence.second, Vote, NETUID)
    assert ev[0].evidence.first.signer == ev[0].evidence.second.signer == byz.public_key
    assert (first.height, first.view, first.phase) == (second.height, second.view, second.phase)
    assert first.block_hash != second.block_hash
    # a third value from the same signer is dropped, not stored: memory stays bounded
    c3 = victim.replica.on_message(
        encode(VotePacket(seal(Vote(PHASE_PREPARE, 1, 0, b"c" * 32), byz, NETUID))), 0
    )
    assert not c3 and (PHASE_PREPARE, 0, b"c" * 32) not in victim.replica.round.votes


def test_never_signs_two_values_for_one_height_view_phase_even_after_restart() -> None:
    c = Cluster([1, 1, 1, 1], auto_propose=False)
    c.start()
    leader = _leader_node(c)
    follower_hk = next(hk for hk in c.nodes if hk != leader.key.public_key)
    follower = c.nodes[follower_hk]
    block_a = make_block(1, bytes(32), b"A")
    block_b = make_block(1, bytes(32), b"B")
    pp_a = ProposalPacket(
        seal(PrePrepare(1, 0, hashlib.sha256(block_a).digest()), leader.key, NETUID), block_a, ()
    )
    pp_b = ProposalPacket(
        seal(PrePrepare(1, 0, hashlib.sha256(block_b).digest()), leader.key, NETUID), block_b, ()
    )
    c.apply(follower_hk, follower.replica.on_message(encode(pp_a), 0))
    prepares = [r for r in follower.records if r.kind == PHASE_PREPARE]
    assert len(prepares) == 1
    c.restart(follower_hk)  # crash: volatile state lost, durable record kept
    follower = c.nodes[follower_hk]
    assert follower.replica.round.signed[(PHASE_PREPARE, 0)][0] == hashlib.sha256(block_a).digest()
    c.apply(follower_hk, follower.replica.on_message(encode(pp_b), 0))
    prepares = [r for r in follower.records if r.kind == PHASE_PREPARE]
    assert len(prepares) == 1, "signed a second prepare for the same height and view"
    # and the restarted replica re-sent exactly the vote it had signed before
    resent = [decode(data, VotePacket) for dst, data in c.queue if data[:40].find(b"votepacket") >= 0]
    assert any(p.vote.signature == prepares[0].envelope.signature for p in resent)


def test_prepared_certificate_survives_a_crash_and_is_reported_in_view_change() -> None:
    c = Cluster([1, 1, 1, 1])
    c.start()
    # deliver only until some replica has sent a COMMIT (it is prepared), then drop everything
    hk = None
    for _ in range(10_000):
        if not c.queue:
            break
        c.deliver(limit=1)
        hk = next((h for h, n in c.nodes.items() if any(r.kind == PHASE_COMMIT for r in n.records)), None)
        if hk is not None:
            break
    assert hk is not None
    c.queue.clear()
    c.restart(hk)
    c.queue.clear()
    node = c.nodes[hk]
    if node.decided:
        pytest.skip("decided before the crash point")
    c.now += 100.0
    c.apply(hk, node.replica.on_timer(c.now))
    vcs = [r for r in node.records if r.kind == RECORD_VIEW_CHANGE]
    assert vcs, "timer did not start a view change"
    vc = open_envelope(vcs[-1].envelope, ViewChange, NETUID)
    assert vc.prepared_view == 0 and vc.prepared_hash is not None
    assert vcs[-1].prepared is not None and vcs[-1].block is not None


def test_view_change_after_silent_leader_then_decides() -> None:
    c = Cluster([1, 1, 1, 1])
    silent = c.vset.leader(1, 0)
    c.down.add(silent)
    for hk, node in c.nodes.items():
        if hk != silent:
            c.apply(hk, node.replica.start(c.now))
    c.deliver()
    assert all(h == 0 for hk, h in c.heights().items())
    c.advance(5.0)
    c.deliver()
    heights = {hk: h for hk, h in c.heights().items() if hk != silent}
    assert min(heights.values()) >= 1
    decision = next(n for hk, n in c.nodes.items() if hk != silent).decided[0]
    assert decision.certificate.view >= 1


def test_lagging_replica_catches_up_from_decisions() -> None:
    c = Cluster([1, 1, 1, 1])
    late = c.keys[3].public_key
    c.down.add(late)
    for hk, node in c.nodes.items():
        if hk != late:
            c.apply(hk, node.replica.start(c.now))
    c.deliver(limit=3000)
    ahead = max(c.heights().values())
    assert ahead >= 2 and c.heights()[late] == 0
    c.restart(late)
    c.advance(5.0)  # the late node times out at height 1; its view change asks for help
    for _ in range(6):
        c.deliver(limit=3000)
        c.advance(5.0)
    assert c.heights()[late] >= ahead


def test_decision_packet_with_forged_certificate_is_rejected() -> None:
    c = Cluster([1, 1, 1, 1], auto_propose=False)
    c.start()
    node = c.nodes[c.keys[0].public_key]
    block = make_block(1, bytes(32), b"x")
    bh = hashlib.sha256(block).digest()
    sigs = tuple(VoteSignature(k, bytes(64)) for k in sorted(k.public_key for k in c.keys))
    out = node.replica.on_message(encode(DecisionPacket(block, Certificate(PHASE_COMMIT, 1, 0, bh, sigs))), 0)
    assert [a.reason for a in out if hasattr(a, "reason")] == ["invalid_certificate"]
    assert node.replica.height == 1


def test_view_change_claiming_prepared_without_proof_is_rejected() -> None:
    c = Cluster([1, 1, 1, 1], auto_propose=False)
    c.start()
    node = c.nodes[c.keys[0].public_key]
    env = seal(ViewChange(1, 1, 0, b"z" * 32), c.keys[1], NETUID)
    out = node.replica.on_message(encode(ViewChangePacket(env, None, None)), 0)
    assert [a.reason for a in out if hasattr(a, "reason")] == ["invalid_certificate"]
