"""Properties of Allways scoring on generated evidence bundles (hypothesis), module against reference.

Generated bundles are small (a window of 60 blocks, up to 6 hotkeys, 40 events) so that every event
kind, tie, busy interval and same-block collision shows up often; each example runs the real module.
"""

from __future__ import annotations

import random
from types import ModuleType
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.sandbox import LoadedModule, Sandbox
from wire.cbor import loads

ONE = 10**18
BLOCK = 1_000
WINDOW = 60
NAMES = ["a", "b", "c", "d", "e", "f"]
RATES = [(0, 0), (340, 0), (341, 0), (3400, -1), (339, 0), (35, 1), (34_001, -2)]

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@st.composite
def bundles(draw: st.DrawFn) -> dict[str, Any]:
    """Keyword arguments for reference.bundle: random but valid evidence."""
    registered = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=5, unique=True))
    block_st = st.integers(BLOCK - WINDOW - 20, BLOCK)
    rates = draw(
        st.lists(
            st.tuples(block_st, st.sampled_from(NAMES), st.sampled_from(RATES), st.sampled_from(RATES)),
            max_size=25,
            unique_by=lambda r: (r[0], r[1]),
        )
    )
    events = draw(
        st.lists(
            st.tuples(
                block_st,
                st.integers(0, 3),
                st.integers(0, 4),
                st.sampled_from(NAMES),
                st.integers(0, 10**9),
            ),
            max_size=40,
            unique_by=lambda e: (e[0], e[1]),
        )
    )
    collateral = draw(st.dictionaries(st.sampled_from(NAMES), st.integers(0, 10**9)))
    return {
        "block": BLOCK,
        "hotkeys": registered,
        "rates": rates,
        "events": events,
        "collateral": collateral,
        "max_swap": draw(st.sampled_from([0, 5 * 10**8])),
        "halted": draw(st.integers(0, 9)) == 0,
        "params": [
            WINDOW,
            500,
            draw(st.sampled_from([1, 10])),
            *draw(st.sampled_from([(1, 2), (0, 1), (1, 1)])),
            2,
        ],
    }


def _encode(ref: ModuleType, kw: dict[str, Any]) -> bytes:
    return ref.bundle(
        kw["block"], kw["hotkeys"], **{k: v for k, v in kw.items() if k not in ("block", "hotkeys")}
    )


@SETTINGS
@given(kw=bundles(), seed=st.integers(0, 2**32))
def test_module_equals_reference_sums_to_one_order_independent(
    sandbox: Sandbox, allways: LoadedModule, allways_ref: ModuleType, kw: dict[str, Any], seed: int
) -> None:
    b = _encode(allways_ref, kw)
    want = allways_ref.aggregate(b)
    assert isinstance(want, bytes)
    got, r = sandbox.call_packed(allways, "aggregate", b)
    assert r.ok, r
    assert got == want
    doc = loads(want, 1 << 22)
    weights = doc[1]
    assert len(weights) == len(kw["hotkeys"]) and sum(weights) == ONE and min(weights) >= 0
    for row in doc[6]:
        assert 0 <= row[6] <= ONE and 0 <= row[7] <= ONE and 0 <= row[9] <= ONE
    # the same evidence in another order: identical bytes out (module and reference)
    rng = random.Random(seed)
    shuffled = dict(kw)
    for key in ("rates", "events"):
        shuffled[key] = rng.sample(kw[key], len(kw[key]))
    items = list(kw["collateral"].items())
    shuffled["collateral"] = dict(rng.sample(items, len(items)))
    b2 = _encode(allways_ref, shuffled)
    assert allways_ref.aggregate(b2) == want
    got2, r2 = sandbox.call_packed(allways, "aggregate", b2)
    assert r2.ok and got2 == want


def _better(rate: tuple[int, int], direction: int) -> tuple[int, int]:
    """A strictly better quote in `direction`: higher TAO/BTC for btc->tao, lower for tao->btc."""
    m, e = rate
    if direction == 0:
        return (m + 1, e) if m + 1 < 100_000 else (m, e + 1)
    return (m - 1, e) if m > 1 else (m, e)


@SETTINGS
@given(kw=bundles(), pick=st.integers(0, 1000), direction=st.integers(0, 1))
def test_a_better_rate_never_lowers_crown_time(
    allways_ref: ModuleType, kw: dict[str, Any], pick: int, direction: int
) -> None:
    ref = allways_ref
    quoted = [i for i, r in enumerate(kw["rates"]) if r[2 + direction][0] > 0]
    if not quoted:
        return
    i = quoted[pick % len(quoted)]
    b, hk, fwd, rev = kw["rates"][i]
    pair = [fwd, rev]
    pair[direction] = _better(pair[direction], direction)
    improved = dict(kw, rates=[*kw["rates"][:i], (b, hk, pair[0], pair[1]), *kw["rates"][i + 1 :]])
    before = ref.replay(ref.parse(_encode(ref, kw)))[0].get(hk, [0, 0])[direction]
    after = ref.replay(ref.parse(_encode(ref, improved)))[0].get(hk, [0, 0])[direction]
    assert after >= before


@SETTINGS
@given(kw=bundles(), drop=st.integers(0, 10))
def test_removing_a_hotkey_from_the_metagraph_zeroes_it(
    allways_ref: ModuleType, kw: dict[str, Any], drop: int
) -> None:
    ref = allways_ref
    if len(kw["hotkeys"]) < 2:
        return
    gone = kw["hotkeys"][drop % len(kw["hotkeys"])]
    doc = loads(
        ref.aggregate(_encode(ref, dict(kw, hotkeys=[h for h in kw["hotkeys"] if h != gone]))), 1 << 22
    )
    assert all(row[1] != gone for row in doc[6])


def _verdict(sandbox: Sandbox, mod: LoadedModule, data: bytes) -> bytes | int | str:
    out, r = sandbox.call_packed(mod, "aggregate", data)
    if r.ok:
        assert out is not None
        return out
    if r.error_kind == "module_error":
        return int((r.error_message or "").rsplit(" ", 1)[-1])
    return f"{r.error_kind}: {r.error_message}"


@SETTINGS
@given(kw=bundles(), at=st.integers(0, 10**6), byte=st.integers(0, 255), cut=st.booleans())
def test_corrupted_bundles_get_the_same_verdict(
    sandbox: Sandbox,
    allways: LoadedModule,
    allways_ref: ModuleType,
    kw: dict[str, Any],
    at: int,
    byte: int,
    cut: bool,
) -> None:
    """A flipped or truncated byte: module and reference agree on the output or the error code (no trap)."""
    b = bytearray(_encode(allways_ref, kw))
    i = at % len(b)
    if cut:
        del b[i:]
    else:
        b[i] = byte
    assert _verdict(sandbox, allways, bytes(b)) == allways_ref.aggregate(bytes(b))
