"""Allways swap-market scoring: the WASM module, the Python reference, the original's scenarios and numbers.

Every scenario is run through the real module in the real sandbox and compared byte for byte with the
reference, then the numbers are checked against what the original (entrius/allways@2698acc) computes.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import ALLWAYS_DIR

from challenges.toolkit import build, load_spec, read_aggregate_vectors, read_vectors
from runtime import errors
from runtime.sandbox import LoadedModule, Sandbox
from wire.cbor import dumps, loads

ONE = 10**18
L = 720_720  # crown units per block


def run(sandbox: Sandbox, mod: LoadedModule, ref: ModuleType, bundle: bytes) -> list[Any]:
    """Aggregate through the module, check it equals the reference's bytes, return the decoded document."""
    data, r = sandbox.call_packed(mod, "aggregate", bundle)
    want = ref.aggregate(bundle)
    assert isinstance(want, bytes), want
    assert r.ok, r
    assert data == want
    doc = loads(data, 1 << 22)
    assert doc[0] == 1 and len(doc) == 7  # output convention v1: [1, weights[n], ...trace]
    assert sum(doc[1]) == ONE and min(doc[1]) >= 0
    return doc


def row(doc: list[Any], hotkey: str) -> list[int]:
    """The trace row of `hotkey`: [uid, hotkey, crown_btc_tao, crown_tao_btc, completed, timed_out,
    success_cubed, capacity, volume, volume_factor, weight]."""
    return next(r for r in doc[6] if r[1] == hotkey)


@pytest.fixture(scope="module")
def sc(allways_ref: ModuleType) -> dict[str, bytes]:
    return {name: b for name, (b, _uid) in allways_ref.scenarios().items()}


def test_vectors_evaluate_form(sandbox: Sandbox, allways: LoadedModule, allways_ref: ModuleType) -> None:
    vectors = read_vectors(ALLWAYS_DIR)
    assert len(vectors) >= 30
    for name, task, sub, want in vectors:
        assert allways_ref.score(task, sub) == want, f"reference drifted from vectors.json on {name}"
        r = sandbox.evaluate(allways, task, sub)
        got = r.score if r.ok else int((r.error_message or "").rsplit(" ", 1)[-1])
        assert got == want, (name, r)
    assert {v[3] for v in vectors} >= {-1, -2, -3}


def test_vectors_aggregate_form(sandbox: Sandbox, allways: LoadedModule, allways_ref: ModuleType) -> None:
    vectors = read_aggregate_vectors(ALLWAYS_DIR)
    assert len(vectors) >= 30
    for name, data, want in vectors:
        assert allways_ref.aggregate(data) == want, f"reference drifted from vectors.json on {name}"
        out, r = sandbox.call_packed(allways, "aggregate", data)
        if isinstance(want, int):
            assert r.error_kind == errors.MODULE_ERROR and r.error_message == (
                f"aggregate returned error code {want}"
            ), (name, r)
        else:
            assert r.ok and out == want, name


def test_output_follows_the_abi_convention(allways_ref: ModuleType) -> None:
    """docs/challenge-abi.md 3.1: [0] is the version (1), [1] the per-UID weights over the bundle's hotkeys;
    the rest is trace (block, halted, recycle UID, pools, miners). `evaluate` reads the same element."""
    outputs = [
        (name, data, out) for name, data, out in read_aggregate_vectors(ALLWAYS_DIR) if isinstance(out, bytes)
    ]
    assert len(outputs) >= 20
    uids = {name: uid for name, (_b, uid) in allways_ref.scenarios().items()}
    for name, data, out in outputs:
        bundle, doc = loads(data, 1 << 24), loads(out, 1 << 22)
        assert doc[0] == 1 and len(doc) == 7, name
        weights = doc[1]
        assert len(weights) == len(bundle[2]), name
        assert all(type(w) is int and w >= 0 for w in weights) and sum(weights) == ONE, name
        assert doc[2] == bundle[1] and doc[3] is bundle[3] and 0 <= doc[4] < len(weights), name
        want = allways_ref.score(data, dumps(uids[name]))
        assert weights[uids[name]] // 10**9 == want, name


def test_rebuild_is_byte_identical(tmp_path: Path) -> None:
    spec = load_spec(ALLWAYS_DIR)
    copy = tmp_path / "allways-swap"
    shutil.copytree(ALLWAYS_DIR, copy)
    assert (
        hashlib.sha256(build(copy)).hexdigest() == hashlib.sha256(spec.module_path.read_bytes()).hexdigest()
    )


def test_single_holder_takes_both_pools(
    sandbox: Sandbox, allways: LoadedModule, allways_ref: ModuleType, sc: dict[str, bytes]
) -> None:
    doc = run(sandbox, allways, allways_ref, sc["single-holder"])
    assert row(doc, "m0")[2:4] == [600 * L, 600 * L]
    assert row(doc, "m0")[10] == ONE
    assert doc[5] == [[600 * L, 0], [600 * L, 0]]


def test_alternating_leaders_split_by_time(
    sandbox: Sandbox, allways: LoadedModule, allways_ref: ModuleType, sc: dict[str, bytes]
) -> None:
    doc = run(sandbox, allways, allways_ref, sc["alternating-leaders"])
    assert row(doc, "m0")[2] == row(doc, "m1")[2] == 300 * L
    assert row(doc, "m0")[10] == row(doc, "m1")[10] == ONE // 4
    assert doc[1][0] == ONE // 4 + ONE // 2  # UID 0 is m0 and also the recycle UID (53 >= n)


def test_tie_splits_evenly(
    sandbox: Sandbox, allways: LoadedModule, allways_ref: ModuleType, sc: dict[str, bytes]
) -> None:
    doc = run(sandbox, allways, allways_ref, sc["tie-splits"])
    for hk in ("m0", "m1", "m2"):
        assert row(doc, hk)[2:4] == [200 * L, 200 * L]
        assert row(doc, hk)[10] == 2 * (ONE // 3 // 2)  # floored per direction pool (1e-18 resolution)


def test_pre_window_state_is_reconstructed(
    sandbox: Sandbox, allways: LoadedModule, allways_ref: ModuleType, sc: dict[str, bytes]
) -> None:
    """m0's rate posted exactly at the window start (346) beats m1's earlier 345 for the whole window."""
    doc = run(sandbox, allways, allways_ref, sc["pre-window-state"])
    assert row(doc, "m0")[2] == 600 * L
    assert row(doc, "m1")[2] == 0 and row(doc, "m1")[10] == 0


def test_busy_leader_hands_crown_to_runner_up(
    sandbox: Sandbox, allways: LoadedModule, allways_ref: ModuleType, sc: dict[str, bytes]
) -> None:
    doc = run(sandbox, allways, allways_ref, sc["busy-leader-hands-crown"])
    assert row(doc, "m0")[2] == 400 * L and row(doc, "m1")[2] == 200 * L
    assert row(doc, "m1")[10] == ONE // 6


def test_solo_busy_and_empty_direction_recycle(
    sandbox: Sandbox, allways: LoadedModule, allways_ref: ModuleType, sc: dict[str, bytes]
) -> None:
    doc = run(sandbox, allways, allways_ref, sc["solo-busy-recycles"])
    assert doc[5] == [[0, 600 * L], [0, 600 * L]]
    assert row(doc, "m0")[10] == 0 and doc[1][0] == ONE  # all to the recycle UID
    doc = run(sandbox, allways, allways_ref, sc["empty-direction-recycles"])
    assert doc[5][0] == [0, 600 * L] and row(doc, "m0")[10] == ONE // 2


def test_success_cubed_worked_numbers(
    sandbox: Sandbox, allways: LoadedModule, allways_ref: ModuleType, sc: dict[str, bytes]
) -> None:
    doc = run(sandbox, allways, allways_ref, sc["partial-success-cube"])
    assert row(doc, "m0")[4:7] == [9, 1, 729 * 10**15]  # 9 of 10 completed -> 0.9^3 = 0.729
    assert row(doc, "m0")[10] == 729 * 10**15 // 2
    doc = run(sandbox, allways, allways_ref, sc["ramp-three-of-three"])
    assert row(doc, "m0")[4:7] == [3, 0, 27 * 10**15]  # 3 of 3 with the 10-observation ramp -> 0.3^3 = 0.027


def test_credibility_window_drops_old_outcomes(
    sandbox: Sandbox, allways: LoadedModule, allways_ref: ModuleType
) -> None:
    ref = allways_ref
    b = ref.bundle(
        300_000,
        ["m0"],
        rates=[(100, "m0", (340, 0), (0, 0))],
        events=[
            *ref.activate("m0"),
            *ref.history("m0", 5, 5, start=1_000),
            *ref.history("m0", 10, 0, start=290_000),
        ],
    )
    doc = run(sandbox, allways, ref, b)
    assert row(doc, "m0")[4:7] == [10, 0, ONE]  # the failures at ~1,000 are older than 216,000 blocks


def test_deregistered_and_never_active_miners_get_nothing(
    sandbox: Sandbox, allways: LoadedModule, allways_ref: ModuleType, sc: dict[str, bytes]
) -> None:
    doc = run(sandbox, allways, allways_ref, sc["dereg-mid-window"])
    assert [r[1] for r in doc[6]] == ["m0"] and row(doc, "m0")[2] == 600 * L  # m1 had the better rate
    doc = run(sandbox, allways, allways_ref, sc["never-active"])
    assert row(doc, "m0")[2] == 600 * L and doc[1][1] == 0


def test_recycle_uid(
    sandbox: Sandbox, allways: LoadedModule, allways_ref: ModuleType, sc: dict[str, bytes]
) -> None:
    doc = run(sandbox, allways, allways_ref, sc["recycle-uid-out-of-range"])
    assert doc[4] == 0 and doc[1][0] == ONE - 729 * 10**15 // 2
    doc = run(sandbox, allways, allways_ref, sc["recycle-uid-53"])
    assert doc[4] == 53 and doc[1][53] == ONE - 729 * 10**15 // 2 and doc[1][1] == 729 * 10**15 // 2


def test_deactivation_mid_window(
    sandbox: Sandbox, allways: LoadedModule, allways_ref: ModuleType, sc: dict[str, bytes]
) -> None:
    doc = run(sandbox, allways, allways_ref, sc["deactivate-activate-mid-window"])
    assert row(doc, "m0")[2] == 300 * L and row(doc, "m1")[2] == 300 * L


def test_same_block_order_active_busy_rate(
    sandbox: Sandbox, allways: LoadedModule, allways_ref: ModuleType, sc: dict[str, bytes]
) -> None:
    """m0 activates, takes a swap and posts the best rate in one block: busy applies before the rate."""
    doc = run(sandbox, allways, allways_ref, sc["same-block-order"])
    assert row(doc, "m0")[2] == 0 and row(doc, "m1")[2] == 600 * L


def test_tao_btc_lower_rate_wins(
    sandbox: Sandbox, allways: LoadedModule, allways_ref: ModuleType, sc: dict[str, bytes]
) -> None:
    doc = run(sandbox, allways, allways_ref, sc["tao-btc-lower-wins"])
    assert row(doc, "m1")[3] == 600 * L and row(doc, "m0")[3] == 0  # 349.9 < 350


def test_halted_recycles_everything(
    sandbox: Sandbox, allways: LoadedModule, allways_ref: ModuleType, sc: dict[str, bytes]
) -> None:
    doc = run(sandbox, allways, allways_ref, sc["halted"])
    assert doc[3] is True and doc[1] == [ONE, 0, 0, 0] and doc[6] == []


@pytest.mark.parametrize(
    ("name", "cap"),
    [
        ("capacity-full", ONE),
        ("capacity-half", ONE // 2),
        ("capacity-quarter", ONE // 4),
        ("capacity-zero", 0),
        ("capacity-max-swap-unset", ONE),
    ],
)
def test_capacity(
    sandbox: Sandbox,
    allways: LoadedModule,
    allways_ref: ModuleType,
    sc: dict[str, bytes],
    name: str,
    cap: int,
) -> None:
    doc = run(sandbox, allways, allways_ref, sc[name])
    assert row(doc, "m0")[7] == cap and row(doc, "m0")[10] == cap // 2


@pytest.mark.parametrize(
    ("name", "vf0"),
    [("volume-alpha-half", 3 * ONE // 4), ("volume-alpha-zero", ONE), ("volume-alpha-one", ONE // 2)],
)
def test_volume_factor(
    sandbox: Sandbox,
    allways: LoadedModule,
    allways_ref: ModuleType,
    sc: dict[str, bytes],
    name: str,
    vf0: int,
) -> None:
    """Crown share 0.5, volume share 0.25 -> 0.5 + 0.5 * 0.5 = 0.75; an over-serving miner is capped at 1."""
    doc = run(sandbox, allways, allways_ref, sc[name])
    assert row(doc, "m0")[2] == row(doc, "m1")[2] == 300 * L
    assert row(doc, "m0")[8:10] == [10**8, vf0]
    assert row(doc, "m1")[8:10] == [3 * 10**8, ONE]
    assert row(doc, "m0")[10] == vf0 // 2


def test_idle_crown_loses_alpha(sandbox: Sandbox, allways: LoadedModule, allways_ref: ModuleType) -> None:
    ref = allways_ref
    ws = ref.WS
    b = ref.bundle(
        ref.B,
        ["m0", "m1"],
        rates=[(100, "m0", (340, 0), (0, 0)), (100, "m1", (330, 0), (0, 0))],
        events=[
            *ref._good("m0", "m1"),
            (ws + 5, 0, ref.INITIATED, "m0", 0),
            (ws + 6, 0, ref.COMPLETED, "m1", 10**8),
        ],
    )
    doc = run(sandbox, allways, ref, b)
    # m0 holds the crown (busy from ws+5 on, m1 inherits) but m1 completed all the volume
    assert row(doc, "m0")[8:10] == [0, ONE // 2]


def test_evaluate_returns_one_uid(
    sandbox: Sandbox, allways: LoadedModule, allways_ref: ModuleType, sc: dict[str, bytes]
) -> None:
    r = sandbox.evaluate(allways, sc["recycle-uid-53"], dumps(1))
    assert r.ok and r.score == 729 * 10**6 // 2
    r = sandbox.evaluate(allways, sc["recycle-uid-53"], dumps(53))
    assert r.ok and r.score == 10**9 - 729 * 10**6 // 2
    r = sandbox.evaluate(allways, sc["partial-success-cube"], dumps(9))
    assert r.error_kind == errors.MODULE_ERROR and r.error_message == "evaluate returned error code -3"
