"""The epoch pipeline's rules (pure): what a block may carry and how weights are derived."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.manifest import ChallengeManifest, ModulePolicy
from registry.state import OP_ACTIVATE, genesis, sign_command, sign_manifest
from tests.node.toy_subnet import STAKES, toy_subnet
from validator_node.devnet import example_challenges
from validator_node.pipeline.messages import (
    EMPTY_BODY,
    Attestation,
    BlockBody,
    RegistryItem,
    Submission,
)
from validator_node.pipeline.proposal import build_body
from validator_node.pipeline.state import (
    AppState,
    BlockRejected,
    apply_body,
    derive_weights,
    stake_weighted_median,
    submission_id,
)
from wire.envelope import seal
from wire.keys import Hotkey

NETUID = 7
B = 6  # blocks per epoch
OWNER, VALS, MINERS, VSET, NEURONS, INFO = toy_subnet("pipeline")
MAXSAT = next(c for c in example_challenges() if c.challenge_id == "maxsat")


def registry_body() -> BlockBody:
    m = ChallengeManifest(
        "maxsat", "maxsat", 1, hashlib.sha256(MAXSAT.wasm).digest(), len(MAXSAT.wasm), 1,
        ModulePolicy.from_dict(MAXSAT.policy), 500_000_000, 0, MAXSAT.task, 0, 1,
    )  # fmt: skip
    return BlockBody(
        INFO,
        (
            RegistryItem(sign_manifest(m, OWNER, NETUID), MAXSAT.wasm),
            RegistryItem(sign_command(OP_ACTIVATE, "maxsat", 2, OWNER, NETUID), None),
        ),
        (),
        (),
        None,
    )


def start() -> AppState:
    s0 = AppState(NETUID, B, genesis(NETUID, OWNER.public_key))
    return apply_body(s0, registry_body(), height=1, parent=bytes(32), vset=VSET)


def submission(miner: Hotkey, payload: bytes, epoch: int = 0, nonce: int = 0, challenge: str = "maxsat"):  # type: ignore[no-untyped-def]
    return seal(Submission(challenge, epoch, nonce, payload), miner, NETUID)


def attest(v: Hotkey, sid: bytes, score: int, epoch: int = 0):  # type: ignore[no-untyped-def]
    return seal(Attestation(epoch, sid, score, None), v, NETUID)


def body(subs=(), atts=()) -> BlockBody:  # type: ignore[no-untyped-def]
    return BlockBody(None, (), tuple(sorted(subs, key=submission_id)), tuple(atts), None)


def test_registry_and_submissions_flow_to_identical_weights() -> None:
    s = start()
    subs = [submission(m, MAXSAT.payloads[i]) for i, m in enumerate(MINERS)]
    s = apply_body(s, body(subs), height=2, parent=b"p" * 32, vset=VSET)
    assert len(s.submissions) == 3
    atts = sorted(
        (
            attest(v, submission_id(e), 500_000_000 + 100_000_000 * i)
            for e in subs
            for v in VALS
            for i in [subs.index(e)]
        ),
        key=lambda e: (hashlib.sha256(b"").digest(), e.signer),
    )
    atts = sorted(atts, key=lambda e: (decode_sid(e), e.signer))
    s = apply_body(s, body(atts=atts), height=3, parent=b"q" * 32, vset=VSET)
    w = derive_weights(s, VSET, 0)
    (row,) = w.rows
    weights = dict(zip(row.uids, row.weights, strict=True))
    # miners are uids 5, 6, 7 with scores 0.5, 0.6, 0.7 sharing 50%; the owner (uid 0) gets the burn
    assert weights[0] == 65535
    assert weights[5] < weights[6] < weights[7]
    # the epoch's last block must carry exactly these weights
    for h in (4, 5):
        s = apply_body(s, EMPTY_BODY, height=h, parent=b"r" * 32, vset=VSET)
    good = BlockBody(None, (), (), (), w)
    apply_body(s, good, height=6, parent=b"s" * 32, vset=VSET)
    bad_row = replace(row, weights=(row.weights[0] - 1, *row.weights[1:]))
    with pytest.raises(BlockRejected, match="weights_mismatch"):
        apply_body(
            s, BlockBody(None, (), (), (), replace(w, rows=(bad_row,))), height=6, parent=b"s" * 32, vset=VSET
        )
    with pytest.raises(BlockRejected, match="busy_weights_block"):
        apply_body(s, BlockBody(None, (), tuple(subs[:1]), (), w), height=6, parent=b"s" * 32, vset=VSET)


def decode_sid(env) -> bytes:  # type: ignore[no-untyped-def]
    from wire.codec import decode

    return decode(env.body, Attestation).submission_id


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: submission(Hotkey.from_name("stranger"), b"x"), "unregistered_miner"),
        (lambda: submission(MINERS[0], b"x", challenge="nope"), "inactive_challenge"),
        (lambda: submission(MINERS[0], b"x", epoch=1), "wrong_epoch"),
        (lambda: submission(MINERS[0], b"x" * 200_000), "submission_too_large"),
    ],
)
def test_bad_submissions_are_refused(make, reason: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BlockRejected, match=reason):
        apply_body(start(), body([make()]), height=2, parent=b"p" * 32, vset=VSET)


def test_forged_and_replayed_submissions_are_refused() -> None:
    s = start()
    env = submission(MINERS[0], b"\x01")
    forged = type(env)(env.netuid, MINERS[1].public_key, env.body, env.signature)
    with pytest.raises(BlockRejected, match="bad_submission"):
        apply_body(s, body([forged]), height=2, parent=b"p" * 32, vset=VSET)
    s2 = apply_body(s, body([env]), height=2, parent=b"p" * 32, vset=VSET)
    with pytest.raises(BlockRejected, match="duplicate_submission"):
        apply_body(s2, body([env]), height=3, parent=b"p" * 32, vset=VSET)
    many = [submission(MINERS[0], b"\x01", nonce=n) for n in range(1, 6)]
    with pytest.raises(BlockRejected, match="miner_rate_limit"):
        apply_body(s2, body(many), height=3, parent=b"p" * 32, vset=VSET)


def test_bad_attestations_are_refused() -> None:
    s = start()
    env = submission(MINERS[0], MAXSAT.payloads[0])
    sid = submission_id(env)
    with pytest.raises(BlockRejected, match="unknown_submission"):  # same block as the submission
        apply_body(s, body([env], [attest(VALS[0], sid, 1)]), height=2, parent=b"p" * 32, vset=VSET)
    s = apply_body(s, body([env]), height=2, parent=b"p" * 32, vset=VSET)
    with pytest.raises(BlockRejected, match="attestation_not_validator"):
        apply_body(s, body(atts=[attest(MINERS[1], sid, 1)]), height=3, parent=b"p" * 32, vset=VSET)
    with pytest.raises(BlockRejected, match="unsorted_items"):
        a = attest(VALS[0], sid, 1)
        apply_body(s, body(atts=[a, a]), height=3, parent=b"p" * 32, vset=VSET)
    s3 = apply_body(s, body(atts=[attest(VALS[0], sid, 1)]), height=3, parent=b"p" * 32, vset=VSET)
    with pytest.raises(BlockRejected, match="duplicate_attestation"):
        apply_body(s3, body(atts=[attest(VALS[0], sid, 2)]), height=4, parent=b"p" * 32, vset=VSET)


def test_epoch_boundaries_need_snapshot_and_weights() -> None:
    s0 = AppState(NETUID, B, genesis(NETUID, OWNER.public_key))
    with pytest.raises(BlockRejected, match="epoch_info_missing"):
        apply_body(s0, EMPTY_BODY, height=1, parent=bytes(32), vset=VSET)
    s = start()
    with pytest.raises(BlockRejected, match="stray_epoch_info"):
        apply_body(s, BlockBody(INFO, (), (), (), None), height=2, parent=bytes(32), vset=VSET)


def test_leader_builds_only_valid_blocks_from_a_dirty_pool() -> None:
    s = start()
    good = [submission(m, MAXSAT.payloads[0]) for m in MINERS]
    junk = [submission(Hotkey.from_name("stranger"), b"x"), submission(MINERS[0], b"x", epoch=3)]
    built = build_body(
        s, height=2, parent=b"p" * 32, vset=VSET, epoch_info=INFO,
        registry_pool=[], submission_pool=good + junk, attestation_pool=[],
    )  # fmt: skip
    assert len(built.submissions) == 3
    apply_body(s, built, height=2, parent=b"p" * 32, vset=VSET)


def test_nothing_to_score_burns_everything_to_the_owner() -> None:
    s = start()
    (row,) = derive_weights(s, VSET, 0).rows
    assert dict(zip(row.uids, row.weights, strict=True)) == {0: 65535}


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(range(4)), st.integers(-5, 10**9), min_size=1))
def test_median_needs_a_quorum_and_ignores_outliers(votes: dict[int, int]) -> None:
    scores = {VALS[i].public_key: v for i, v in votes.items()}
    got = stake_weighted_median(scores, VSET)
    stake = sum(STAKES[i] for i in votes)
    if 3 * stake <= 2 * sum(STAKES):
        assert got is None
        return
    assert got in scores.values()
    below = sum(STAKES[i] for i, v in votes.items() if v < got)
    at_or_below = sum(STAKES[i] for i, v in votes.items() if v <= got)
    assert 2 * below < stake <= 2 * at_or_below  # the lower weighted median
    # one validator with under 1/3 of the stake cannot drag the median to its extreme value
    if len(votes) == 4 and len({v for i, v in votes.items() if i != 3}) == 1:
        honest = votes[0]
        assert stake_weighted_median({**scores, VALS[3].public_key: 10**9}, VSET) == honest


def test_checkpoint_is_verified_by_the_next_blocks_certificate() -> None:
    from consensus.certificates import build_certificate, vote_signing_bytes
    from consensus.messages import PHASE_COMMIT, DecisionPacket
    from validator_node.block import build_block
    from validator_node.pipeline.snapshot import (
        Checkpoint,
        CheckpointInvalid,
        snapshot,
        state_root,
        verify_checkpoint,
    )
    from wire.codec import encode

    state = start()
    snap = encode(snapshot(state))
    block = build_block(2, b"p" * 32, VALS[0].public_key, 5, state_root(state))
    bh = hashlib.sha256(block).digest()

    def certified(signers: list[Hotkey]) -> DecisionPacket:
        data = vote_signing_bytes(NETUID, PHASE_COMMIT, 2, 0, bh)
        sigs = {k.public_key: k.sign(data) for k in signers}
        return DecisionPacket(block=block, certificate=build_certificate(PHASE_COMMIT, 2, 0, bh, sigs))

    good = Checkpoint(1, snap, certified(VALS[:3]))
    assert verify_checkpoint(good, VSET, NETUID, B) == state
    with pytest.raises(CheckpointInvalid, match="state root"):
        verify_checkpoint(
            replace(good, snapshot=encode(snapshot(replace(state, epoch_blocks=7)))), VSET, NETUID, B
        )
    with pytest.raises(CheckpointInvalid, match="not a quorum"):
        verify_checkpoint(Checkpoint(1, snap, certified(VALS[:1])), VSET, NETUID, B)
    with pytest.raises(CheckpointInvalid, match="another subnet"):
        verify_checkpoint(good, VSET, NETUID, B + 1)
    with pytest.raises(CheckpointInvalid, match="bad signature"):
        verify_checkpoint(good, VSET, NETUID + 1, B)
    # the snapshot carries the genesis's validators_as_miners; a reader with another refuses it
    assert verify_checkpoint(good, VSET, NETUID, B, validators_as_miners=False) == state
    with pytest.raises(CheckpointInvalid, match="validators_as_miners = False"):
        verify_checkpoint(good, VSET, NETUID, B, validators_as_miners=True)
    with pytest.raises(CheckpointInvalid, match="state root"):
        verify_checkpoint(
            replace(good, snapshot=encode(snapshot(replace(state, validators_as_miners=True)))),
            VSET,
            NETUID,
            B,
        )


def test_large_payloads_travel_by_reference() -> None:
    from validator_node.payloads import dht_key_of
    from validator_node.pipeline.messages import PayloadRef

    data = bytes(range(256)) * 1200  # 300 KiB: above the inline cap
    ref = PayloadRef(hashlib.sha256(data).digest(), len(data), dht_key_of(data))
    by_ref = seal(Submission("maxsat", 0, 0, b"", ref), MINERS[0], NETUID)
    # maxsat's policy caps submissions at 128 KiB: the referenced size counts, not the empty inline bytes
    with pytest.raises(BlockRejected, match="submission_too_large"):
        apply_body(start(), body([by_ref]), height=2, parent=b"p" * 32, vset=VSET)
    both = seal(Submission("maxsat", 0, 1, b"x", ref), MINERS[0], NETUID)
    with pytest.raises(BlockRejected, match="bad_submission"):
        apply_body(start(), body([both]), height=2, parent=b"p" * 32, vset=VSET)
    # with a 1 MiB cap the reference is admitted and carries the hash the evaluators will check
    m = ChallengeManifest(
        "maxsat", "maxsat", 1, hashlib.sha256(MAXSAT.wasm).digest(), len(MAXSAT.wasm), 1,
        ModulePolicy.from_dict({**MAXSAT.policy, "max_submission_bytes": 1 << 20}), 500_000_000, 0,
        MAXSAT.task, 0, 1,
    )  # fmt: skip
    reg = (
        RegistryItem(sign_manifest(m, OWNER, NETUID), MAXSAT.wasm),
        RegistryItem(sign_command(OP_ACTIVATE, "maxsat", 2, OWNER, NETUID), None),
    )
    s = apply_body(
        AppState(NETUID, B, genesis(NETUID, OWNER.public_key)),
        BlockBody(INFO, reg, (), (), None),
        height=1,
        parent=bytes(32),
        vset=VSET,
    )
    s = apply_body(s, body([by_ref]), height=2, parent=b"p" * 32, vset=VSET)
    (admitted,) = s.submissions.values()
    assert admitted.payload == b"" and admitted.payload_ref == ref
    from validator_node.pipeline.snapshot import restore, snapshot

    assert restore(snapshot(s)) == s
