"""BitDefense invariant scoring: module == reference, the original's scenarios, exact numpy-style L99."""

from __future__ import annotations

import hashlib
import shutil
import statistics
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from challenges.toolkit import build, load_reference, load_spec, read_aggregate_vectors, read_vectors
from runtime import errors
from runtime.policy import Policy
from runtime.sandbox import LoadedModule, Sandbox
from wire.cbor import loads

DIR = Path(__file__).resolve().parents[2] / "challenges" / "bitdefense-invariants"
ONE = 10**18
SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def ref() -> ModuleType:
    return load_reference(DIR)


@pytest.fixture(scope="module")
def mod(sandbox: Sandbox) -> LoadedModule:
    spec = load_spec(DIR)
    return sandbox.load(spec.module_path.read_bytes(), Policy.from_dict(spec.policy))


def run(sandbox: Sandbox, mod: LoadedModule, ref: ModuleType, data: bytes) -> list[Any]:
    out, r = sandbox.call_packed(mod, "aggregate", data)
    want = ref.aggregate(data)
    assert isinstance(want, bytes) and r.ok, r
    assert out == want
    return loads(want, 1 << 22)


def rows(doc: list[Any]) -> dict[int, list[int]]:
    """uid -> [uid, N, agreements, tasks, L99 in 1/100 ms, S in 1e9]."""
    return {r[0]: r for r in doc[3]}


def test_vectors(sandbox: Sandbox, mod: LoadedModule, ref: ModuleType) -> None:
    for name, task, sub, want in read_vectors(DIR):
        assert ref.score(task, sub) == want, name
        r = sandbox.evaluate(mod, task, sub)
        got = r.score if r.ok else int((r.error_message or "").rsplit(" ", 1)[-1])
        assert got == want, (name, r)
    agg = read_aggregate_vectors(DIR)
    assert len(agg) >= 10
    for name, data, want in agg:
        assert ref.aggregate(data) == want, name
        out, r = sandbox.call_packed(mod, "aggregate", data)
        if isinstance(want, int):
            assert r.error_kind == errors.MODULE_ERROR and r.error_message.endswith(f" {want}"), name
        else:
            assert r.ok and out == want, name


def test_rebuild_is_byte_identical(tmp_path: Path) -> None:
    copy = tmp_path / "bd"
    shutil.copytree(DIR, copy)
    committed = hashlib.sha256(load_spec(DIR).module_path.read_bytes()).hexdigest()
    assert hashlib.sha256(build(copy)).hexdigest() == committed


def test_unanimous_agreement(sandbox: Sandbox, mod: LoadedModule, ref: ModuleType) -> None:
    doc = run(sandbox, mod, ref, ref.scenarios()["unanimous"][0])
    assert doc[2] == [[1, 1, 1]] * 4
    assert all(r[1:4] == [4, 12, 12] for r in doc[3]) and doc[1] == [ONE // 5] * 5


def test_split_below_threshold_has_no_ground_truth(
    sandbox: Sandbox, mod: LoadedModule, ref: ModuleType
) -> None:
    doc = run(sandbox, mod, ref, ref.scenarios()["split-below-threshold"][0])
    assert doc[2] == [[2, 1, 2]]  # 2 of 4 (50%) on invariants 0 and 2: none; 3 of 4 (75%) safe on 1
    assert all(r[3] == 1 for r in doc[3])  # only the invariant with a ground truth is a task


def test_empty_and_malformed_responses_are_excluded(
    sandbox: Sandbox, mod: LoadedModule, ref: ModuleType
) -> None:
    doc = run(sandbox, mod, ref, ref.scenarios()["empty-excluded"][0])
    assert set(rows(doc)) == {0, 3} and doc[1][1] == doc[1][2] == 0
    assert rows(doc)[3][4] == 40_000  # its only latency, 400 ms


def test_honeypot_exposes_the_always_safe_miner(sandbox: Sandbox, mod: LoadedModule, ref: ModuleType) -> None:
    doc = run(sandbox, mod, ref, ref.scenarios()["honeypot"][0])
    assert doc[2][0] == [0, 1, 1]  # the recorded mint breaks the supply cap, whatever the votes say
    r = rows(doc)
    assert r[1][2:4] == [6, 6] and r[0][2:4] == [5, 6] and r[2][2:4] == [5, 6]
    assert doc[1][1] > doc[1][0]


def test_worked_example(sandbox: Sandbox, mod: LoadedModule, ref: ModuleType) -> None:
    doc = run(sandbox, mod, ref, ref.scenarios()["worked-example"][0])
    assert rows(doc)[0][1:] == [10, 18, 20, 250_000, 18 * 10**9]  # N=10, A=0.9, L99=2500 ms -> S=18


def test_duplicate_slot_invariants_check_only_the_last(ref: ModuleType) -> None:
    t, s = ref.TOKEN, 3
    invs = [(t, "==", 7, s), (t, "<", 5, s)]
    assert ref.oracle(invs, [(t, s, 9)]) == [1, 0]
    assert ref.oracle(invs, [(t, s, 4)]) == [1, 1]
    assert ref.oracle([(t, "unauthorized minting", 0, s)], [(t, s, 9)]) == [1]


def _numpy_linear_p99(xs: list[int]) -> Fraction:
    """numpy.percentile(xs, 99)'s default method is R-7, which is statistics' 'inclusive' method."""
    if len(xs) == 1:
        return Fraction(xs[0])
    return statistics.quantiles([Fraction(x) for x in xs], n=100, method="inclusive")[98]


@SETTINGS
@given(xs=st.lists(st.integers(0, 20_000), min_size=1, max_size=400))
def test_l99_is_numpy_linear_percentile_exactly(ref: ModuleType, xs: list[int]) -> None:
    want = _numpy_linear_p99(xs)
    got = ref.l99_centi(xs, 5000)
    assert Fraction(got, 100) == (want if want > 0 else 1)


@pytest.mark.parametrize("n", [1, 2, 7, 100, 101, 1000])
def test_module_l99_small_and_large_samples(
    sandbox: Sandbox, mod: LoadedModule, ref: ModuleType, n: int
) -> None:
    lats = [(i * 7919) % 3001 + 1 for i in range(n)]
    inv = ref.invariants()[:1]
    rounds = [[f"0x{i:x}", inv, None, [[0, [1], lat]]] for i, lat in enumerate(lats)]
    doc = run(sandbox, mod, ref, ref.bundle(["m"], rounds))
    assert Fraction(rows(doc)[0][4], 100) == _numpy_linear_p99(lats)


@st.composite
def bundles(draw: st.DrawFn, ref: ModuleType) -> bytes:
    n = draw(st.integers(1, 5))
    inv_pool = [*ref.invariants(), [ref.TOKEN, ">", ref.word(3), ref.word(7)]]
    rounds = []
    for _ in range(draw(st.integers(0, 6))):
        invs = draw(st.lists(st.sampled_from(inv_pool), min_size=1, max_size=4))
        writes = draw(
            st.none()
            | st.lists(
                st.tuples(
                    st.sampled_from([ref.SUPPLY, ref.OWNER, ref.RATIO]), st.integers(0, 2**256 - 1)
                ).map(lambda w: [ref.TOKEN, w[0], ref.word(w[1])]),
                max_size=3,
            )
        )
        out = st.none() | st.lists(st.integers(0, 1), min_size=len(invs), max_size=len(invs)) | st.just([1])
        resps = draw(
            st.lists(st.tuples(st.integers(0, n - 1), out, st.integers(0, 9000)).map(list), max_size=6)
        )
        rounds.append([f"0x{draw(st.integers(0, 3)):x}", invs, writes, resps])
    return ref.bundle([f"h{i}" for i in range(n)], rounds, (draw(st.integers(0, 100)), 100, 5000))


@SETTINGS
@given(data=st.data())
def test_module_equals_reference_on_generated_rounds(
    sandbox: Sandbox, mod: LoadedModule, ref: ModuleType, data: st.DataObject
) -> None:
    b = data.draw(bundles(ref))
    doc = run(sandbox, mod, ref, b)
    w = doc[1]
    assert min(w) >= 0 and (sum(w) == 0 or ONE - len(w) <= sum(w) <= ONE)


@SETTINGS
@given(
    honest=st.lists(st.tuples(st.integers(1, 10**6), st.integers(100, 3000)), min_size=1, max_size=8),
    liars=st.lists(st.tuples(st.integers(1, 10**6), st.integers(0, 10**6)), max_size=8),
    seed=st.integers(0, 2**16),
)
def test_agreed_latency_is_bounded_by_honest_validators(
    ref: ModuleType, honest: list[tuple[int, int]], liars: list[tuple[int, int]], seed: int
) -> None:
    """The chosen latency rule: stake-weighted median; liars with less than half the stake cannot move it
    outside the honest observations, and the order of attestations does not matter."""
    import random

    hs = sum(s for s, _ in honest)
    while liars and sum(s for s, _ in liars) >= hs:  # the liars hold less than half the stake
        liars.pop()
    obs = honest + liars
    got = ref.agreed_latency(obs)
    assert min(ms for _, ms in honest) <= got <= max(ms for _, ms in honest)
    shuffled = random.Random(seed).sample(obs, len(obs))
    assert ref.agreed_latency(shuffled) == got


@pytest.fixture(scope="module")
def sim() -> ModuleType:
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("_bitdefense_simulator", DIR / "simulator.py")
    assert spec is not None and spec.loader is not None
    m = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = m
    spec.loader.exec_module(m)
    return m


def test_dataset_slots_and_verdicts(ref: ModuleType, sim: ModuleType) -> None:
    """Mapping slots are real Solidity slots (keccak256(abi.encode(key, slot))) and each transaction's
    expected verdicts are what the engine's rule gives on its writes."""
    from Crypto.Hash import keccak

    ds = sim.dataset()
    treasury = ds["holders"]["treasury"]
    h = keccak.new(digest_bits=256)
    h.update(bytes.fromhex(treasury[2:]).rjust(32, b"\0") + (1).to_bytes(32, "big"))
    assert ds["invariants"][2]["slot"] == "0x" + h.hexdigest()
    invs = [
        (c, op, int.from_bytes(t, "big"), int.from_bytes(s, "big")) for c, op, t, s in sim.invariant_rows(ds)
    ]
    for tx in ds["transactions"]:
        writes = [(c, int.from_bytes(s, "big"), int.from_bytes(v, "big")) for c, s, v in sim.write_rows(tx)]
        assert ref.oracle(invs, writes) == tx["expected"], tx["name"]
    assert any(0 in tx["expected"] for tx in ds["transactions"])


def test_simulated_rounds_expose_the_always_safe_miner(
    sandbox: Sandbox, mod: LoadedModule, ref: ModuleType, sim: ModuleType, tmp_path: Path
) -> None:
    data = sim.simulate(4, rounds=40)
    assert data == sim.simulate(4, rounds=40) and data != sim.simulate(5, rounds=40)
    doc = run(sandbox, mod, ref, data)
    r = rows(doc)
    acc = {u: Fraction(r[u][2], r[u][3]) for u in r}
    # honest engines can lose a majority vote to always-safe and random miners, but the honeypots'
    # known violations expose the always-safe miners: their accuracy falls below every honest one's
    assert min(acc[u] for u in (0, 1, 2)) > max(acc[u] for u in (3, 4))
    # ...but the original's S = N * A * T / L99 rewards speed without bound: an instant always-safe answer
    # (30-90 ms) still outscores an honest engine taking 0.4-2.4 s. Faithful to BitDefense; see the docs.
    w = doc[1]
    assert max(w[0:3]) < min(w[3:5])
    # at equal latency, accuracy decides: honest engines above always-safe and random miners
    w = run(sandbox, mod, ref, sim.simulate(4, rounds=40, latency_ms=500))[1]
    assert min(w[0:3]) > max(w[3:7])
    out = tmp_path / "rounds.cbor"
    assert sim.main(["--seed", "1", "--rounds", "5", "--out", str(out)]) == 0
    assert isinstance(ref.aggregate(out.read_bytes()), bytes)
