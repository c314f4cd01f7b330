"""Every epoch end can be decided, whatever the chain did (issue 12, item 2).

On 1be342a the epoch's last block had to carry exactly what `derive_weights` returned, and it
raised `weights_impossible` when the owner lowered the mechanism count under an active challenge
(the registry never followed the chain) or when `max_weight_limit` needed more UIDs than the
subnet has: every leader failed at every view, for ever.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry.manifest import OP_ACTIVATE, OP_DEACTIVATE, ChallengeManifest, ModulePolicy
from registry.state import (
    STATUS_ACTIVE,
    ChallengeEntry,
    RegistryState,
    genesis,
    sign_command,
    sign_manifest,
)
from tests.node.toy_subnet import toy_subnet
from validator_node.chain.rules import WeightsContext, check_set_weights
from validator_node.devnet import example_challenges
from validator_node.pipeline.messages import EMPTY_BODY, BlockBody, EpochInfo, NeuronEntry, RegistryItem
from validator_node.pipeline.proposal import build_body
from validator_node.pipeline.state import Admitted, AppState, apply_body

NETUID = 7
B = 4
OWNER, VALS, MINERS, VSET, NEURONS, INFO = toy_subnet("liveness")
MAXSAT = next(c for c in example_challenges() if c.challenge_id == "maxsat")


def maxsat_manifest(mechanism_id: int, nonce: int) -> ChallengeManifest:
    return ChallengeManifest(
        "maxsat", "maxsat", 1, hashlib.sha256(MAXSAT.wasm).digest(), len(MAXSAT.wasm), 1,
        ModulePolicy.from_dict(MAXSAT.policy), 500_000_000, mechanism_id, MAXSAT.task, 0, nonce,
    )  # fmt: skip


def leader(
    state: AppState, height: int, info: EpochInfo, registry: list[RegistryItem] | None = None
) -> BlockBody:
    return build_body(
        state,
        height=height,
        parent=bytes(32),
        vset=VSET,
        epoch_info=info,
        registry_pool=registry or [],
        submission_pool=[],
        attestation_pool=[],
    )


def run_epoch(state: AppState, first: int, info: EpochInfo) -> tuple[AppState, BlockBody]:
    """Decide heights first..first+B-1 as an honest leader would; returns the weights block's body."""
    body = EMPTY_BODY
    for h in range(first, first + B):
        body = leader(state, h, info)
        state = apply_body(state, body, height=h, parent=bytes(32), vset=VSET)
    return state, body


def two_mechanism_start() -> AppState:
    """Epoch 0: the subnet has 2 mechanisms and maxsat is active on mechanism 1."""
    info = replace(INFO, mechanism_count=2, owner_hotkey=OWNER.public_key)
    s = AppState(NETUID, B, genesis(NETUID, OWNER.public_key, 2))
    items = [
        RegistryItem(sign_manifest(maxsat_manifest(1, 1), OWNER, NETUID), MAXSAT.wasm),
        RegistryItem(sign_command(OP_ACTIVATE, "maxsat", 2, OWNER, NETUID), None),
    ]
    body = leader(s, 1, info, items)
    assert len(body.registry) == 2
    s = apply_body(s, body, height=1, parent=bytes(32), vset=VSET)
    s, _ = run_epoch_rest(s, 2, info)
    return s


def run_epoch_rest(state: AppState, first: int, info: EpochInfo) -> tuple[AppState, BlockBody]:
    body = EMPTY_BODY
    for h in range(first, ((first - 1) // B + 1) * B + 1):
        body = leader(state, h, info)
        state = apply_body(state, body, height=h, parent=bytes(32), vset=VSET)
    return state, body


def test_lowering_the_mechanism_count_under_an_active_challenge_keeps_epochs_ending() -> None:
    s = two_mechanism_start()
    assert s.weights[0].fallback is None and len(s.weights[0].rows) == 2
    lowered = replace(INFO, mechanism_count=1, owner_hotkey=OWNER.public_key)
    s, weights_body = run_epoch(s, B + 1, lowered)
    # the registry followed the decided chain parameters at the epoch start
    assert s.registry.mechanism_count == 1
    w = weights_body.weights
    assert w is not None and len(w.rows) == 1
    assert w.fallback is not None and "maxsat" in w.fallback
    assert dict(zip(w.rows[0].uids, w.rows[0].weights, strict=True)) == {0: 65535}  # all burnt
    # the owner can land a registry action in the next epoch (deactivate the stranded challenge)
    deactivate = RegistryItem(sign_command(OP_DEACTIVATE, "maxsat", 3, OWNER, NETUID), None)
    body = leader(s, 2 * B + 1, lowered, [deactivate])
    assert body.registry == (deactivate,)
    s = apply_body(s, body, height=2 * B + 1, parent=bytes(32), vset=VSET)
    assert s.registry.active() == ()
    s, weights_body = run_epoch_rest(s, 2 * B + 2, lowered)
    assert weights_body.weights is not None and weights_body.weights.fallback is None


def test_a_max_weight_limit_no_vector_can_meet_falls_back_to_self_weights() -> None:
    s = two_mechanism_start()
    n = len(NEURONS)  # 8 UIDs; a limit of 1000/65535 needs about 66
    tight = replace(INFO, max_weight_limit=1000, owner_hotkey=OWNER.public_key, mechanism_count=2)
    s, weights_body = run_epoch(s, B + 1, tight)
    w = weights_body.weights
    assert w is not None and w.fallback is not None and w.fallback.startswith("self_weight")
    assert [r.uids for r in w.rows] == [(), ()]
    # what each validator then submits is what the chain accepts
    for uid in range(1, 5):
        ctx = _ctx(tight, caller_uid=uid)
        for row in w.rows:
            check_set_weights(ctx, [uid], [65535], 0, 100, row.mechid)
    assert n == 8


def test_the_registry_follows_the_owner_key_of_the_decided_snapshot() -> None:
    s = two_mechanism_start()
    new_owner = toy_subnet("liveness-new").owner
    rotated = replace(INFO, mechanism_count=2, owner_hotkey=new_owner.public_key)
    s = apply_body(s, leader(s, B + 1, rotated), height=B + 1, parent=bytes(32), vset=VSET)
    assert s.registry.sudo == new_owner.public_key
    old = RegistryItem(sign_command(OP_DEACTIVATE, "maxsat", 3, OWNER, NETUID), None)
    new = RegistryItem(sign_command(OP_DEACTIVATE, "maxsat", 3, new_owner, NETUID), None)
    assert leader(s, B + 2, rotated, [old, new]).registry == (new,)


def _ctx(info: EpochInfo, caller_uid: int) -> WeightsContext:
    return WeightsContext(
        netuid=NETUID,
        subnet_n=len(info.neurons),
        caller_uid=caller_uid,
        caller_stake=1,
        caller_permit=True,
        weights_min_stake=0,
        network_version_key=0,
        commit_reveal=False,
        last_update=0,
        rate_limit=0,
        min_allowed_weights=info.min_allowed_weights,
        max_weight_limit=info.max_weight_limit,
        mechanism_count=max(1, info.mechanism_count),
    )


# --- property: an epoch end always has a body the rules accept, and it is chain-valid ---------

_SIGNED = {
    (cid, mech, share): sign_manifest(
        replace(maxsat_manifest(mech, 1), challenge_id=cid, name=cid, emission_share_ppb=share), OWNER, NETUID
    ).signed
    for cid in ("a", "b", "c")
    for mech in range(4)
    for share in (0, 300_000_000, 700_000_000, 1_000_000_000)
}


@st.composite
def epoch_end_states(draw: st.DrawFn) -> AppState:
    n = draw(st.integers(1, 12))
    neurons = tuple(NeuronEntry(u, bytes([u + 1]) * 32, 0, u % 2 == 1) for u in range(n))
    info = EpochInfo(
        epoch=0,
        neurons=neurons,
        owner_uid=draw(st.integers(0, n - 1)),
        min_allowed_weights=draw(st.integers(0, 16)),
        max_weight_limit=draw(st.sampled_from([0, 1, 1000, 8000, 20000, 40000, 65534, 65535])),
        mechanism_count=draw(st.integers(1, 4)),
        version_key=0,
    )
    entries = []
    for cid in draw(st.lists(st.sampled_from(["a", "b", "c"]), unique=True, max_size=3)):
        mech = draw(st.integers(0, 3))
        share = draw(st.sampled_from([0, 300_000_000, 700_000_000, 1_000_000_000]))
        entries.append(ChallengeEntry(_SIGNED[(cid, mech, share)], STATUS_ACTIVE, 1, 1))
    entries.sort(key=lambda e: e.manifest.challenge_id)
    registry = RegistryState(NETUID, OWNER.public_key, draw(st.integers(1, 4)), 2, tuple(entries))
    subs, atts = {}, {}
    for i, (cid, uid, score) in enumerate(
        draw(
            st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 15), st.integers(-5, 10**9)))
        )
    ):
        sid = hashlib.sha256(i.to_bytes(4, "big")).digest()
        subs[sid] = Admitted(sid, cid, b"m" * 32, uid % n, 2, b"", bytes(32))
        atts[sid] = {v.public_key: score for v in VALS}
    return AppState(NETUID, B, registry, epoch_info=info, submissions=subs, attestations=atts)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(epoch_end_states())
def test_every_epoch_end_has_a_chain_valid_body_the_rules_accept(state: AppState) -> None:
    info = state.epoch_info
    assert info is not None
    body = leader(state, B, info)
    after = apply_body(state, body, height=B, parent=bytes(32), vset=VSET)
    w = after.weights[0]
    assert w == body.weights and len(w.rows) == info.mechanism_count
    for row in w.rows:
        if not row.uids:
            assert w.fallback is not None and w.fallback.startswith("self_weight")
            continue
        for caller in range(len(info.neurons)):  # every validator submits the same row
            check_set_weights(_ctx(info, caller), list(row.uids), list(row.weights), 0, 100, row.mechid)
