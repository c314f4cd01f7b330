"""Subtensor's `set_weights` rules, re-implemented exactly (pure functions, integers only).

The local chain must refuse exactly what the real chain refuses, and the weight computation must
produce vectors the real chain accepts; both use these functions. They follow
`pallets/subtensor/src/subnets/weights.rs::do_set_weights` (check order and error names) and
`epoch/math.rs` (`vec_u16_max_upscale_to_u16`, `check_vec_max_limited`), emulating the I32F32
fixed-point arithmetic (32 fractional bits; division truncates, `round()` is half away from zero)
so that boundary cases round the same way the runtime does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

U16_MAX = 65_535
_FRAC = 32
_ONE = 1 << _FRAC
_HALF = 1 << (_FRAC - 1)
_I32F32_MAX = (1 << 63) - 1


class WeightsRefused(ValueError):
    """The chain refused a set_weights call. `code` is the pallet's error name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _fx(n: int) -> int:
    """I32F32::saturating_from_num(n) as its raw i64."""
    return max(min(n << _FRAC, _I32F32_MAX), -(1 << 63))


def _div(a_raw: int, b_raw: int) -> int:
    """I32F32 safe_div: 0 when dividing by zero, else truncated toward zero (inputs here are >= 0)."""
    if b_raw == 0:
        return 0
    return (a_raw << _FRAC) // b_raw


def _round_to_u16(raw: int) -> int:
    """`.round().saturating_to_num::<u16>()` for a non-negative I32F32."""
    return min((raw + _HALF) >> _FRAC, U16_MAX)


def max_upscale_u16(values: Sequence[int]) -> list[int]:
    """`vec_u16_max_upscale_to_u16`: what the chain stores for the weights it is given."""
    if not values:
        return []
    top = max(values)
    if top == 0:
        return [0] * len(values)
    if top > 32_768:  # the chain avoids overflowing e * 65535 by pre-dividing
        ratio = _div(_fx(U16_MAX), _fx(top))
        return [_round_to_u16(v * ratio) for v in values]
    return [_round_to_u16(_div(_fx(v * U16_MAX), _fx(top))) for v in values]


def max_limited(values: Sequence[int], max_weight_limit: int) -> bool:
    """`check_vec_max_limited`: is the largest normalised weight at most max_weight_limit / 65535?"""
    limit = _div(_fx(max_weight_limit), _fx(U16_MAX))
    total = _fx(sum(values))
    if total == 0 or not values:
        return True
    return max(_div(_fx(v), total) for v in values) <= limit


def is_self_weight(uid: int, uids: Sequence[int], values: Sequence[int]) -> bool:
    return len(values) == 1 and len(uids) >= 1 and uids[0] == uid


@dataclass(frozen=True)
class WeightsContext:
    """Everything `do_set_weights` reads from chain state for one call."""

    netuid: int
    subnet_n: int  # number of UIDs on the subnet
    caller_uid: int | None  # None: the hotkey is not registered
    caller_stake: int  # rao
    caller_permit: bool
    weights_min_stake: int  # rao
    network_version_key: int
    commit_reveal: bool
    last_update: int  # block of the caller's last accepted weights (0 = never)
    rate_limit: int  # blocks
    min_allowed_weights: int
    max_weight_limit: int
    mechanism_count: int = 1


def check_set_weights(
    ctx: WeightsContext,
    uids: Sequence[int],
    values: Sequence[int],
    version_key: int,
    block: int,
    mechid: int = 0,
) -> list[int]:
    """Apply the chain's checks in the chain's order; return the max-upscaled values it would store.

    Raises WeightsRefused with the pallet's error name. The minimum-stake check comes from the
    chain too (`NotEnoughStakeToSetWeights`); commit-reveal subnets skip the rate limit here
    because they rate-limit the commit instead.
    """
    if len(uids) != len(values):
        raise WeightsRefused("WeightVecNotEqualSize", f"{len(uids)} uids but {len(values)} values")
    if any(type(v) is not int or not 0 <= v <= U16_MAX for v in values):
        raise WeightsRefused("InvalidInput", "weights must be u16 integers")
    if any(type(u) is not int or not 0 <= u <= U16_MAX for u in uids):
        raise WeightsRefused("InvalidInput", "uids must be u16 integers")
    if not 0 <= mechid < ctx.mechanism_count:
        raise WeightsRefused(
            "MechanismDoesNotExist", f"mechanism {mechid} (subnet has {ctx.mechanism_count})"
        )
    if len(uids) > ctx.subnet_n:
        raise WeightsRefused("UidsLengthExceedUidsInSubNet", f"{len(uids)} uids for {ctx.subnet_n} neurons")
    if ctx.caller_uid is None:
        raise WeightsRefused("HotKeyNotRegisteredInSubNet", f"the hotkey has no UID on netuid {ctx.netuid}")
    if ctx.caller_stake < ctx.weights_min_stake:
        raise WeightsRefused(
            "NotEnoughStakeToSetWeights", f"stake {ctx.caller_stake} rao < minimum {ctx.weights_min_stake}"
        )
    if not (ctx.network_version_key == 0 or version_key >= ctx.network_version_key):
        raise WeightsRefused(
            "IncorrectWeightVersionKey", f"version_key {version_key} < required {ctx.network_version_key}"
        )
    if not ctx.commit_reveal and ctx.last_update != 0 and block - ctx.last_update < ctx.rate_limit:
        raise WeightsRefused(
            "SettingWeightsTooFast",
            f"last set at block {ctx.last_update}, now {block}; the rate limit is {ctx.rate_limit} blocks",
        )
    self_weight = is_self_weight(ctx.caller_uid, uids, values)
    if not self_weight and not ctx.caller_permit:
        raise WeightsRefused("NeuronNoValidatorPermit", f"UID {ctx.caller_uid} has no validator permit")
    if len(set(uids)) != len(uids):
        raise WeightsRefused("DuplicateUids", "a UID appears more than once")
    bad = [u for u in uids if u >= ctx.subnet_n]
    if bad:
        raise WeightsRefused("UidVecContainInvalidOne", f"UIDs {bad[:5]} do not exist on the subnet")
    min_allowed = min(ctx.min_allowed_weights, ctx.subnet_n)
    if not self_weight and len(values) < min_allowed:
        raise WeightsRefused(
            "WeightVecLengthIsLow", f"{len(values)} weights, at least {min_allowed} required"
        )
    upscaled = max_upscale_u16(values)
    if (
        not self_weight
        and ctx.max_weight_limit != U16_MAX
        and not max_limited(upscaled, ctx.max_weight_limit)
    ):
        raise WeightsRefused(
            "MaxWeightExceeded", f"the largest weight is over max_weight_limit {ctx.max_weight_limit}/65535"
        )
    return upscaled
