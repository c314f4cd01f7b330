"""The simulator finds no violations with the real quorum rule, and does find them without it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from consensus.sim.runner import ALL_FAULTS, BYZANTINE_FAULTS, NETWORK_FAULTS, SimConfig, run_one

ALL = frozenset(ALL_FAULTS)


@pytest.mark.parametrize(
    ("validators", "byzantine", "faults", "seeds"),
    [
        (4, 0, frozenset(NETWORK_FAULTS), 60),
        (4, 1, ALL, 150),
        (7, 2, ALL, 60),
        (7, 2, frozenset(BYZANTINE_FAULTS), 30),
        (16, 5, ALL, 8),
    ],
)
def test_no_violations(validators: int, byzantine: int, faults: frozenset[str], seeds: int) -> None:
    cfg = SimConfig(validators=validators, byzantine=byzantine, faults=faults)
    bad = []
    for seed in range(seeds):
        r = run_one(seed, cfg)
        if r.violations:
            bad.append((seed, [(v.kind, v.detail) for v in r.violations]))
        assert r.decided_height >= 4 or r.violations
    assert not bad


def test_real_sr25519_runs_are_safe_and_live() -> None:
    for seed in range(3):
        r = run_one(seed, SimConfig(validators=4, byzantine=1, faults=ALL, crypto="sr25519"))
        assert not r.violations and r.decided_height >= 4


def test_byzantine_behaviour_is_detected() -> None:
    evidence = sum(
        run_one(s, SimConfig(7, 2, frozenset({"doublevote", "equivocate"}))).evidence for s in range(5)
    )
    assert evidence > 0
    r = run_one(0, SimConfig(7, 2, frozenset({"forge"})))
    assert {"bad_signature", "unknown_signer"} & set(r.rejected)


def test_same_seed_same_run() -> None:
    a = run_one(42, SimConfig(7, 2, ALL))
    b = run_one(42, SimConfig(7, 2, ALL))
    assert (a.messages, a.decided_height, a.virtual_time, a.evidence) == (
        b.messages,
        b.decided_height,
        b.virtual_time,
        b.evidence,
    )


def test_checker_catches_a_weakened_quorum() -> None:
    """Mutation test: with 'more than half' instead of 'more than two thirds', an equivocating
    leader or a pair of twins splits the honest validators and the checker must notice."""
    weak = SimConfig(validators=4, byzantine=1, faults=ALL, quorum=(1, 2))
    found = [s for s in range(300) if not run_one(s, weak).safe]
    assert found, "the checker never caught the broken quorum"


def test_cli_json_contract() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "consensus.sim",
            "--seeds",
            "5",
            "--validators",
            "4",
            "--byzantine",
            "1",
            "--faults",
            "all",
            "--json",
            "--jobs",
            "1",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    for key in ("runs", "safety_violations", "liveness_failures", "decided_heights"):
        assert key in doc
    assert doc["runs"] == 5 and doc["safety_violations"] == 0 and doc["liveness_failures"] == 0


def test_cli_refuses_bad_arguments() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "consensus.sim", "--faults", "meteor"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2 and "unknown fault" in out.stderr
