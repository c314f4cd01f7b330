"""From decided per-challenge scores to the u16 weight vector every validator submits (pure, integers).

DESIGN.md section 7: for each active challenge c with emission share e_c (ppb), the miners' scores
are normalised to w_c; the combined weight is W = sum_c e_c * w_c; whatever the shares do not
claim (and the share of a challenge nobody scored on) is burnt to the subnet owner's UID; the
result is converted to u16 exactly as the chain does (max-upscale to 65535, round half to even
like the SDK's `normalize`, zeros dropped). One row per mechanism.

Validators are not paid as miners (issue 13): the UIDs holding a validator permit in the epoch's
decided snapshot (`EpochInfo.neurons`) are `unpaid` unless the genesis record's
`validators_as_miners` is set (`pipeline.state.unpaid_uids`), and `from_manifests` drops their
scores before a challenge's share is split, so that share goes to the challenge's other miners,
or is burnt when none remain. The owner's burn is not miner weight and is untouched: the owner's
UID receives it whether or not it holds a permit. The rule sits here, in the weights every
replica re-derives from the decided state, rather than at admission (refusing their submissions
in `Draft.submission`), because
  * it covers every way a UID is scored in one place: per-submission medians and the per-UID
    output of an epoch-scored challenge's `aggregate`, which never passes through admission;
  * admission stays a function of registration alone, so a proposer's pools, the door checks and
    the miner tooling need no second notion of who may submit; a permit holder's submission is
    admitted, evaluated and attested like any miner's (its score shows in the epoch's scores and
    the audit report) and simply earns no weight.
The price is the evaluation of those submissions (bounded like any registered miner's by the
per-epoch rate limit) and that the submitter is not told at the door. Both options are equally
deterministic: the snapshot is fixed for the epoch.

Every honest validator must derive the identical vector from the identical decided block, so
there are no floats and no dependence on input order: sums of exact integer terms, UIDs sorted,
ties broken by UID. The vector is then made chain-valid for the subnet's hyperparameters
(`min_allowed_weights` and `max_weight_limit`, using the chain's own fixed-point check from
`chain.rules`), so that the real chain, the local chain and the SDK's own conforming step all
accept it unchanged.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from registry.manifest import ChallengeManifest
from validator_node.chain.base import Hyperparameters, Metagraph
from validator_node.chain.rules import U16_MAX, max_limited, max_upscale_u16

PPB = 1_000_000_000  # emission shares and scores are fixed point with this as 1.0
SCALE = PPB * PPB  # combined weights: share (ppb) x normalised score (ppb)
# Stay this far (relative) inside max_weight_limit, so that the SDK's float check
# (`max/sum <= limit`) agrees with the chain's I32F32 one and never re-clips our vector.
_MARGIN_NUM, _MARGIN_DEN = 999_999, 1_000_000


class WeightsError(ValueError):
    """The inputs cannot give a chain-valid vector (bad shares, owner UID missing, impossible limits)."""


@dataclass(frozen=True)
class ChallengeScores:
    """The decided scores of one challenge for one epoch: miner UID -> score (fixed point 1e9)."""

    challenge_id: str
    share_ppb: int
    mechanism_id: int = 0
    scores: Mapping[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class WeightLimits:
    """The chain's constraints on a weight vector (from the metagraph and hyperparameters)."""

    n_uids: int
    min_allowed_weights: int = 0
    max_weight_limit: int = U16_MAX

    @classmethod
    def of(cls, metagraph: Metagraph, hyperparameters: Hyperparameters) -> WeightLimits:
        return cls(metagraph.n, hyperparameters.min_allowed_weights, hyperparameters.max_weight_limit)


def from_manifests(
    active: Iterable[ChallengeManifest],
    scores: Mapping[str, Mapping[int, int]],
    unpaid: Collection[int] = frozenset(),
) -> list[ChallengeScores]:
    """Pair the epoch's active manifests (registry) with their decided per-miner scores, without
    the scores of the `unpaid` UIDs (validators, who are not paid as miners: module docstring)."""
    return [
        ChallengeScores(
            m.challenge_id,
            m.emission_share_ppb,
            m.mechanism_id,
            {u: s for u, s in scores.get(m.challenge_id, {}).items() if u not in unpaid},
        )
        for m in active
    ]


@dataclass(frozen=True)
class WeightRow:
    mechid: int
    uids: tuple[int, ...]
    weights: tuple[int, ...]  # u16, max-upscaled (the largest is 65535)
    burnt: int  # fixed point SCALE: how much of the row went to the owner as burn

    def as_dict(self) -> dict[int, int]:
        return dict(zip(self.uids, self.weights, strict=True))


def combine(
    challenges: Iterable[ChallengeScores], owner_uid: int, n_uids: int, mechid: int = 0
) -> tuple[dict[int, int], int]:
    """W(uid) in units of 1/SCALE for one mechanism, and the burnt amount (included in W[owner]).

    Negative scores (error codes) and UIDs outside the metagraph earn nothing. Each term is
    floored, and the rounding dust is burnt too, so the row always sums to exactly SCALE.
    """
    if not 0 <= owner_uid < n_uids:
        raise WeightsError(f"owner UID {owner_uid} is not on the subnet (n = {n_uids})")
    mine = sorted((c for c in challenges if c.mechanism_id == mechid), key=lambda c: c.challenge_id)
    if sum(c.share_ppb for c in mine) > PPB or any(not 0 <= c.share_ppb <= PPB for c in mine):
        raise WeightsError(f"emission shares on mechanism {mechid} must be in [0, 1e9] and sum to <= 1e9")
    weights: dict[int, int] = {}
    distributed = 0
    for c in mine:
        scores = {int(u): int(s) for u, s in c.scores.items() if 0 <= int(u) < n_uids and int(s) > 0}
        total = sum(scores.values())
        if total == 0:
            continue  # nobody scored: this challenge's share is burnt
        for uid, score in scores.items():
            part = c.share_ppb * PPB * score // total
            weights[uid] = weights.get(uid, 0) + part
            distributed += part
    burnt = SCALE - distributed
    if burnt:
        weights[owner_uid] = weights.get(owner_uid, 0) + burnt
    return weights, burnt


def quantize(weights: Mapping[int, int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Max-upscale to u16 with round-half-to-even (the SDK's `normalize`, in exact integers)."""
    positive = sorted((u, w) for u, w in weights.items() if w > 0)
    if not positive:
        return (), ()
    top = max(w for _, w in positive)
    uids, values = [], []
    for uid, w in positive:
        q, r = divmod(w * U16_MAX, top)
        if 2 * r > top or (2 * r == top and q % 2 == 1):
            q += 1
        if q:
            uids.append(uid)
            values.append(q)
    return tuple(uids), tuple(values)


def safely_limited(values: Sequence[int], max_weight_limit: int) -> bool:
    """The chain's check, and the exact rational one with a small margin (for the SDK's float check)."""
    if max_weight_limit >= U16_MAX or not values:
        return True
    top, total = max(values), sum(values)
    return top * U16_MAX * _MARGIN_DEN <= max_weight_limit * total * _MARGIN_NUM and max_limited(
        values, max_weight_limit
    )


def conform(
    uids: Sequence[int], values: Sequence[int], limits: WeightLimits
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Make a u16 vector acceptable to the chain without changing it when it already is.

    Too few weights: the lowest absent UIDs get weight 1 (a negligible share) until
    `min_allowed_weights` is met. Over `max_weight_limit`: the largest weights are clipped to
    one cutoff (found by bisection with the chain's own check), adding weight-1 UIDs first when
    the limit needs more entries than there are; then the vector is max-upscaled again.
    """
    n = limits.n_uids
    pairs = {int(u): int(v) for u, v in zip(uids, values, strict=True) if v > 0}
    limit = limits.max_weight_limit
    need = min(limits.min_allowed_weights, n)
    if limit < U16_MAX:
        if limit <= 0:
            raise WeightsError("max_weight_limit 0 admits no weights but a self-weight")
        need = max(need, -(-U16_MAX * _MARGIN_DEN // (limit * _MARGIN_NUM)) + 1)
        if need > n:
            raise WeightsError(f"max_weight_limit {limit} needs {need} UIDs; the subnet has {n}")
    filler = (u for u in range(n) if u not in pairs)
    while len(pairs) < need:
        pairs[next(filler)] = 1
    order = sorted(pairs)
    vals = [pairs[u] for u in order]
    if not safely_limited(max_upscale_u16(vals), limit):
        lo, hi = 1, max(vals)  # invariant: the cutoff lo passes, hi fails
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if safely_limited(max_upscale_u16([min(v, mid) for v in vals]), limit):
                lo = mid
            else:
                hi = mid
        vals = [min(v, lo) for v in vals]
    out = max_upscale_u16(vals)
    if not safely_limited(out, limit):  # pragma: no cover - bisection bounds make this unreachable
        raise WeightsError("could not satisfy max_weight_limit")
    return tuple(order), tuple(out)


def weight_rows(
    challenges: Sequence[ChallengeScores],
    owner_uid: int,
    limits: WeightLimits,
    mechanism_count: int = 1,
) -> tuple[WeightRow, ...]:
    """The full weight matrix (one row per mechanism) decided at an epoch's end."""
    unknown = sorted({c.mechanism_id for c in challenges if not 0 <= c.mechanism_id < mechanism_count})
    if unknown:
        raise WeightsError(f"challenges map to unknown mechanisms {unknown} (count {mechanism_count})")
    rows = []
    for mechid in range(mechanism_count):
        combined, burnt = combine(challenges, owner_uid, limits.n_uids, mechid)
        uids, values = conform(*quantize(combined), limits)
        rows.append(WeightRow(mechid=mechid, uids=uids, weights=values, burnt=burnt))
    return tuple(rows)


def burn_row(owner_uid: int, limits: WeightLimits, mechid: int = 0) -> WeightRow:
    """The chain-valid fallback when there is nothing to score: everything to the owner's UID."""
    combined, burnt = combine((), owner_uid, limits.n_uids, mechid)
    uids, values = conform(*quantize(combined), limits)
    return WeightRow(mechid=mechid, uids=uids, weights=values, burnt=burnt)
