"""Python reference for allways-swap: Allways (SN7, seed era, entrius/allways@2698acc) swap-market scoring.

The module (`allways.zig`) and this file implement the same rules; tests check they agree byte for byte.
Only integers: every division is a floor division at a documented place, so both agree exactly.

Input (`aggregate`, and the task of `evaluate`): an evidence bundle, canonical CBOR, arrays only:

    [version=1, block B, hotkeys[uid] (text), halted (bool), max_swap (rao),
     collateral [[hotkey, rao]], rates [[block, hotkey, [m, e], [m, e]]],
     events [[block, idx, kind, hotkey, tao_amount]],
     params [window, credibility_window, ramp, alpha_num, alpha_den, recycle_uid]]

* rates: one miner commitment at `block`: rate btc->tao then counter rate tao->btc, each the 5-significant-
  figure decimal m * 10**e (0 <= m < 100000, -15 <= e <= 15; m = 0 = opted out). Unit TAO per BTC both ways.
* events (contract events at `block`, `idx` = event index in the block): kind 0 MinerActivated(active),
  1 MinerActivated(inactive), 2 SwapInitiated, 3 SwapCompleted (tao_amount = volume), 4 SwapTimedOut.
* collateral and max_swap are pinned to block B (the original read them live at scoring time).
* Events at or before the window start set the state the window starts from (the original's anchors);
  events after B are invalid.

Output (`aggregate`): canonical CBOR

    [1, weights[n] (sum = WEIGHT_ONE), B, halted, recycle_uid, pools [[crown_units, unfilled_units]] x2,
     miners [[uid, hotkey, crown_btc_tao, crown_tao_btc, completed, timed_out, success_cubed, capacity,
              volume, volume_factor, weight]]]

Element [1] is what the platform reads (docs/challenge-abi.md 3.1, output convention v1); the rest is trace.
Factors are fixed point WEIGHT_ONE = 10**18; crown time is in units of 1/720720 block (ties split exactly
for up to 16 holders, floored beyond). `evaluate(bundle, uid)` returns the weight of CBOR uint `uid` in the
platform's 1e9 fixed point. Error codes: -1 malformed input, -2 invalid evidence, -3 bad submission.
"""

from __future__ import annotations

from typing import Any

from wire.cbor import dumps, loads
from wire.errors import WireError

SCORE_ONE = 1_000_000_000
WEIGHT_ONE = 10**18
CROWN_UNITS = 720_720  # lcm(1..16): an even split among up to 16 tied holders is exact
DEFAULT_PARAMS = [600, 216_000, 10, 1, 2, 53]  # 2698acc allways/constants.py
MAX_BUNDLE = 1 << 24
MAX_UIDS, MAX_EVENTS, MAX_HOTKEY = 4096, 65536, 64
MAX_BLOCK, MAX_AMOUNT, MAX_IDX = 1 << 40, 1 << 48, 1 << 32
MAX_EXP = 15
E_MALFORMED, E_INVALID, E_SUBMISSION = -1, -2, -3
ACTIVATED, DEACTIVATED, INITIATED, COMPLETED, TIMED_OUT = range(5)
BTC_TAO, TAO_BTC = 0, 1  # direction pools: higher rate wins btc->tao, lower wins tao->btc


class Invalid(Exception):
    """The bundle cannot be scored; `code` is the module's error code."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _uint(x: Any, cap: int) -> int:
    if type(x) is not int or x < 0:
        raise Invalid(E_MALFORMED)
    if x >= cap:
        raise Invalid(E_INVALID)
    return x


def _int(x: Any) -> int:
    if type(x) is not int:
        raise Invalid(E_MALFORMED)
    return x


def _arr(x: Any, n: int | None = None) -> list[Any]:
    if type(x) is not list or (n is not None and len(x) != n):
        raise Invalid(E_MALFORMED)
    return x


def _text(x: Any) -> str:
    if type(x) is not str:
        raise Invalid(E_MALFORMED)
    if len(x.encode()) > MAX_HOTKEY:
        raise Invalid(E_INVALID)
    return x


def _rate(x: Any) -> tuple[int, int]:
    m, e = _arr(x, 2)
    m = _uint(m, 100_000)
    e = _int(e)
    if not -MAX_EXP <= e <= MAX_EXP:
        raise Invalid(E_INVALID)
    return (m, e)


def rate_cmp(a: tuple[int, int], b: tuple[int, int]) -> int:
    """Compare two m*10**e rates exactly (-1, 0, 1): scale both to the smaller exponent."""
    lo = min(a[1], b[1])
    x, y = a[0] * 10 ** (a[1] - lo), b[0] * 10 ** (b[1] - lo)
    return (x > y) - (x < y)


def _key(hotkey: str) -> bytes:
    return hotkey.encode()


def parse(bundle: bytes) -> dict[str, Any]:
    """Decode and check a bundle; raises Invalid with the module's error code."""
    try:
        doc = loads(bundle, MAX_BUNDLE)
    except WireError:
        raise Invalid(E_MALFORMED) from None
    d = _arr(doc, 9)
    if _int(d[0]) != 1:
        raise Invalid(E_INVALID)
    block = _uint(d[1], MAX_BLOCK)
    hotkeys = [_text(h) for h in _arr(d[2])]
    if type(d[3]) is not bool:
        raise Invalid(E_MALFORMED)
    halted = d[3]
    max_swap = _uint(d[4], 1 << 64)
    coll_raw = _arr(d[5])
    rates_raw = _arr(d[6])
    events_raw = _arr(d[7])
    params = [_uint(p, 1 << 64) for p in _arr(d[8], 6)]
    if not hotkeys or len(hotkeys) > MAX_UIDS or len(set(hotkeys)) != len(hotkeys):
        raise Invalid(E_INVALID)
    if max(len(coll_raw), len(rates_raw), len(events_raw)) > MAX_EVENTS:
        raise Invalid(E_INVALID)
    window, cred, ramp, an, ad, recycle = params
    if not (1 <= window <= 1 << 20 and 1 <= cred <= 1 << 32 and 1 <= ramp <= 1 << 16):
        raise Invalid(E_INVALID)
    if not (1 <= ad <= 1 << 20 and an <= ad and recycle < 1 << 16):
        raise Invalid(E_INVALID)
    collateral: dict[str, int] = {}
    for row in coll_raw:
        hk, amount = _arr(row, 2)
        hk = _text(hk)
        amount = _uint(amount, 1 << 64)
        if hk in collateral:
            raise Invalid(E_INVALID)
        collateral[hk] = amount
    rates = []
    for row in rates_raw:
        b, hk, fwd, rev = _arr(row, 4)
        b = _uint(b, MAX_BLOCK)
        hk = _text(hk)
        fwd, rev = _rate(fwd), _rate(rev)
        if b > block:
            raise Invalid(E_INVALID)
        rates.append((b, hk, fwd, rev))
    if len({(b, _key(hk)) for b, hk, _, _ in rates}) != len(rates):
        raise Invalid(E_INVALID)
    events = []
    for row in events_raw:
        b, idx, kind, hk, amount = _arr(row, 5)
        b = _uint(b, MAX_BLOCK)
        idx = _uint(idx, MAX_IDX)
        kind = _uint(kind, 5)
        hk = _text(hk)
        amount = _uint(amount, MAX_AMOUNT)
        if b > block:
            raise Invalid(E_INVALID)
        events.append((b, idx, kind, hk, amount))
    if len({(b, idx) for b, idx, _, _, _ in events}) != len(events):
        raise Invalid(E_INVALID)
    return {
        "block": block,
        "hotkeys": hotkeys,
        "halted": halted,
        "max_swap": max_swap,
        "collateral": collateral,
        "rates": rates,
        "events": events,
        "window": window,
        "cred": cred,
        "ramp": ramp,
        "alpha": (an, ad),
        "recycle": recycle,
    }


def crown_holders(
    rates: dict[str, list[tuple[int, int]]],
    direction: int,
    qualified: set[str],
) -> list[str]:
    """Qualified miners at the best rate (higher wins btc->tao, lower wins tao->btc), sorted by hotkey bytes.

    Equivalent to the original's walk of rate levels best-first, stopping at the first level with a
    qualified miner: only qualified miners with a positive rate are candidates at all.
    """
    best: tuple[int, int] | None = None
    holders: list[str] = []
    for hk in sorted(qualified, key=_key):
        r = rates.get(hk, [(0, 0), (0, 0)])[direction]
        if r[0] == 0:
            continue
        c = -1 if best is None else rate_cmp(r, best)
        if best is not None and direction == TAO_BTC:
            c = -c
        if best is None or c > 0:
            best, holders = r, [hk]
        elif c == 0:
            holders.append(hk)
    return holders


def replay(p: dict[str, Any]) -> tuple[dict[str, list[int]], list[list[int]]]:
    """Crown time per hotkey and direction over [B - window, B), by event replay.

    Total order: (block, class, idx, hotkey bytes) with class ACTIVE(0) < BUSY(1) < RATE(2); before an
    event, the interval since the previous one is credited to the crown holders of that instant.
    """
    block = p["block"]
    ws = max(0, block - p["window"])
    registered = set(p["hotkeys"])
    stream: list[tuple[int, int, int, bytes, Any]] = []
    for b, idx, kind, hk, _amt in p["events"]:
        cls = 0 if kind in (ACTIVATED, DEACTIVATED) else 1
        stream.append((b, cls, idx, _key(hk), ("event", kind, hk)))
    for b, hk, fwd, rev in p["rates"]:
        stream.append((b, 2, 0, _key(hk), ("rate", [fwd, rev], hk)))
    stream.sort(key=lambda ev: ev[:4])
    active: set[str] = set()
    busy: dict[str, int] = {}
    rates: dict[str, list[tuple[int, int]]] = {}
    crown: dict[str, list[int]] = {}
    pools = [[0, 0], [0, 0]]

    def credit(a: int, b: int) -> None:
        a = max(a, ws)
        if b <= a:
            return
        qualified = {hk for hk in active if hk in registered and busy.get(hk, 0) == 0}
        for d in (BTC_TAO, TAO_BTC):
            holders = crown_holders(rates, d, qualified)
            if not holders:
                pools[d][1] += (b - a) * CROWN_UNITS
                continue
            share = (b - a) * CROWN_UNITS // len(holders)
            for hk in holders:
                crown.setdefault(hk, [0, 0])[d] += share
                pools[d][0] += share

    prev = 0
    for b, _cls, _idx, _k, ev in stream:
        credit(prev, b)
        prev = max(prev, b)
        if ev[0] == "rate":
            rates[ev[2]] = ev[1]
            continue
        kind, hk = ev[1], ev[2]
        if kind == ACTIVATED:
            active.add(hk)
        elif kind == DEACTIVATED:
            active.discard(hk)
        elif kind == INITIATED:
            busy[hk] = busy.get(hk, 0) + 1
        else:
            busy[hk] = max(0, busy.get(hk, 0) - 1)
    credit(prev, block)
    return crown, pools


def mul(a: int, b: int) -> int:
    """Fixed-point product, floored."""
    return a * b // WEIGHT_ONE


def score_bundle(p: dict[str, Any]) -> list[Any]:
    """The output document (a CBOR-ready list) for a parsed bundle."""
    block, hotkeys = p["block"], p["hotkeys"]
    n = len(hotkeys)
    recycle_uid = p["recycle"] if p["recycle"] < n else 0
    weights = [0] * n
    if p["halted"]:
        weights[recycle_uid] = WEIGHT_ONE
        return [1, weights, block, True, recycle_uid, [[0, 0], [0, 0]], []]
    crown, pools = replay(p)
    ws = max(0, block - p["window"])
    since = max(0, block - p["cred"])
    outcomes: dict[str, list[int]] = {}
    volume: dict[str, int] = {}
    for b, _idx, kind, hk, amount in p["events"]:
        if kind in (COMPLETED, TIMED_OUT) and b >= since:
            outcomes.setdefault(hk, [0, 0])[kind - COMPLETED] += 1
        if kind == COMPLETED and b >= ws:
            volume[hk] = volume.get(hk, 0) + amount
    total_volume = sum(volume.values())
    total_crown = pools[0][0] + pools[1][0]
    an, ad = p["alpha"]
    max_swap = p["max_swap"]
    rows = []
    for uid, hk in enumerate(hotkeys):
        c = crown.get(hk, [0, 0])
        done, failed = outcomes.get(hk, [0, 0])
        vol = volume.get(hk, 0)
        if c == [0, 0] and done + failed == 0 and vol == 0:
            continue
        seen = done + failed
        m = max(seen, p["ramp"])
        sr3 = done**3 * WEIGHT_ONE // m**3 if seen else 0
        coll = p["collateral"].get(hk, 0)
        if max_swap == 0:
            cap = WEIGHT_ONE
        else:
            cap = min(coll, max_swap) * WEIGHT_ONE // max_swap
        reward = 0
        for d in (BTC_TAO, TAO_BTC):
            if pools[d][0] == 0 or c[d] == 0:
                continue
            share = c[d] * WEIGHT_ONE // pools[d][0]
            reward += mul(mul(share // 2, sr3), cap)
        vf = WEIGHT_ONE
        mine = c[0] + c[1]
        if reward > 0 and total_volume > 0 and mine > 0:
            vs = vol * WEIGHT_ONE // total_volume
            cs = mine * WEIGHT_ONE // total_crown
            q = min(WEIGHT_ONE, vs * WEIGHT_ONE // cs)
            vf = ((ad - an) * WEIGHT_ONE + an * q) // ad
        w = mul(reward, vf)
        weights[uid] += w
        rows.append([uid, hk, c[0], c[1], done, failed, sr3, cap, vol, vf, w])
    weights[recycle_uid] += WEIGHT_ONE - sum(weights)
    return [1, weights, block, False, recycle_uid, pools, rows]


def aggregate(bundle: bytes) -> bytes | int:
    """The `aggregate` export: output CBOR bytes, or a negative error code."""
    try:
        return dumps(score_bundle(parse(bundle)))
    except Invalid as exc:
        return exc.code


def score(task: bytes, sub: bytes) -> int:
    """The `evaluate` export: the weight of UID `sub` (CBOR uint) in 1e9 fixed point."""
    try:
        p = parse(task)
    except Invalid as exc:
        return exc.code
    try:
        uid = loads(sub, 16)
    except WireError:
        return E_SUBMISSION
    if type(uid) is not int or not 0 <= uid < len(p["hotkeys"]):
        return E_SUBMISSION
    return score_bundle(p)[1][uid] // (WEIGHT_ONE // SCORE_ONE)


# ---------------------------------------------------------------------------------------------------
# Bundle construction helpers (tests, vectors, simulator)


def bundle(
    block: int,
    hotkeys: list[str],
    *,
    rates: list[tuple[int, str, tuple[int, int], tuple[int, int]]] = (),  # type: ignore[assignment]
    events: list[tuple[int, int, int, str, int]] = (),  # type: ignore[assignment]
    collateral: dict[str, int] | None = None,
    max_swap: int = 0,
    halted: bool = False,
    params: list[int] | None = None,
) -> bytes:
    """Encode an evidence bundle (inputs in any order; the encoding keeps the order given)."""
    coll = collateral if collateral is not None else {}
    return dumps(
        [
            1,
            block,
            list(hotkeys),
            halted,
            max_swap,
            [[hk, a] for hk, a in coll.items()],
            [[b, hk, list(f), list(r)] for b, hk, f, r in rates],
            [list(e) for e in events],
            list(params or DEFAULT_PARAMS),
        ]
    )


B = 10_000  # scoring block of the scenarios: window [9_400, 10_000)
WS = B - 600


def history(hk: str, ok: int, failed: int = 0, start: int = 1_000) -> list[tuple[int, int, int, str, int]]:
    """Resolved swaps long before the window (credibility only): `ok` completed then `failed` timed out."""
    evs = []
    for i in range(ok + failed):
        b = start + 3 * i
        evs.append((b, 0, INITIATED, hk, 0))
        evs.append((b + 1, 0, COMPLETED if i < ok else TIMED_OUT, hk, 0))
    return evs


def activate(*hks: str, block: int = 500) -> list[tuple[int, int, int, str, int]]:
    return [(block, i, ACTIVATED, hk, 0) for i, hk in enumerate(hks)]


def _good(*hks: str) -> list[tuple[int, int, int, str, int]]:
    evs = activate(*hks)
    for j, hk in enumerate(hks):
        evs += history(hk, 10, 0, start=1_000 + 100 * j)
    return evs


def scenarios() -> dict[str, tuple[bytes, int]]:
    """The research note's scenarios (tests/test_scoring_v1.py at 2698acc) as bundles, each with the UID
    it is about. The tests in tests/seed_challenges check the numbers; the vectors pin the bytes."""
    hk = ["m0", "m1", "m2", "m3"]
    r = lambda m: (m, 0)  # noqa: E731
    off = (0, 0)
    sc: dict[str, tuple[bytes, int]] = {}
    sc["single-holder"] = (bundle(B, hk, rates=[(100, "m0", r(340), r(350))], events=_good("m0")), 0)
    sc["alternating-leaders"] = (
        bundle(
            B,
            hk,
            rates=[
                (100, "m0", r(340), off),
                (100, "m1", r(339), off),
                (WS + 150, "m1", r(341), off),
                (WS + 300, "m0", r(342), off),
                (WS + 450, "m1", r(343), off),
            ],
            events=_good("m0", "m1"),
        ),
        0,
    )
    sc["tie-splits"] = (
        bundle(
            B,
            hk,
            rates=[(100, h, r(340), r(350)) for h in ("m0", "m1", "m2")],
            events=_good("m0", "m1", "m2"),
        ),
        1,
    )
    sc["pre-window-state"] = (
        bundle(
            B,
            hk,
            rates=[(100, "m0", r(340), off), (WS - 5, "m1", r(345), off), (WS, "m0", r(346), off)],
            events=_good("m0", "m1"),
        ),
        0,
    )
    sc["busy-leader-hands-crown"] = (
        bundle(
            B,
            hk,
            rates=[(100, "m0", r(350), off), (100, "m1", r(340), off)],
            events=[*_good("m0", "m1"), (WS + 200, 0, INITIATED, "m0", 0), (WS + 400, 0, COMPLETED, "m0", 0)],
        ),
        1,
    )
    sc["solo-busy-recycles"] = (
        bundle(
            B,
            hk,
            rates=[(100, "m0", r(350), off)],
            events=[*_good("m0"), (WS - 10, 0, INITIATED, "m0", 0)],
        ),
        0,
    )
    sc["empty-direction-recycles"] = (
        bundle(B, hk, rates=[(100, "m0", off, r(350))], events=_good("m0")),
        0,
    )
    sc["partial-success-cube"] = (
        bundle(
            B,
            hk,
            rates=[(100, "m0", r(340), off)],
            events=activate("m0") + history("m0", 9, 1),
        ),
        0,
    )
    sc["ramp-three-of-three"] = (
        bundle(B, hk, rates=[(100, "m0", r(340), off)], events=activate("m0") + history("m0", 3)),
        0,
    )
    sc["dereg-mid-window"] = (
        bundle(
            B,
            ["m0", "m2", "m3"],
            rates=[(100, "m0", r(340), off), (100, "m1", r(350), off)],
            events=[*_good("m0", "m1"), (WS + 300, 0, DEACTIVATED, "m1", 0)],
        ),
        0,
    )
    sc["recycle-uid-out-of-range"] = (
        bundle(B, hk, rates=[(100, "m1", r(340), off)], events=activate("m1") + history("m1", 9, 1)),
        0,
    )
    sc["recycle-uid-53"] = (
        bundle(
            B,
            [f"h{i}" for i in range(60)],
            rates=[(100, "h1", r(340), off)],
            events=activate("h1") + history("h1", 9, 1),
        ),
        53,
    )
    sc["never-active"] = (
        bundle(B, hk, rates=[(100, "m0", r(340), off), (100, "m1", r(350), off)], events=_good("m0")),
        1,
    )
    sc["deactivate-activate-mid-window"] = (
        bundle(
            B,
            hk,
            rates=[(100, "m0", r(350), off), (100, "m1", r(340), off)],
            events=[
                *_good("m0", "m1"),
                (WS + 100, 0, DEACTIVATED, "m0", 0),
                (WS + 400, 0, ACTIVATED, "m0", 0),
            ],
        ),
        0,
    )
    sc["same-block-order"] = (
        bundle(
            B,
            hk,
            rates=[(100, "m1", r(340), off), (WS + 300, "m0", r(360), off)],
            events=_good("m1")
            + history("m0", 10, start=2_000)
            + [(WS + 300, 1, INITIATED, "m0", 0), (WS + 300, 0, ACTIVATED, "m0", 0)],
        ),
        1,
    )
    sc["tao-btc-lower-wins"] = (
        bundle(
            B, hk, rates=[(100, "m0", off, r(350)), (100, "m1", off, (3499, -1))], events=_good("m0", "m1")
        ),
        1,
    )
    sc["halted"] = (
        bundle(B, hk, rates=[(100, "m0", r(340), off)], events=_good("m0"), halted=True),
        0,
    )
    for name, coll in (
        ("capacity-full", 10**9),
        ("capacity-half", 25 * 10**7),
        ("capacity-quarter", 125 * 10**6),
    ):
        sc[name] = (
            bundle(
                B,
                hk,
                rates=[(100, "m0", r(340), off)],
                events=_good("m0"),
                collateral={"m0": coll},
                max_swap=5 * 10**8,
            ),
            0,
        )
    sc["capacity-zero"] = (
        bundle(
            B, hk, rates=[(100, "m0", r(340), off)], events=_good("m0"), collateral={}, max_swap=5 * 10**8
        ),
        0,
    )
    sc["capacity-max-swap-unset"] = (
        bundle(B, hk, rates=[(100, "m0", r(340), off)], events=_good("m0"), collateral={"m0": 1}, max_swap=0),
        0,
    )
    vol_rates = [(100, "m0", r(340), r(350)), (100, "m1", r(340), r(350))]
    vol_events = [
        *_good("m0", "m1"),
        (WS + 10, 0, INITIATED, "m1", 0),
        (WS + 11, 0, COMPLETED, "m1", 3 * 10**8),
        (WS + 20, 0, INITIATED, "m0", 0),
        (WS + 21, 0, COMPLETED, "m0", 10**8),
    ]
    for name, alpha in (
        ("volume-alpha-half", [1, 2]),
        ("volume-alpha-zero", [0, 1]),
        ("volume-alpha-one", [1, 1]),
    ):
        sc[name] = (
            bundle(B, hk, rates=vol_rates, events=vol_events, params=[600, 216_000, 10, *alpha, 53]),
            0,
        )
    return sc


def malformed_cases() -> list[tuple[str, bytes]]:
    """Bundles the module must refuse with the reference's code."""
    good = scenarios()["single-holder"][0]
    doc = loads(good, MAX_BUNDLE)
    cases = [("not-cbor", b"\xff"), ("empty", b""), ("not-canonical", b"\x19\x00\x01"), ("map", b"\xa0")]
    cases.append(("wrong-version", dumps([2, *doc[1:]])))
    cases.append(("no-hotkeys", dumps([*doc[:2], [], *doc[3:]])))
    cases.append(("duplicate-hotkey", dumps([*doc[:2], ["a", "a"], *doc[3:]])))
    cases.append(("future-event", dumps([*doc[:7], [*doc[7], [B + 1, 0, 0, "m0", 0]], doc[8]])))
    cases.append(("halted-not-bool", dumps([*doc[:3], 1, *doc[4:]])))
    cases.append(("bad-kind", dumps([*doc[:7], [*doc[7], [B, 9, 7, "m0", 0]], doc[8]])))
    cases.append(("rate-six-figures", dumps([*doc[:6], [[1, "m0", [100000, 0], [0, 0]]], *doc[7:]])))
    cases.append(("alpha-above-one", dumps([*doc[:8], [600, 216_000, 10, 3, 2, 53]])))
    return cases


def vector_cases() -> list[tuple[str, bytes, bytes]]:
    """Golden vectors for the toolkit's `evaluate` form: each scenario's bundle and UID, plus refusals."""
    cases = [(name, b, dumps(uid)) for name, (b, uid) in scenarios().items()]
    good = scenarios()["single-holder"][0]
    cases += [(name, b, dumps(0)) for name, b in malformed_cases()]
    cases += [("uid-out-of-range", good, dumps(4)), ("uid-not-int", good, dumps("0"))]
    return cases


def aggregate_cases() -> list[tuple[str, bytes]]:
    """Golden vectors for `aggregate`: every scenario and every refusal."""
    return [(name, b) for name, (b, _uid) in scenarios().items()] + malformed_cases()
