"""Python reference for bitdefense-invariants: BitDefense (SN31, BitDefense/subnet@8901938) miner scoring.

The module (`bitdefense.zig`) and this file implement the same rules; tests check they agree byte for byte.

Input (`aggregate`, and the task of `evaluate`): canonical CBOR, arrays only:

    [version=1, hotkeys[uid] (text), params [threshold_num, threshold_den, target_ms], rounds]
    round    = [tx_hash (text), invariants, writes (null | list), responses]
    invariant = [contract (text), op (text), target (32-byte uint256, big endian), slot (32 bytes)]
    write    = [contract (text), slot (32 bytes), new value (32 bytes)]   (every storage write, in order)
    response = [uid, output (null | [0/1 per invariant]), latency_ms (agreed integer)]

Ground truth per invariant: with `writes` (the transaction's recorded storage writes), the w3 engine's rule
(`engines/w3/internal/invariant/engine.go`): 0 if any write to (contract, slot) breaks `new op target`
(ops ==, >=, <=, >, <; any other op never triggers), else 1; of duplicate (contract, slot) invariants only
the last is checked. Contract addresses compare ASCII case-insensitively, as upstream's do (the engine parses
them into `common.Address`, the validator lowercases them): `0xAA..` and `0xaa..` are one contract. Without
writes: the first of {0, 1} voted by at least threshold (60%) of the valid responses, else none. A valid
response is a list whose first k entries (k = the round's invariants) are each 0 or 1; entries past the k-th
are ignored, as upstream reads only `resp[i]` for i < k. Anything else (null, fewer than k entries, other
values) counts as no answer, as the original's empty output does. (Upstream, a short answer raises IndexError
and the validator drops the whole batch's stats, every miner's: one miner erasing a round for all is not
copied.)

Per miner (UID): N = distinct tx hashes answered, A = agreements / tasks (tasks = answered invariants with
a ground truth), L99 = numpy's default (linear) 99th percentile of its latencies, exact: with the sorted
latencies x and f, r = divmod(99 (n - 1), 100), L99 = x[f] + r/100 (x[f+1] - x[f]) (T when no latency,
1 ms when <= 0). S = N * A * T / L99 (alpha = beta = gamma = 1), in 1e9 fixed point, floored.
Weights: S / sum S in 1e18, floored (all zero when nobody scores: the platform burns).

Output: [1, weights[n], truth per round [0 | 1 | 2 (none) per invariant],
         miners [[uid, N, agreements, tasks, L99 in 1/100 ms, S]]] for every UID that answered.
Error codes: -1 malformed, -2 invalid (limits), -3 bad submission (`evaluate`: CBOR uint UID).
"""

from __future__ import annotations

from typing import Any

from wire.cbor import dumps, loads
from wire.errors import WireError

SCORE_ONE = 1_000_000_000
WEIGHT_ONE = 10**18
MAX_BUNDLE = 1 << 24
MAX_UIDS, MAX_ROUNDS, MAX_INVARIANTS, MAX_ROWS, MAX_TEXT = 4096, 65536, 256, 65536, 128
OPS = ("==", ">=", "<=", ">", "<")
NONE = 2
E_MALFORMED, E_INVALID, E_SUBMISSION = -1, -2, -3


class Invalid(Exception):
    """The bundle cannot be scored; `code` is the module's error code."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _arr(x: Any, n: int | None = None) -> list[Any]:
    if type(x) is not list or (n is not None and len(x) != n):
        raise Invalid(E_MALFORMED)
    return x


def _uint(x: Any, cap: int) -> int:
    if type(x) is not int or x < 0:
        raise Invalid(E_MALFORMED)
    if x >= cap:
        raise Invalid(E_INVALID)
    return x


def _text(x: Any) -> str:
    if type(x) is not str:
        raise Invalid(E_MALFORMED)
    if len(x.encode()) > MAX_TEXT:
        raise Invalid(E_INVALID)
    return x


def _contract(x: Any) -> str:
    """A contract address, ASCII-lowercased: upstream compares addresses, not their spelling."""
    return _text(x).encode().lower().decode()


def _word(x: Any) -> int:
    """A 32-byte big-endian uint256."""
    if type(x) is not bytes:
        raise Invalid(E_MALFORMED)
    if len(x) != 32:
        raise Invalid(E_INVALID)
    return int.from_bytes(x, "big")


def parse(bundle: bytes) -> dict[str, Any]:
    try:
        doc = loads(bundle, MAX_BUNDLE)
    except WireError:
        raise Invalid(E_MALFORMED) from None
    d = _arr(doc, 4)
    if type(d[0]) is not int:
        raise Invalid(E_MALFORMED)
    if d[0] != 1:
        raise Invalid(E_INVALID)
    hotkeys = [_text(h) for h in _arr(d[1])]
    if not 1 <= len(hotkeys) <= MAX_UIDS:
        raise Invalid(E_INVALID)
    num, den, target = (_uint(p, 1 << 64) for p in _arr(d[2], 3))
    if not (1 <= den <= 1000 and num <= den and 1 <= target <= 65536):
        raise Invalid(E_INVALID)
    rounds_raw = _arr(d[3])
    if len(rounds_raw) > MAX_ROUNDS:
        raise Invalid(E_INVALID)
    rounds = []
    for r in rounds_raw:
        tx, invs_raw, writes_raw, resps_raw = _arr(r, 4)
        tx = _text(tx)
        invs = []
        for inv in _arr(invs_raw):
            c, op, tgt, slot = _arr(inv, 4)
            invs.append((_contract(c), _text(op), _word(tgt), _word(slot)))
        if len(invs) > MAX_INVARIANTS:
            raise Invalid(E_INVALID)
        writes = None
        if writes_raw is not None:
            writes = []
            for w in _arr(writes_raw):
                c, slot, val = _arr(w, 3)
                writes.append((_contract(c), _word(slot), _word(val)))
            if len(writes) > MAX_ROWS:
                raise Invalid(E_INVALID)
        resps = []
        for rs in _arr(resps_raw):
            uid, out, lat = _arr(rs, 3)
            uid = _uint(uid, len(hotkeys))
            lat = _uint(lat, 1 << 32)
            k = len(invs)
            valid = (
                type(out) is list and len(out) >= k and all(type(v) is int and v in (0, 1) for v in out[:k])
            )
            resps.append((uid, list(out[:k]) if valid else None, lat))
        if len(resps) > MAX_ROWS:
            raise Invalid(E_INVALID)
        rounds.append((tx, invs, writes, resps))
    return {"hotkeys": hotkeys, "threshold": (num, den), "target": target, "rounds": rounds}


def violates(op: str, new: int, target: int) -> bool:
    """The w3 engine's rule for one storage write; unknown operators never trigger."""
    if op == "==":
        return new != target
    if op == ">=":
        return new < target
    if op == "<=":
        return new > target
    if op == ">":
        return new <= target
    if op == "<":
        return new >= target
    return False


def oracle(invs: list[tuple[str, str, int, int]], writes: list[tuple[str, int, int]]) -> list[int]:
    truth = [1] * len(invs)
    for i, (c, op, tgt, slot) in enumerate(invs):
        if any(invs[j][0] == c and invs[j][3] == slot for j in range(i + 1, len(invs))):
            continue  # InvariantSlotMap: a later invariant on the same (contract, slot) replaces this one
        if any(wc == c and ws == slot and violates(op, val, tgt) for wc, ws, val in writes):
            truth[i] = 0
    return truth


def majority(k: int, resps: list[tuple[int, list[int] | None, int]], num: int, den: int) -> list[int]:
    outs = [o for _, o, _ in resps if o is not None]
    truth = []
    for i in range(k):
        total = len(outs)
        zeros = sum(1 for o in outs if o[i] == 0)
        if total and zeros * den >= num * total:
            truth.append(0)
        elif total and (total - zeros) * den >= num * total:
            truth.append(1)
        else:
            truth.append(NONE)
    return truth


def l99_centi(lat: list[int], target: int) -> int:
    """numpy.percentile(lat, 99) (linear) in 1/100 ms, exact: 100 x[f] + r (x[f+1] - x[f])."""
    if not lat:
        return 100 * target
    x = sorted(lat)
    f, r = divmod(99 * (len(x) - 1), 100)
    hi = x[min(f + 1, len(x) - 1)]
    v = 100 * x[f] + r * (hi - x[f])
    return v if v > 0 else 100


def score_bundle(p: dict[str, Any]) -> list[Any]:
    n = len(p["hotkeys"])
    num, den = p["threshold"]
    target = p["target"]
    txs: list[set[str]] = [set() for _ in range(n)]
    lats: list[list[int]] = [[] for _ in range(n)]
    agree, tasks = [0] * n, [0] * n
    answered = [False] * n
    truths = []
    for tx, invs, writes, resps in p["rounds"]:
        truth = oracle(invs, writes) if writes is not None else majority(len(invs), resps, num, den)
        truths.append(truth)
        for uid, out, lat in resps:
            if out is None:
                continue
            answered[uid] = True
            txs[uid].add(tx)
            lats[uid].append(lat)
            for i, t in enumerate(truth):
                if t != NONE:
                    tasks[uid] += 1
                    agree[uid] += out[i] == t
    rows = []
    s = [0] * n
    for uid in range(n):
        if not answered[uid]:
            continue
        big_n = len(txs[uid])
        l99 = l99_centi(lats[uid], target)
        if tasks[uid]:
            s[uid] = big_n * agree[uid] * target * 100 * SCORE_ONE // (tasks[uid] * l99)
        rows.append([uid, big_n, agree[uid], tasks[uid], l99, s[uid]])
    total = sum(s)
    weights = [v * WEIGHT_ONE // total if total else 0 for v in s]
    return [1, weights, truths, rows]


def aggregate(bundle: bytes) -> bytes | int:
    try:
        return dumps(score_bundle(parse(bundle)))
    except Invalid as exc:
        return exc.code


def score(task: bytes, sub: bytes) -> int:
    """`evaluate`: the UID's weight (S / sum S) in 1e9 fixed point; S itself is unbounded, see aggregate."""
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


def agreed_latency(observations: list[tuple[int, int]]) -> int:
    """The latency a bundle carries for one response: the stake-weighted (lower) median of what the
    validators observed, as (stake, latency_ms) pairs.

    Latency is observer-specific (each validator's own network path), so the module cannot take any one
    validator's number. The node decides this value when it builds the bundle: every validator attests its
    observation, and the median weighted by stake lies between the honest observations whenever honest
    validators hold more than half the stake, whatever the others report. Integer and order independent.
    """
    obs = sorted((ms, stake) for stake, ms in observations if stake > 0)
    if not obs:
        raise ValueError("no observation with stake")
    total = sum(stake for _, stake in obs)
    acc = 0
    for ms, stake in obs:
        acc += stake
        if 2 * acc >= total:
            return ms
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------------
# Bundles for tests and vectors


def word(v: int) -> bytes:
    return v.to_bytes(32, "big")


def bundle(
    hotkeys: list[str], rounds: list[list[Any]], params: tuple[int, int, int] = (60, 100, 5000)
) -> bytes:
    return dumps([1, hotkeys, list(params), rounds])


TOKEN = "0x00000000000000000000000000000000000000aa"
SUPPLY, OWNER, RATIO = word(2), word(5), word(9)


def invariants() -> list[list[Any]]:
    """An ERC-20 supply cap, an ownership slot and a collateral-ratio floor (dataset of the challenge)."""
    return [
        [TOKEN, "<=", word(10**27), SUPPLY],
        [TOKEN, "==", word(0xABCD), OWNER],
        [TOKEN, ">=", word(150), RATIO],
    ]


def scenarios() -> dict[str, tuple[bytes, int]]:
    hk = [f"m{i}" for i in range(5)]
    inv = invariants()
    sc: dict[str, tuple[bytes, int]] = {}
    safe = [1, 1, 1]
    sc["unanimous"] = (
        bundle(hk, [[f"0x{t:02x}", inv, None, [[u, safe, 100] for u in range(5)]] for t in range(4)]),
        0,
    )
    sc["split-below-threshold"] = (
        bundle(
            hk,
            [
                [
                    "0x01",
                    inv,
                    None,
                    [[0, [1, 1, 1], 100], [1, [0, 1, 1], 100], [2, [1, 0, 0], 100], [3, [0, 1, 0], 100]],
                ]
            ],
        ),
        0,
    )
    sc["empty-excluded"] = (
        bundle(hk, [["0x01", inv, None, [[0, safe, 100], [1, None, 100], [2, [1], 50], [3, safe, 400]]]]),
        1,
    )
    mint = [[TOKEN, SUPPLY, word(2 * 10**27)]]  # a mint past the cap: the honeypot's known violation
    sc["honeypot"] = (
        bundle(
            hk,
            [
                ["0xh1", inv, mint, [[0, [1, 1, 1], 100], [1, [0, 1, 1], 100], [2, [1, 1, 1], 100]]],
                ["0xh2", inv, [[TOKEN, RATIO, word(200)]], [[0, safe, 100], [1, safe, 100], [2, safe, 100]]],
            ],
        ),
        1,
    )
    rounds = []
    for t in range(10):
        resp_out = [0, 1] if t < 2 else [1, 1]
        rounds.append([f"0x{t:02x}", inv[:2], [[TOKEN, SUPPLY, word(1)]], [[0, resp_out, 2500]]])
    sc["worked-example"] = (bundle(hk, rounds), 0)  # N=10, A=18/20, L99=2500 ms -> S=18
    # issue 16's two differences from upstream, each the example an independent port found:
    # an invariant on 0xAA.. and a write to 0xaa.. are the same contract (the mint violates the cap)
    upper = [[TOKEN.upper().replace("0X", "0x"), "<=", word(10**27), SUPPLY]]
    sc["contract-case"] = (
        bundle(hk, [["0xc1", upper, [[TOKEN, SUPPLY, word(2 * 10**27)]], [[0, [0], 100], [1, [1], 100]]]]),
        0,
    )
    # answers [1], [0], [0, 1] to one invariant: the third counts its first verdict -> weights 0, 1/2, 1/2
    sc["over-long-answer"] = (
        bundle(hk, [["0xd1", upper, None, [[0, [1], 100], [1, [0], 100], [2, [0, 1], 100]]]]),
        2,
    )
    return sc


def malformed_cases() -> list[tuple[str, bytes]]:
    inv = invariants()
    return [
        ("not-cbor", b"\xff"),
        ("wrong-version", dumps([2, ["a"], [60, 100, 5000], []])),
        ("no-uids", dumps([1, [], [60, 100, 5000], []])),
        ("uid-out-of-range", bundle(["a"], [["0x1", inv, None, [[1, [1, 1, 1], 5]]]])),
        ("short-word", bundle(["a"], [["0x1", [[TOKEN, "==", b"\x01", SUPPLY]], None, []]])),
        ("threshold-above-one", dumps([1, ["a"], [101, 100, 5000], []])),
    ]


def vector_cases() -> list[tuple[str, bytes, bytes]]:
    cases = [(name, b, dumps(uid)) for name, (b, uid) in scenarios().items()]
    cases += [(name, b, dumps(0)) for name, b in malformed_cases()]
    cases.append(("bad-submission", scenarios()["unanimous"][0], dumps(-1)))
    return cases


def aggregate_cases() -> list[tuple[str, bytes]]:
    return [(name, b) for name, (b, _uid) in scenarios().items()] + malformed_cases()
