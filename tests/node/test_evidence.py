"""Evidence for epoch-scored challenges: votes, agreement by stake, and scoring by `aggregate`.

The rules are pure (`pipeline.evidence`, `pipeline.state`); the module runs in the real sandbox
(`SandboxAggregator`), and the BitDefense bundle is built by the node's real evidence source.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.manifest import ChallengeManifest, ModulePolicy
from registry.state import OP_ACTIVATE, genesis, runtime_validator, sign_command, sign_manifest
from tests.node.toy_subnet import toy_subnet
from validator_node.evaluation import Evaluator, SandboxAggregator
from validator_node.evidence import BitDefenseRounds, _challenge_module
from validator_node.metrics import Metrics
from validator_node.pipeline.evidence import (
    AggregateOutputInvalid,
    agreed_hash,
    bundle_hash,
    epoch_seed,
    evidence_cut,
    in_evidence_window,
    scores_from_output,
)
from validator_node.pipeline.messages import (
    EMPTY_BODY,
    MAX_EVIDENCE_VOTES,
    Attestation,
    BlockBody,
    EvidenceBundle,
    EvidenceVote,
    RegistryItem,
    Submission,
)
from validator_node.pipeline.proposal import BODY_BUDGET, build_body
from validator_node.pipeline.snapshot import restore, snapshot, state_root
from validator_node.pipeline.state import (
    AppState,
    BlockRejected,
    apply_body,
    derive_weights,
    epoch_scores,
    submission_id,
    vote_key,
)
from wire.cbor import dumps
from wire.codec import encode
from wire.envelope import SignedEnvelope, seal
from wire.keys import Hotkey

NETUID = 9
B = 8  # heights 1..8: submissions 2, attestations 3, cut 4, votes 5..7, weights 8
CUT = 4
CID = "bitdefense-invariants"
SEED = epoch_seed(bytes(32))  # epoch 0 opens on the genesis parent
OWNER, VALS, MINERS, VSET, NEURONS, INFO = toy_subnet("evidence")

DIR = Path(__file__).resolve().parents[2] / "challenges" / CID
META = tomllib.loads((DIR / "challenge.toml").read_text())
WASM = (DIR / META["challenge"]["module"]).read_bytes()
ROUNDS = _challenge_module(CID, "rounds")
P = b"p" * 32


@pytest.fixture(scope="module")
def aggregator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxAggregator]:
    evaluator = Evaluator(tmp_path_factory.mktemp("sandbox"), Metrics())
    yield SandboxAggregator(evaluator, runtime_validator, Metrics())
    evaluator.close()


def start(**policy: int) -> AppState:
    m = ChallengeManifest(
        CID, CID, 1, hashlib.sha256(WASM).digest(), len(WASM), 1,
        ModulePolicy.from_dict({**META["policy"], **policy}), 500_000_000, 0, b"", 0, 1,
    )  # fmt: skip
    registry = (
        RegistryItem(sign_manifest(m, OWNER, NETUID), WASM),
        RegistryItem(sign_command(OP_ACTIVATE, CID, 2, OWNER, NETUID), None),
    )
    s0 = AppState(NETUID, B, genesis(NETUID, OWNER.public_key))
    return apply_body(s0, BlockBody(INFO, registry, (), (), None), height=1, parent=bytes(32), vset=VSET)


def vote(v: Hotkey, bundle: bytes, epoch: int = 0, challenge: str = CID) -> SignedEnvelope:
    return seal(EvidenceVote(challenge, epoch, hashlib.sha256(bundle).digest()), v, NETUID)


def votes_body(votes: list[SignedEnvelope], bundles: list[bytes] = (), epoch: int = 0) -> BlockBody:  # type: ignore[assignment]
    return BlockBody(
        None,
        (),
        (),
        (),
        None,
        tuple(sorted(votes, key=vote_key)),
        tuple(EvidenceBundle(CID, epoch, b) for b in bundles),
    )


def empty_until(s: AppState, height: int) -> AppState:
    """`s` (after block 1) with empty blocks 2 .. height-1 applied."""
    for h in range(2, height):
        s = apply_body(s, EMPTY_BODY, height=h, parent=P, vset=VSET)
    return s


def leader_body(s: AppState, height: int, **pools: object) -> BlockBody:
    """What an honest leader proposes at `height` from these pools (the others empty)."""
    base: dict[str, object] = {"registry_pool": [], "submission_pool": [], "attestation_pool": []}
    return build_body(s, height=height, parent=P, vset=VSET, epoch_info=INFO, **{**base, **pools})  # type: ignore[arg-type]


def at_cut(aggregator: SandboxAggregator) -> AppState:
    """The state after the cut: every miner answered every round at height 2, and the validators
    attested the latencies they saw at height 3 (miner i: 500 * (i + 1) ms, one liar at 1 ms)."""
    s = start()
    subs = [
        seal(Submission(CID, 0, r, ROUNDS.answer(kind, 0, SEED, r, i)), m, NETUID)
        for i, (m, kind) in enumerate(zip(MINERS, ROUNDS.MINER_KINDS, strict=True))
        for r in range(ROUNDS.ROUNDS_PER_EPOCH)
    ]
    s = apply_body(
        s,
        BlockBody(None, (), tuple(sorted(subs, key=submission_id)), (), None),
        height=2,
        parent=P,
        vset=VSET,
    )
    uid_of = {n.hotkey: n.uid for n in NEURONS}
    atts = [
        seal(
            Attestation(0, submission_id(e), 1 if v is VALS[3] else 500 * (uid_of[e.signer] - 4), None),
            v,
            NETUID,
        )
        for e in subs
        for v in VALS
    ]
    atts.sort(key=lambda e: (_sid(e), e.signer))
    s = apply_body(
        s, BlockBody(None, (), (), tuple(atts), None), height=3, parent=P, vset=VSET, aggregate=aggregator
    )
    return apply_body(s, EMPTY_BODY, height=CUT, parent=P, vset=VSET, aggregate=aggregator)


def _sid(env: SignedEnvelope) -> bytes:
    from wire.codec import decode

    return decode(env.body, Attestation).submission_id


def close_epoch(
    s: AppState, aggregator: SandboxAggregator, first: int = CUT + 1
) -> tuple[AppState, dict[int, int]]:
    for h in range(first, B):
        s = apply_body(s, EMPTY_BODY, height=h, parent=P, vset=VSET, aggregate=aggregator)
    w = derive_weights(s, VSET, 0, aggregator)
    apply_body(s, BlockBody(None, (), (), (), w), height=B, parent=P, vset=VSET, aggregate=aggregator)
    (row,) = w.rows
    return s, dict(zip(row.uids, row.weights, strict=True))


def test_window_heights() -> None:
    assert evidence_cut(1, 8) == 4 and evidence_cut(8, 8) == 4 and evidence_cut(9, 8) == 12
    assert [h for h in range(1, 17) if in_evidence_window(h, 8)] == [5, 6, 7, 13, 14, 15]
    assert evidence_cut(3, 4) is None and not any(in_evidence_window(h, 4) for h in range(1, 9))


def test_bundle_from_decided_answers_scores_with_stake_weighted_latency(
    aggregator: SandboxAggregator,
) -> None:
    s = at_cut(aggregator)
    bundle = BitDefenseRounds().observe(CID, 0, SEED, CUT, s, VSET)
    assert bundle == BitDefenseRounds().observe(CID, 0, SEED, CUT, s, VSET)  # every honest validator agrees
    rounds = ROUNDS.ref.parse(bundle)["rounds"]
    assert len(rounds) == ROUNDS.ROUNDS_PER_EPOCH
    # the liar's 1 ms is outvoted: the stake-weighted median is the honest 500 * (i + 1)
    assert {uid: lat for r in rounds for uid, _, lat in r[3]} == {5: 500, 6: 1000, 7: 1500}
    # attestations of an epoch-scored challenge are observations, never scores
    assert CID not in epoch_scores(s, VSET, aggregator)
    s = apply_body(
        s, votes_body([vote(v, bundle) for v in VALS[:3]], [bundle]), height=5, parent=P, vset=VSET
    )
    assert agreed_hash(s.evidence_votes[CID], VSET) == hashlib.sha256(bundle).digest()
    scores = epoch_scores(s, VSET, aggregator)[CID]
    assert set(scores) <= {5, 6, 7} and scores.get(5, 0) > 0  # the honest engine (uid 5) scores
    _, weights = close_epoch(s, aggregator, first=6)
    assert weights[5] > 0


def test_votes_below_quorum_score_nothing_and_a_minority_cannot_forge(aggregator: SandboxAggregator) -> None:
    s = at_cut(aggregator)
    bundle = BitDefenseRounds().observe(CID, 0, SEED, CUT, s, VSET)
    forged = ROUNDS.build_bundle(
        0, SEED, [n.hotkey.hex() for n in NEURONS], [(7, 2, ROUNDS.answer("honest", 0, SEED, 0, 2), 1)]
    )
    # 400 + 200 of 1000 is not a quorum (3s > 2t): nothing is agreed, so the bytes are not even
    # admitted, and the share burns to the owner
    two = [vote(VALS[0], bundle), vote(VALS[2], bundle)]
    with pytest.raises(BlockRejected, match="unagreed_evidence"):
        apply_body(s, votes_body(two, [bundle]), height=5, parent=P, vset=VSET)
    thin = apply_body(s, votes_body(two), height=5, parent=P, vset=VSET)
    assert agreed_hash(thin.evidence_votes[CID], VSET) is None
    assert epoch_scores(thin, VSET, aggregator).get(CID) is None
    _, weights = close_epoch(thin, aggregator, first=6)
    assert set(weights) == {0}
    # the 100-stake validator votes for forged evidence: the honest quorum's bundle still scores
    mixed = [vote(v, bundle) for v in VALS[:3]] + [vote(VALS[3], forged)]
    s2 = apply_body(s, votes_body(mixed, [bundle]), height=5, parent=P, vset=VSET)
    with pytest.raises(BlockRejected, match="unagreed_evidence"):  # the minority's bytes stay out
        apply_body(s2, votes_body([], [forged]), height=6, parent=P, vset=VSET)
    assert len(s2.evidence) == 1
    assert (
        epoch_scores(s2, VSET, aggregator)[CID]
        == epoch_scores(
            apply_body(s, votes_body(mixed[:3], [bundle]), height=5, parent=P, vset=VSET), VSET, aggregator
        )[CID]
    )


@pytest.mark.parametrize(
    ("height", "make", "reason"),
    [
        (3, lambda b: votes_body([vote(VALS[0], b)]), "outside_evidence_window"),
        (8, lambda b: votes_body([vote(VALS[0], b)]), "busy_weights_block|outside_evidence_window|weights"),
        (5, lambda b: votes_body([vote(MINERS[0], b)]), "evidence_not_validator"),
        (5, lambda b: votes_body([vote(VALS[0], b, epoch=1)]), "wrong_epoch"),
        (5, lambda b: votes_body([vote(VALS[0], b, challenge="maxsat")]), "inactive_challenge"),
        (5, lambda b: votes_body([], [b]), "unagreed_evidence"),
        (5, lambda b: votes_body([vote(VALS[0], b), vote(VALS[2], b)], [b]), "unagreed_evidence"),
        (5, lambda b: votes_body([vote(VALS[0], b)], [b], epoch=1), "wrong_epoch"),
        (5, lambda b: BlockBody(None, (), (), (), None, (vote(VALS[0], b),) * 2), "unsorted_items"),
    ],
)
def test_bad_evidence_is_refused(height: int, make, reason: str) -> None:  # type: ignore[no-untyped-def]
    s = start()
    s = empty_until(s, height)
    with pytest.raises(BlockRejected, match=reason):
        apply_body(s, make(b"bundle"), height=height, parent=P, vset=VSET)


def test_a_second_vote_and_a_repeated_bundle_are_refused() -> None:
    s = start()
    s = empty_until(s, 5)
    quorum = [vote(v, b"one") for v in VALS[:3]]
    s = apply_body(s, votes_body(quorum, [b"one"]), height=5, parent=P, vset=VSET)
    with pytest.raises(BlockRejected, match="duplicate_evidence_vote"):
        apply_body(s, votes_body([vote(VALS[0], b"two")]), height=6, parent=P, vset=VSET)
    with pytest.raises(BlockRejected, match="duplicate_evidence"):
        apply_body(s, votes_body([], [b"one"]), height=6, parent=P, vset=VSET)


def test_evidence_survives_a_snapshot_and_resets_with_the_epoch() -> None:
    s = start()
    s = empty_until(s, 5)
    s = apply_body(s, votes_body([vote(v, b"e") for v in VALS], [b"e"]), height=5, parent=P, vset=VSET)
    assert restore(snapshot(s)) == s
    assert state_root(restore(snapshot(s))) == state_root(s)
    for h in range(6, B):
        s = apply_body(s, EMPTY_BODY, height=h, parent=P, vset=VSET)
    s = apply_body(s, BlockBody(None, (), (), (), derive_weights(s, VSET, 0)), height=B, parent=P, vset=VSET)
    s = apply_body(s, BlockBody(replace(INFO, epoch=1), (), (), (), None), height=B + 1, parent=P, vset=VSET)
    assert s.evidence_votes == {} and s.evidence == {}


def test_votes_for_made_up_challenges_cannot_crowd_out_real_ones() -> None:
    """A validator signing hundreds of votes for challenge ids that sort first: the leader skips
    them (inactive) and still takes every real vote, and the agreed bundle goes in."""
    s = start()
    s = empty_until(s, 5)
    junk = [vote(VALS[3], b"x", challenge=f"!{i:03}") for i in range(MAX_EVIDENCE_VOTES + 44)]
    body = leader_body(
        s,
        5,
        evidence_vote_pool=junk + [vote(v, b"x") for v in VALS],
        evidence_pool=[EvidenceBundle(CID, 0, b"x")],
    )
    assert [vote_key(e)[0] for e in body.evidence_votes] == [CID] * 4
    assert [e.bundle for e in body.evidence] == [b"x"]
    apply_body(s, body, height=5, parent=P, vset=VSET)


def test_leader_puts_votes_and_one_bundle_in_window_blocks_only() -> None:
    s = start()
    pools = {
        "evidence_vote_pool": [vote(v, b"x") for v in VALS] + [vote(MINERS[0], b"x")],
        "evidence_pool": [EvidenceBundle(CID, 0, b"x"), EvidenceBundle(CID, 0, b"unvoted")],
    }
    early = leader_body(s, 2, **pools)
    assert early.evidence_votes == () and early.evidence == ()
    s = empty_until(s, 5)
    body = leader_body(s, 5, **pools)
    assert len(body.evidence_votes) == 4 and [e.bundle for e in body.evidence] == [b"x"]
    apply_body(s, body, height=5, parent=P, vset=VSET)


def test_a_proposal_stays_within_the_block_budget() -> None:
    s = start(max_submission_bytes=1024 * 1024)
    from validator_node.pipeline.messages import MAX_INLINE_PAYLOAD

    big = [
        seal(Submission(CID, 0, n, b"\x07" * (MAX_INLINE_PAYLOAD - 64)), m, NETUID)
        for m in MINERS
        for n in range(2)
    ]
    body = leader_body(s, 2, submission_pool=big)
    assert len(encode(body)) <= BODY_BUDGET
    assert len(body.submissions) == 3  # six would be 1.5 MiB; each of three more did not fit
    apply_body(s, body, height=2, parent=P, vset=VSET)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 10**20), min_size=1, max_size=40))
def test_scores_from_output_normalise_exactly(weights: list[int]) -> None:
    scores = scores_from_output(dumps([1, weights, "trace"]), 40)
    total = sum(weights)
    assert sum(scores.values()) <= 1_000_000_000
    assert all(s > 0 for s in scores.values())
    for uid, w in enumerate(weights):
        assert scores.get(uid, 0) == (w * 1_000_000_000 // total if total else 0)


@pytest.mark.parametrize(
    "output",
    [
        b"\xff",
        dumps([2, [1]]),
        dumps([1, 5]),
        dumps([1, [1, -1]]),
        dumps([1, [1, True]]),
        dumps({"w": 1}),
        dumps([1, [1] * 9]),
    ],
)
def test_outputs_off_the_convention_are_refused(output: bytes) -> None:
    with pytest.raises(AggregateOutputInvalid):
        scores_from_output(output, 8)


def test_the_aggregate_memo_is_keyed_by_policy_too(aggregator: SandboxAggregator) -> None:
    """An update that keeps the module but lowers its fuel must not reuse the old output: a node
    that never ran the old policy would compute the new one and derive other weights."""
    s = at_cut(aggregator)
    bundle = BitDefenseRounds().observe(CID, 0, SEED, CUT, s, VSET)
    entry = s.registry.get(CID)
    assert entry is not None
    full = aggregator.aggregate(entry.manifest, WASM, bundle)
    assert full is not None and scores_from_output(full, len(NEURONS))
    starved = replace(
        entry.manifest, policy=ModulePolicy.from_dict({**entry.manifest.policy.to_dict(), "fuel": 10_000})
    )
    assert aggregator.aggregate(starved, WASM, bundle) is None  # out of fuel, not the memo's output
    assert aggregator.aggregate(entry.manifest, WASM, bundle) == full


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 4),  # signer: a validator, or (4) a miner
            st.sampled_from([CID, "!junk", "maxsat", "zz-unknown"]),
            st.integers(0, 1),  # epoch
            st.sampled_from([b"x", b"y"]),
        ),
        max_size=40,
    ),
    st.lists(
        st.tuples(st.sampled_from([CID, "!junk"]), st.integers(0, 1), st.sampled_from([b"x", b"y", b"z"]))
    ),
    st.sampled_from([2, 5, 6, 7]),
)
def test_whatever_is_pooled_an_honest_proposal_is_valid(votes, bundles, height) -> None:  # type: ignore[no-untyped-def]
    """Hostile pools (votes from miners, for made-up or inactive challenges, other epochs;
    bundles nobody agreed on): the leader's body always applies, and carries every valid vote."""
    s = _STARTED
    s = empty_until(s, height)
    keys = [*VALS, MINERS[0]]
    vote_pool = [vote(keys[i], b, epoch=e, challenge=c) for i, c, e, b in votes]
    bundle_pool = [EvidenceBundle(c, e, b) for c, e, b in bundles]
    body = leader_body(s, height, evidence_vote_pool=vote_pool, evidence_pool=bundle_pool)
    after = apply_body(s, body, height=height, parent=P, vset=VSET)
    if in_evidence_window(height, B):
        valid = {(c, keys[i].public_key) for i, c, e, _ in votes if i < 4 and c == CID and e == 0}
        assert {vote_key(e) for e in body.evidence_votes} == valid
    for item in body.evidence:  # only agreed bytes
        assert agreed_hash(after.evidence_votes[item.challenge_id], VSET) == bundle_hash(item.bundle)


_STARTED = start()


async def test_the_bundles_warmed_are_forgotten_with_their_epoch(aggregator: SandboxAggregator) -> None:
    """The node warms the aggregate memo once per agreed bundle and remembers that it did; issue
    12: that memory kept an entry per challenge per epoch for ever."""
    import trio

    from validator_node.evidence import EvidenceDuty

    class App:
        state = start()

        def vset_for(self, height: int) -> object:
            return VSET

    duty = EvidenceDuty()
    duty.app, duty.aggregator, duty.evidence_sources, duty._warmed = App(), aggregator, {}, set()  # type: ignore[attr-defined]
    async with trio.open_nursery() as nursery:
        duty._nursery = nursery
        for epoch in range(40):
            bundle = b"epoch %d" % epoch
            h = hashlib.sha256(bundle).digest()
            duty.app.state = replace(
                start(),
                evidence_votes={CID: {v.public_key: h for v in VALS}},
                evidence={(CID, h): EvidenceBundle(CID, epoch, bundle)},
            )
            duty._on_decided_for_evidence(epoch * B + CUT + 1)  # in the epoch's voting window
            assert (CID, h) in duty._warmed
            assert len(duty._warmed) == 1


def test_devnet_rounds_come_from_the_decided_seed_not_the_shipped_answers() -> None:
    """Issue 16: the devnet's rounds were a pure function of the epoch and the shipped dataset,
    which carries each transaction's expected verdicts, so a miner could look the answers up."""
    other = epoch_seed(b"\x01" * 32)
    a, b = ROUNDS.epoch_rounds(0, SEED), ROUNDS.epoch_rounds(0, other)
    assert a == ROUNDS.epoch_rounds(0, SEED)  # deterministic: every validator derives the same
    assert [r["tx"] for r in a] != [r["tx"] for r in b]
    shipped = {tx["hash"] for tx in ROUNDS._DATASET["transactions"]}
    many = [r for e in range(16) for r in ROUNDS.epoch_rounds(e, SEED)]
    assert not shipped & {r["tx"] for r in many}  # no round is a dataset transaction by its hash
    # the values are drawn: a miner that looks up the shipped verdicts of the transaction with the
    # same shape (contracts and slots written) is wrong on many rounds; the rule is never wrong
    expected: dict[tuple[tuple[str, bytes], ...], list[list[int]]] = {}
    for tx in ROUNDS._DATASET["transactions"]:
        shape = tuple((c, slot) for c, slot, _ in ROUNDS.sim.write_rows(tx))
        expected.setdefault(shape, []).append(tx["expected"])
    fooled = [r for r in many if r["truth"] not in expected[tuple((c, slot) for c, slot, _ in r["writes"])]]
    assert len(fooled) >= len(many) // 8, (
        len(fooled),
        len(many),
    )  # 12 of 64 here: transfers touch no watched slot
    inv = ROUNDS._PARSED_INVARIANTS
    for r in many:
        writes = [(c, int.from_bytes(sl, "big"), int.from_bytes(v, "big")) for c, sl, v in r["writes"]]
        assert r["truth"] == ROUNDS.ref.oracle(inv, writes)
    with pytest.raises(ValueError):
        ROUNDS.epoch_rounds(0, b"short")


def test_the_app_knows_each_epoch_seed_from_decided_blocks(tmp_path: Path) -> None:
    from tests.node.test_pools import VALS as POOL_VALS
    from tests.node.test_pools import make_app

    app, chain = make_app(tmp_path)  # 6-block epochs
    assert app.epoch_seed(0) == epoch_seed(bytes(32))  # before block 1: the genesis parent
    hashes = [bytes(32)]
    for h in range(1, 8):
        data = app.propose(h, POOL_VALS[0].public_key, chain.current_block())
        app.apply_decided(h, data)
        hashes.append(hashlib.sha256(data).digest())
    assert app.epoch_seed(0) == epoch_seed(bytes(32))
    assert app.epoch_seed(1) == epoch_seed(hashes[6])  # epoch 1 opened on block 6's hash
    assert app.epoch_seed(2) is None and app.epoch_seed(5) is None
    chain.close()
