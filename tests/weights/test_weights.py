"""Weights from decided scores: exact examples, and properties checked against the chain and the SDK."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest
from bittensor.intents.weights import _conform, _Preflight, clip_to_max_weight, normalize
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from validator_node.chain.rules import WeightsContext, check_set_weights, max_upscale_u16
from validator_node.weights import (
    PPB,
    SCALE,
    ChallengeScores,
    WeightLimits,
    WeightsError,
    burn_row,
    combine,
    conform,
    quantize,
    weight_rows,
)

U16 = 65535
# derandomized: the suite must give the same verdict on every run (CI); the examples are still many
PROPS = settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


def chain_accepts(
    uids: tuple[int, ...], values: tuple[int, ...], limits: WeightLimits, caller: int
) -> list[int]:
    """Run the chain's own checks (as the local chain does) for a permitted validator at `caller`."""
    ctx = WeightsContext(
        netuid=1, subnet_n=limits.n_uids, caller_uid=caller, caller_stake=10**12, caller_permit=True,
        weights_min_stake=0, network_version_key=0, commit_reveal=False, last_update=0, rate_limit=100,
        min_allowed_weights=limits.min_allowed_weights, max_weight_limit=limits.max_weight_limit,
    )  # fmt: skip
    return check_set_weights(ctx, list(uids), list(values), version_key=0, block=1000)


def sdk_conform(
    uids: tuple[int, ...], values: tuple[int, ...], limits: WeightLimits
) -> tuple[list[int], list[int]]:
    """What bittensor 11's SetWeights would submit for our vector (its own clip + normalize + checks)."""
    pre = _Preflight(uid=10_000, commit_reveal=False, min_allowed_weights=limits.min_allowed_weights,
                     max_weight_limit=limits.max_weight_limit)  # fmt: skip
    return _conform(list(uids), [float(v) for v in values], pre, netuid=1)


# --- examples ---------------------------------------------------------------------------------


def test_design_example() -> None:
    """Two challenges at 60% and 30%: 10% burnt to the owner (uid 0); weights as the design says."""
    cs = [
        ChallengeScores("a", 600_000_000, 0, {1: PPB // 2, 2: PPB, 3: 0}),
        ChallengeScores("b", 300_000_000, 0, {2: 1, 4: 3}),
    ]
    (row,) = weight_rows(cs, owner_uid=0, limits=WeightLimits(n_uids=8))
    # W = {0: .1, 1: .2, 2: .4 + .075, 4: .225}, max-upscaled to 65535 at uid 2
    assert row.as_dict() == {0: 13797, 1: 27594, 2: 65535, 4: 31043}
    assert row.burnt == SCALE // 10


def test_nothing_to_score_burns_everything() -> None:
    for cs in ([], [ChallengeScores("a", PPB, 0, {})], [ChallengeScores("a", PPB, 0, {3: 0, 4: -5})]):
        (row,) = weight_rows(cs, owner_uid=2, limits=WeightLimits(n_uids=5, min_allowed_weights=1))
        assert (row.uids, row.weights, row.burnt) == ((2,), (U16,), SCALE)
    row = burn_row(0, WeightLimits(n_uids=16, min_allowed_weights=4))
    assert row.uids == (0, 1, 2, 3) and row.weights == (U16, 1, 1, 1)  # fillers carry a negligible share
    chain_accepts(row.uids, row.weights, WeightLimits(16, 4), caller=5)


def test_burn_vector_under_a_max_weight_limit_is_chain_valid() -> None:
    limits = WeightLimits(n_uids=10, min_allowed_weights=1, max_weight_limit=U16 // 4)
    row = burn_row(0, limits)
    chain_accepts(row.uids, row.weights, limits, caller=3)
    assert sdk_conform(row.uids, row.weights, limits) == (list(row.uids), list(row.weights))
    with pytest.raises(WeightsError, match="needs"):
        burn_row(0, WeightLimits(n_uids=3, max_weight_limit=U16 // 4))


def test_one_row_per_mechanism_and_unknown_mechanisms() -> None:
    cs = [ChallengeScores("a", PPB, 0, {1: 5}), ChallengeScores("b", PPB // 2, 1, {2: 5})]
    rows = weight_rows(cs, 0, WeightLimits(4), mechanism_count=2)
    assert [r.as_dict() for r in rows] == [{1: U16}, {0: U16, 2: U16}]
    with pytest.raises(WeightsError, match="unknown mechanisms"):
        weight_rows(cs, 0, WeightLimits(4), mechanism_count=1)


def test_bad_inputs() -> None:
    with pytest.raises(WeightsError, match="owner UID"):
        weight_rows([], owner_uid=9, limits=WeightLimits(4))
    with pytest.raises(WeightsError, match="sum to"):
        combine([ChallengeScores("a", 600_000_000), ChallengeScores("b", 400_000_001)], 0, 4)
    # scores for UIDs outside the metagraph earn nothing (their share is burnt)
    (row,) = weight_rows([ChallengeScores("a", PPB, 0, {7: 5})], 0, WeightLimits(4))
    assert row.as_dict() == {0: U16}


def test_quantize_matches_the_sdk_on_an_exact_half() -> None:
    # 1 : 2 -> 32767.5, which the SDK's round() (half to even) makes 32768; so do we, exactly
    assert quantize({0: 1, 1: 2}) == ((0, 1), (32768, U16))
    assert tuple(normalize([0, 1], [0.5, 1.0])[1]) == (32768, U16)


# --- properties -------------------------------------------------------------------------------


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[ChallengeScores], int, WeightLimits]:
    n = draw(st.integers(1, 48))
    owner = draw(st.integers(0, n - 1))
    k = draw(st.integers(0, 4))
    raw_shares = [draw(st.integers(0, PPB)) for _ in range(k)]
    total = sum(raw_shares)
    cap = draw(st.integers(0, PPB))
    shares = [s * cap // total if total else 0 for s in raw_shares]
    challenges = []
    for i, share in enumerate(shares):
        scores = draw(st.dictionaries(st.integers(0, n + 3), st.integers(-PPB, PPB), max_size=12))
        challenges.append(ChallengeScores(f"c{i}", share, 0, scores))
    min_allowed = draw(st.integers(0, 8))
    limit = draw(st.one_of(st.just(U16), st.integers(U16 // 8, U16)))
    return challenges, owner, WeightLimits(n, min_allowed, limit)


def _rows(challenges: list[ChallengeScores], owner: int, limits: WeightLimits):  # type: ignore[no-untyped-def]
    try:
        return weight_rows(challenges, owner, limits)
    except WeightsError:
        # only when the limit needs more UIDs than the subnet has
        assume(False)
        raise


@PROPS
@given(scenarios())
def test_always_accepted_by_the_chain_checks(sc: tuple[list[ChallengeScores], int, WeightLimits]) -> None:
    challenges, owner, limits = sc
    (row,) = _rows(challenges, owner, limits)
    assert row.uids == tuple(sorted(set(row.uids))) and all(0 < v <= U16 for v in row.weights)
    stored = chain_accepts(row.uids, row.weights, limits, caller=owner)
    assert tuple(stored) == row.weights  # already max-upscaled: the chain stores exactly what we sent


@PROPS
@given(scenarios())
def test_identical_to_what_the_sdk_would_submit(sc: tuple[list[ChallengeScores], int, WeightLimits]) -> None:
    challenges, owner, limits = sc
    assume(
        limits.min_allowed_weights <= limits.n_uids
    )  # see test_sdk_is_stricter_than_the_chain_on_tiny_subnets
    (row,) = _rows(challenges, owner, limits)
    assert sdk_conform(row.uids, row.weights, limits) == (list(row.uids), list(row.weights))


def test_sdk_is_stricter_than_the_chain_on_tiny_subnets() -> None:
    """The chain caps min_allowed_weights at the subnet's size; bittensor 11's SetWeights does not.

    So on a subnet with fewer UIDs than min_allowed_weights the SDK refuses, client-side, a vector
    the chain would accept. Found by the property test above; kept here as a known divergence.
    """
    limits = WeightLimits(n_uids=2, min_allowed_weights=3)
    row = burn_row(0, limits)
    assert row.uids == (0, 1)
    chain_accepts(row.uids, row.weights, limits, caller=1)
    with pytest.raises(Exception, match="requires at least 3 weights"):
        sdk_conform(row.uids, row.weights, limits)


@PROPS
@given(scenarios(), st.randoms(use_true_random=False))
def test_independent_of_input_order(
    sc: tuple[list[ChallengeScores], int, WeightLimits], rnd: random.Random
) -> None:
    challenges, owner, limits = sc
    shuffled = []
    for c in challenges:
        items = list(c.scores.items())
        rnd.shuffle(items)
        shuffled.append(ChallengeScores(c.challenge_id, c.share_ppb, c.mechanism_id, dict(items)))
    rnd.shuffle(shuffled)
    assert _rows(shuffled, owner, limits) == _rows(challenges, owner, limits)


@PROPS
@given(scenarios())
def test_shares_are_respected(sc: tuple[list[ChallengeScores], int, WeightLimits]) -> None:
    """Without chain limits, each UID's u16 weight is its exact share, to within the u16 rounding."""
    challenges, owner, limits = sc
    free = WeightLimits(limits.n_uids)
    combined, burnt = combine(challenges, owner, free.n_uids)
    assert sum(combined.values()) == SCALE  # every unit of emission goes somewhere
    exact: dict[int, Fraction] = {}
    for c in challenges:
        valid = {u: s for u, s in c.scores.items() if 0 <= u < free.n_uids and s > 0}
        total = sum(valid.values())
        for u, s in valid.items():
            exact[u] = exact.get(u, Fraction(0)) + Fraction(c.share_ppb, PPB) * Fraction(s, total)
    exact_burn = 1 - sum(exact.values(), Fraction(0))
    exact[owner] = exact.get(owner, Fraction(0)) + exact_burn
    assert abs(Fraction(burnt, SCALE) - exact_burn) <= Fraction(len(exact) * 12, SCALE)
    (row,) = weight_rows(challenges, owner, free)
    top = max(exact.values())
    got = row.as_dict()
    for uid, share in exact.items():
        assert abs(Fraction(got.get(uid, 0)) - share / top * U16) <= Fraction(1, 2) + Fraction(1, 10**6)


@PROPS
@given(st.dictionaries(st.integers(0, 300), st.integers(0, 10**12), min_size=1, max_size=40))
def test_quantize_is_the_sdk_normalize(weights: dict[int, int]) -> None:
    ours = quantize(weights)
    uids = sorted(weights)
    theirs = normalize(uids, [float(weights[u]) for u in uids])
    assert len(ours[0]) == len(ours[1])
    top = max(weights.values())
    for uid, w in weights.items():
        exact = Fraction(w * U16, top) if top else Fraction(0)
        near_tie = abs(exact - int(exact) - Fraction(1, 2)) < Fraction(1, 10**6)
        mine = dict(zip(*ours, strict=True)).get(uid, 0)
        sdk = dict(zip(*theirs, strict=True)).get(uid, 0)
        assert mine == sdk or (near_tie and abs(mine - sdk) == 1)  # floats may land either side of .5


@PROPS
@given(st.lists(st.integers(1, U16), min_size=1, max_size=30), st.integers(U16 // 10, U16 - 1))
def test_conform_meets_the_limit_and_keeps_the_order(values: list[int], limit: int) -> None:
    limits = WeightLimits(n_uids=64, max_weight_limit=limit)
    uids = tuple(range(len(values)))
    out_uids, out = conform(uids, tuple(values), limits)
    chain_accepts(out_uids, out, limits, caller=63)
    got = dict(zip(out_uids, out, strict=True))
    for a in uids:  # clipping never inverts an order between two scored UIDs
        for b in uids:
            if values[a] < values[b]:
                assert got[a] <= got[b]
    assert max_upscale_u16(list(out)) == list(out)
    assert clip_to_max_weight([float(v) for v in out], limit / U16) == pytest.approx(
        [v / sum(out) for v in out]
    )
