"""The simulator with validator sets that change at epoch boundaries, WAN latencies and counts.

A handful of fast seeds: the soak (`make soak`) runs thousands, up to V = 64.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from consensus.sim.__main__ import SOAK_SETS_PLAN, percentile, soak_jobs
from consensus.sim.app import ChainApp
from consensus.sim.epochs import decode_snapshot, encode_snapshot
from consensus.sim.network import WIRE_OVERHEAD
from consensus.sim.runner import ALL_FAULTS, SimConfig, Simulation, run_one

ALL = frozenset(ALL_FAULTS)


@pytest.mark.parametrize(
    ("validators", "byzantine", "latency", "seeds"),
    [(4, 1, "lan", 8), (7, 2, "lan", 3), (7, 2, "wan", 3)],
)
def test_set_changes_with_all_faults_stay_safe_and_live(
    validators: int, byzantine: int, latency: str, seeds: int
) -> None:
    cfg = SimConfig(
        validators,
        byzantine,
        ALL,
        set_changes=3,
        latency=latency,
        base_timeout=2.0 if latency == "wan" else 0.5,
    )
    changes = [0, 0, 0]
    for seed in range(seeds):
        r = run_one(seed, cfg)
        assert not r.violations, (seed, [(v.kind, v.detail) for v in r.violations])
        assert r.epochs_crossed == 3  # every required validator went through all three changes
        for c in r.set_changes:
            changes = [a + b for a, b in zip(changes, c, strict=True)]
    assert all(changes), f"joins, leaves and stake moves all happen across the seeds: {changes}"


def test_each_height_is_certified_by_its_epochs_set() -> None:
    """Joiners sign once their epoch starts (not before), leavers stop signing when theirs ends,
    and every node learnt each set from a decided block (its replica asks its own application)."""
    sim = Simulation(3, SimConfig(7, set_changes=3, epoch_blocks=4))
    r = sim.run()
    assert not r.violations and sim.schedule is not None
    sets = sim.schedule.sets
    joined = {v.hotkey for s in sets[1:] for v in s.validators} - {v.hotkey for v in sets[0].validators}
    left = {v.hotkey for v in sets[0].validators} - {v.hotkey for v in sets[-1].validators}
    assert joined and left
    node = sim.nodes[0]
    for h in range(1, r.decided_height + 1):
        signers = {s.signer for s in node.app.proofs[h].certificate.signatures}
        members = sim.schedule.set_for(h)
        assert signers <= {v.hotkey for v in members.validators}
        assert members.is_quorum(members.stake_of_all(signers))
        assert node.app.vset_for(h) == members
    late = [h for h in range(1, r.decided_height + 1) if sim.schedule.epoch_of(h) == 3]
    assert any(
        k in {s.signer for s in node.app.proofs[h].certificate.signatures} for h in late for k in joined
    )


def test_the_checker_catches_validators_that_ignore_set_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mutation test: apps that never learn the next set from decided blocks (the genesis set
    forever) decide with certificates the real set does not accept, and the checker says so."""
    monkeypatch.setattr(ChainApp, "vset_for", lambda self, height: self.genesis)
    bad = [s for s in range(10) if run_one(s, SimConfig(4, set_changes=3)).violations]
    assert bad, "the checker never noticed the stale validator sets"


def test_an_epochs_first_block_must_name_the_chains_next_set() -> None:
    sim = Simulation(0, SimConfig(4, set_changes=2, epoch_blocks=4))
    assert sim.schedule is not None
    next_set = sim.schedule.set_of_epoch(1)
    node = next(n for n in sim.nodes if n.hotkey in next_set)
    assert node.app.validate(1, node.make_block(1, b"")) is None
    assert "snapshot" in (node.app.validate(1, node.make_block(1, b"", tamper=True)) or "")
    assert decode_snapshot(encode_snapshot(next_set)) == next_set
    assert decode_snapshot(list(reversed(encode_snapshot(next_set)))) is None  # not canonical
    with pytest.raises(ValueError, match="refuses fewer than 4"):
        Simulation(0, SimConfig(4, set_changes=2, epoch_blocks=2))


def test_wan_latency_and_bandwidth() -> None:
    lan = run_one(1, SimConfig(4, target_height=6))
    wan = run_one(1, SimConfig(4, target_height=6, latency="wan", base_timeout=2.0))
    big = run_one(1, SimConfig(4, target_height=6, latency="wan", base_timeout=2.0, payload_bytes=32768))
    assert not (lan.violations or wan.violations or big.violations)
    p50 = {k: percentile(r.latencies, 50) or 0.0 for k, r in (("lan", lan), ("wan", wan), ("big", big))}
    # a height needs a proposal, a prepare and a commit: three one-way delays of 25-165 ms on a WAN
    assert p50["lan"] < 0.1 < 0.075 * 2 < p50["wan"] < 3 * 0.2
    assert p50["big"] > p50["wan"]  # 32 KiB blocks take longer over the same links
    assert big.honest_bytes > 4 * wan.honest_bytes


def test_counts_per_validator_per_height() -> None:
    v, heights = 7, 8
    r = run_one(2, SimConfig(v, target_height=heights))
    assert not r.violations and r.decided_height == heights
    per = r.honest_messages / (r.honest * r.decided_height)
    # PREPARE and COMMIT broadcast to the V-1 others, and the leader's proposal
    assert 2 * (v - 1) <= per <= 2 * (v - 1) + 2
    assert r.honest_bytes > r.honest_messages * (WIRE_OVERHEAD + 100)
    assert len(r.latencies) == v * heights


def test_same_seed_same_run_with_epochs_and_wan() -> None:
    cfg = SimConfig(7, 2, ALL, set_changes=3, latency="wan", base_timeout=2.0)
    a, b = run_one(5, cfg), run_one(5, cfg)
    assert (a.messages, a.honest_bytes, a.decided_height, a.virtual_time, a.latencies) == (
        b.messages,
        b.honest_bytes,
        b.decided_height,
        b.virtual_time,
        b.latencies,
    )


def test_soak_includes_set_changes_and_wan_up_to_64() -> None:
    sizes = {v for v, _, _, latency in SOAK_SETS_PLAN if latency == "wan"}
    assert {16, 32, 64} <= sizes
    jobs = soak_jobs(0, 4, scale=0.01, plan="sets")
    assert all(cfg.set_changes and cfg.faults == ALL for _, cfg in jobs)
    for v, b, _, _ in SOAK_SETS_PLAN:
        assert b * 3 < v  # and Simulation keeps their stake under 1/3 of every epoch's set
    out = subprocess.run(
        [
            *(sys.executable, "-m", "consensus.sim", "--seeds", "2", "--validators", "4", "--byzantine", "1"),
            *("--faults", "all", "--set-changes", "2", "--latency", "wan", "--json", "--jobs", "1"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["runs"] == 2 and doc["safety_violations"] == 0 and doc["liveness_failures"] == 0
    assert doc["set_changes_crossed"] == 4
    for key in (
        "messages_per_validator_height",
        "bytes_per_validator_height",
        "latency_p50_s",
        "latency_p99_s",
    ):
        assert doc[key] > 0
