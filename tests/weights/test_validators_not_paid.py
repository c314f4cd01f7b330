"""Validators are not paid as miners (issue 13, section 4).

A validator hotkey submitted as a miner, was scored 1.0 and received weight. Now the hotkeys
holding a validator permit in the epoch's decided snapshot (`EpochInfo`) earn no miner weight:
their scores are dropped before a challenge's share is split, so the share goes to the other
miners or is burnt; unless the genesis record sets `validators_as_miners`. The owner's burn is
not miner weight and still goes to the owner's UID, permit or not.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry.manifest import ChallengeManifest, ModulePolicy
from registry.state import (
    OP_ACTIVATE,
    STATUS_ACTIVE,
    ChallengeEntry,
    RegistryState,
    genesis,
    sign_command,
    sign_manifest,
)
from tests.node.toy_subnet import toy_subnet
from validator_node.devnet import example_challenges
from validator_node.pipeline.messages import (
    Attestation,
    BlockBody,
    EpochInfo,
    EpochWeights,
    NeuronEntry,
    RegistryItem,
    Submission,
)
from validator_node.pipeline.state import (
    Admitted,
    AppState,
    apply_body,
    derive_weights,
    epoch_scores,
    submission_id,
    unpaid_uids,
)
from wire.envelope import SignedEnvelope, seal
from wire.keys import Hotkey

NETUID = 7
B = 6
PPB = 1_000_000_000
# uid 0 the owner (no permit), uids 1-4 validators (permit), uids 5-7 miners (no permit)
OWNER, VALS, MINERS, VSET, NEURONS, INFO = toy_subnet("unpaid")
MAXSAT = next(c for c in example_challenges() if c.challenge_id == "maxsat")


def maxsat(challenge_id: str = "maxsat", share: int = PPB // 2) -> ChallengeManifest:
    return ChallengeManifest(
        challenge_id, challenge_id, 1, hashlib.sha256(MAXSAT.wasm).digest(), len(MAXSAT.wasm), 1,
        ModulePolicy.from_dict(MAXSAT.policy), share, 0, MAXSAT.task, 0, 1,
    )  # fmt: skip


def epoch_with_scores(scored: list[tuple[Hotkey, int]], info: EpochInfo = INFO) -> AppState:
    """Epoch 0 through the real rules: block 1 opens it (snapshot `info`, maxsat active with half
    the emission), block 2 admits one signed submission per hotkey, block 3 carries every
    validator's attestation of each with the given score."""
    s = AppState(NETUID, B, genesis(NETUID, OWNER.public_key))
    items = (
        RegistryItem(sign_manifest(maxsat(), OWNER, NETUID), MAXSAT.wasm),
        RegistryItem(sign_command(OP_ACTIVATE, "maxsat", 2, OWNER, NETUID), None),
    )
    s = apply_body(s, BlockBody(info, items, (), (), None), height=1, parent=bytes(32), vset=VSET)
    subs = [seal(Submission("maxsat", 0, 0, MAXSAT.payloads[0]), k, NETUID) for k, _ in scored]
    s = apply_body(
        s,
        BlockBody(None, (), tuple(sorted(subs, key=submission_id)), (), None),
        height=2,
        parent=b"p" * 32,
        vset=VSET,
    )
    assert len(s.submissions) == len(scored)  # a permit holder's submission is admitted like any
    atts: list[SignedEnvelope] = [
        seal(Attestation(0, submission_id(env), score, None), v, NETUID)
        for env, (_, score) in zip(subs, scored, strict=True)
        for v in VALS
    ]
    atts.sort(key=lambda e: (_sid(e), e.signer))
    return apply_body(s, BlockBody(None, (), (), tuple(atts), None), height=3, parent=b"q" * 32, vset=VSET)


def _sid(env: SignedEnvelope) -> bytes:
    from wire.codec import decode

    return decode(env.body, Attestation).submission_id


def row_of(w: EpochWeights) -> dict[int, int]:
    (row,) = w.rows
    return dict(zip(row.uids, row.weights, strict=True))


def test_a_permit_holder_scored_top_gets_no_weight_and_the_miners_split_the_share() -> None:
    validator = VALS[0]  # uid 1, holds a permit in the epoch's snapshot
    s = epoch_with_scores([(validator, PPB), (MINERS[0], 600_000_000), (MINERS[1], 300_000_000)])
    # it was admitted and scored: the epoch's scores show it (the API and audit report them)
    assert epoch_scores(s, VSET)["maxsat"] == {1: PPB, 5: 600_000_000, 6: 300_000_000}
    assert unpaid_uids(s) == frozenset({1, 2, 3, 4})
    w = derive_weights(s, VSET, 0)
    # half the emission is burnt to the owner (uid 0); the other half goes 2:1 to uids 5 and 6
    assert row_of(w) == {0: 65535, 5: 43690, 6: 21845}
    assert w.fallback is None
    # exactly the weights of the epoch without the validator's submission
    alone = epoch_with_scores([(MINERS[0], 600_000_000), (MINERS[1], 300_000_000)])
    assert derive_weights(alone, VSET, 0) == w


def test_a_share_only_permit_holders_scored_on_is_burnt() -> None:
    s = epoch_with_scores([(VALS[0], PPB), (VALS[3], 700_000_000)])
    assert row_of(derive_weights(s, VSET, 0)) == {0: 65535}  # everything to the owner


def test_with_validators_as_miners_in_the_genesis_a_permit_holder_is_paid() -> None:
    s = epoch_with_scores([(VALS[0], PPB), (MINERS[0], 500_000_000)])
    paid = replace(s, validators_as_miners=True)
    assert unpaid_uids(paid) == frozenset()
    # W: owner 0.5 (burn), uid 1 0.5 * 2/3, uid 5 0.5 * 1/3
    assert row_of(derive_weights(paid, VSET, 0)) == {0: 65535, 1: 43690, 5: 21845}
    assert row_of(derive_weights(s, VSET, 0)) == {0: 65535, 5: 65535}


def test_the_owner_still_receives_the_burn_when_it_holds_a_permit_and_submits() -> None:
    """The owner's UID holds a permit and submits a top-scored answer: its miner score earns
    nothing (it is a permit holder), but the burn (the unclaimed half) is still all its own."""
    neurons = tuple(replace(n, validator_permit=True) if n.uid == 0 else n for n in NEURONS)
    info = replace(INFO, neurons=neurons)
    s = epoch_with_scores([(OWNER, PPB), (MINERS[0], 500_000_000)], info)
    assert 0 in unpaid_uids(s)
    # W: owner 0.5 (exactly the burn), uid 5 0.5: the miner takes the whole challenge share
    assert row_of(derive_weights(s, VSET, 0)) == {0: 65535, 5: 65535}
    # and with no permit the owner would have been paid as a miner on top of the burn
    plain = epoch_with_scores([(OWNER, PPB), (MINERS[0], 500_000_000)])
    assert row_of(derive_weights(plain, VSET, 0)) == {0: 65535, 5: 13107}


# --- property: no permit holder is ever paid for miner scores ----------------------------------

_SIGNED = {
    (cid, share): sign_manifest(maxsat(cid, share), OWNER, NETUID).signed
    for cid in ("a", "b")
    for share in (300_000_000, 700_000_000)
}


@st.composite
def epoch_end_states(draw: st.DrawFn) -> AppState:
    """An epoch's state before its weights block: random permits, owner, chain limits, two
    challenges and scored submissions from any UID (permit holders included)."""
    n = draw(st.integers(1, 12))
    permits = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    neurons = tuple(NeuronEntry(u, bytes([u + 1]) * 32, 0, permits[u]) for u in range(n))
    unlimited = draw(st.booleans())  # no limits: the chain forces no filler UIDs into the row
    info = EpochInfo(
        epoch=0,
        neurons=neurons,
        owner_uid=draw(st.integers(0, n - 1)),
        min_allowed_weights=draw(st.integers(0, 1)) if unlimited else draw(st.integers(0, 14)),
        max_weight_limit=65535 if unlimited else draw(st.sampled_from([8000, 20000, 40000, 65535])),
        mechanism_count=1,
        version_key=0,
    )
    shares = draw(st.sampled_from([(300_000_000, 700_000_000), (700_000_000, 300_000_000)]))
    entries = tuple(
        ChallengeEntry(_SIGNED[(cid, share)], STATUS_ACTIVE, 1, 1)
        for cid, share in zip("ab", shares, strict=True)
    )
    registry = RegistryState(NETUID, OWNER.public_key, 1, 2, entries)
    subs, atts = {}, {}
    drawn = draw(
        st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 15), st.integers(-5, PPB)), max_size=20)
    )
    for i, (cid, uid, score) in enumerate(drawn):
        sid = hashlib.sha256(i.to_bytes(4, "big")).digest()
        subs[sid] = Admitted(sid, cid, neurons[uid % n].hotkey, uid % n, 2, b"", bytes(32))
        atts[sid] = {v.public_key: score for v in VALS}
    return AppState(NETUID, B, registry, epoch_info=info, submissions=subs, attestations=atts)


def _without_permit_holders_submissions(state: AppState) -> AppState:
    assert state.epoch_info is not None
    permit = {n.uid for n in state.epoch_info.neurons if n.validator_permit}
    keep = {sid: a for sid, a in state.submissions.items() if a.uid not in permit}
    return replace(state, submissions=keep, attestations={sid: state.attestations[sid] for sid in keep})


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(epoch_end_states())
def test_no_permit_holder_ever_receives_miner_weight(state: AppState) -> None:
    info = state.epoch_info
    assert info is not None
    permit = {n.uid for n in info.neurons if n.validator_permit}
    w = derive_weights(state, VSET, 0)
    # a permit holder's submissions change nothing at all (not even the chain's filler UIDs)
    assert derive_weights(_without_permit_holders_submissions(state), VSET, 0) == w
    if info.min_allowed_weights <= 1 and info.max_weight_limit == 65535:
        # no filler UIDs: a permit holder is in the row only as the owner receiving the burn
        for row in w.rows:
            assert {u for u in row.uids if u in permit} <= {info.owner_uid}
    # with the genesis flag set, a permit is irrelevant: as if nobody held one
    no_permits = replace(info, neurons=tuple(replace(n, validator_permit=False) for n in info.neurons))
    paid = derive_weights(replace(state, validators_as_miners=True), VSET, 0)
    assert paid == derive_weights(replace(state, epoch_info=no_permits), VSET, 0)
