"""Multi-process tests: real validator processes, real libp2p on loopback, the local chain."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from consensus.messages import VoteRecord
from validator_node import devnet
from wire.codec import decode

ENV = dict(os.environ, PYTHONWARNINGS="ignore::DeprecationWarning")


wait_for = devnet.wait_until


def height(root: Path, v: devnet.DevnetValidator) -> int:
    s = devnet.read_status(root, v)
    return -1 if s is None else int(s["height"])


def vote_records(root: Path, v: devnet.DevnetValidator) -> list[VoteRecord]:
    import sqlite3

    db = sqlite3.connect(root / "data" / str(devnet.NETUID) / v.ss58 / "node.sqlite")
    try:
        return [decode(bytes(r[0]), VoteRecord) for r in db.execute("SELECT record FROM votes")]
    finally:
        db.close()


def test_four_validators_two_epochs_identical_weights_on_chain(tmp_path: Path) -> None:
    """The main job end to end: registry published by the owner, miners submitting, WASM
    evaluation, attestations, evidence votes and `aggregate`, decided weights, and every
    validator's set_weights accepted."""
    summary = devnet.run(tmp_path / "dn", validators=4, epochs=2, epoch_blocks=10, timeout=150, quiet=True)
    assert summary["chain_identical"], summary
    assert summary["exit_codes"] == [0, 0, 0, 0]
    assert summary["submissions_sent"] > 0 and not summary["submissions_refused"]
    for epoch in summary["epochs"]:
        assert epoch["identical"], epoch
        vectors = list(epoch["weights"].values())
        assert len(vectors) == 4
        assert len(vectors[0]) > 1, "only the owner was weighted: no miner score reached the weights"
    assert summary["chain_accepted_set_weights"] == 4 * 2
    assert summary["identical"]
    # all five challenges scored the last epoch, the two seed ones by `aggregate` over agreed
    # evidence, and every validator derived the same per-challenge scores
    assert summary["scores_identical"], summary["last_epoch_scores"]
    assert summary["challenges_scored"] == [
        "allways-swap",
        "bitdefense-invariants",
        "lz-compress",
        "maxsat",
        "tsp-tour",
    ]


def test_validators_find_each_other_on_the_chain_with_no_bootstrap_flags(tmp_path: Path) -> None:
    """Issue 13: each validator publishes its multiaddr as a commitment on the (local) chain and
    dials the other permit holders' from there; with no `--p2p.bootstrap` at all the mesh forms
    and decides, and /api/status names the addresses that were published."""
    from validator_node.chain.endpoints import parse_endpoint
    from validator_node.chain.local import LocalChain

    root = tmp_path / "dn"
    vals, _ = devnet.create(root, 4)
    assert all("--p2p.bootstrap" not in devnet.node_command(root, v, None) for v in vals)
    with devnet.Processes(root, vals).start_all():
        wait_for(lambda: all(height(root, v) >= 3 for v in vals), 90, "height 3 everywhere")
        statuses = [devnet.read_status(root, v) for v in vals]
        with LocalChain(root / "chain.sqlite") as chain:
            published = chain.endpoints()
    assert all(s is not None and s["peers"] == 3 for s in statuses), statuses
    for v, s in zip(vals, statuses, strict=True):
        assert parse_endpoint(published[v.ss58]) in s["listen"]  # type: ignore[index]
    logs = (root / "logs" / "validator0.log").read_text()
    assert "found on the chain" in logs and "published this node's address" in logs


def test_kill9_validator_restarts_catches_up_and_never_equivocates(tmp_path: Path) -> None:
    root = tmp_path / "dn"
    vals, _ = devnet.create(root, 4)
    victim = vals[3]  # the smallest stake: the other three hold more than 2/3
    others = [v for v in vals if v is not victim]
    with devnet.Processes(root, vals).start_all() as cluster:
        wait_for(lambda: all(height(root, v) >= 3 for v in vals), 60, "height 3 everywhere")
        cluster.kill(victim)
        stuck_at = height(root, victim)
        target = max(height(root, v) for v in others) + 4
        wait_for(lambda: all(height(root, v) >= target for v in others), 60, "progress without the victim")
        cluster.start(victim)
        target = max(height(root, v) for v in others) + 2
        wait_for(lambda: height(root, victim) >= target, 60, "the restarted validator to catch up")
        assert height(root, victim) > stuck_at
    chains = [devnet.decided_chain(root, v) for v in vals]
    common = min(len(c) for c in chains)
    assert all(c[:common] == chains[0][:common] for c in chains)
    # never two different values for one (height, view, kind) in the victim's own record
    signed: dict[tuple[int, int, int], bytes] = {}
    for r in vote_records(root, victim):
        key = (r.height, r.view, r.kind)
        value = r.envelope.body
        assert signed.setdefault(key, value) == value, f"equivocated at {key}"
    # and nobody recorded evidence against anyone
    for v in vals:
        status = json.loads((root / "data" / str(devnet.NETUID) / v.ss58 / "status.json").read_text())
        assert status["evidence"] == 0


def test_run_refuses_a_hotkey_without_permit(tmp_path: Path) -> None:
    root = tmp_path / "dn"
    vals, _ = devnet.create(root, 2)
    cmd = devnet.node_command(root, vals[0], 1)
    cmd[cmd.index("--wallet.name") + 1] = "owner"  # the owner neuron has no validator permit
    out = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=60)
    assert out.returncode == 1
    assert "no validator permit" in out.stderr


@pytest.mark.parametrize("flag", ["--netuid"])
def test_run_needs_netuid(flag: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "validator_node.cli", "run"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )
    assert out.returncode == 2 and flag in out.stderr


def test_new_validator_joining_late_catches_up_and_votes(tmp_path: Path) -> None:
    root = tmp_path / "dn"
    vals, _ = devnet.create(root, 4)
    first, late = vals[:3], vals[3]  # 9000 of 10000 TAO: a quorum without the late validator
    with devnet.Processes(root, vals).start_all(first) as cluster:
        wait_for(
            lambda: all(height(root, v) >= 30 for v in first), 90, "height 30 without the late validator"
        )
        cluster.start(late)
        wait_for(
            lambda: height(root, late) >= max(height(root, v) for v in first) - 1,
            90,
            "the late one to catch up",
        )
        caught_up = height(root, late)
        wait_for(lambda: height(root, late) >= caught_up + 3, 30, "the late one to keep deciding")
    records = vote_records(root, late)
    assert any(r.height > caught_up for r in records), "the late validator never voted after catching up"
    # it started from a peer's checkpoint (verified by a commit certificate), not from genesis
    import sqlite3

    db = sqlite3.connect(root / "data" / str(devnet.NETUID) / late.ss58 / "node.sqlite")
    try:
        base = db.execute("SELECT value FROM meta WHERE key = 'base_height'").fetchone()
        first = db.execute("SELECT MIN(height) FROM decided").fetchone()[0]
    finally:
        db.close()
    assert base is not None and int(base[0]) >= 12 and first == int(base[0]) + 1
    chains = [dict(devnet.decided_chain(root, v)) for v in vals]
    assert min(len(c) for c in chains[:3]) >= 30
    for chain in chains[1:]:
        shared = chain.keys() & chains[0].keys()
        assert shared and all(chain[h] == chains[0][h] for h in shared)


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_a_signal_stops_a_node_cleanly(tmp_path: Path, signame: str) -> None:
    """systemd and container runtimes stop services with SIGTERM, pm2 and Ctrl-C with SIGINT; both
    take the clean stop (weights being submitted reach the chain first) and exit 0. SIGINT used
    to raise KeyboardInterrupt wherever it landed and skip that wait."""
    import signal

    root = tmp_path / "dn"
    vals, _ = devnet.create(root, 1)  # one validator holds all stake: it decides alone
    with devnet.Processes(root, vals).start_all() as cluster:
        wait_for(lambda: height(root, vals[0]) >= 2, 60, "a lone validator to decide")
        proc = cluster.procs[0]
        proc.send_signal(getattr(signal, signame))
        assert proc.wait(timeout=30) == 0
    log = (root / "logs" / "validator0.log").read_text()
    assert f"{signame}: stopping" in log and "Traceback" not in log


def certificate_signers(root: Path, v: devnet.DevnetValidator) -> dict[int, set[bytes]]:
    from consensus.messages import Certificate
    from validator_node.devnet.cluster import _read_store

    rows = _read_store(root, v, "SELECT height, certificate FROM decided")
    return {int(h): {s.signer for s in decode(bytes(c), Certificate).signatures} for h, c in rows}


def test_the_consensus_set_follows_the_decided_metagraph(tmp_path: Path) -> None:
    """Stake moves on the chain: a hotkey without a permit at genesis gains one with 6000 of
    15000 TAO. The running validators put it in an epoch's metagraph snapshot; from the next
    epoch's first block on it is in the consensus set, and since the other three (9000) are then
    no quorum, it signs every block from there. It joins as a new node (from a checkpoint that
    the old set certified) and every validator decides the same chain."""
    from validator_node.chain.local import LocalChain
    from wire.keys import public_key_of

    root = tmp_path / "dn"
    vals, _ = devnet.create(root, 4)
    old, newcomer = vals[:3], vals[3]
    uid = 4  # the owner is uid 0, validators 1..4
    with LocalChain(root / "chain.sqlite") as chain:
        assert public_key_of(chain.metagraph().neurons[uid].hotkey) == public_key_of(newcomer.ss58)
        chain.set_neuron(uid, validator_permit=False)
    key = public_key_of(newcomer.ss58)
    with devnet.Processes(root, vals).start_all(old) as cluster:
        wait_for(lambda: all(height(root, v) >= 14 for v in old), 90, "the old set past its first epoch")
        with LocalChain(root / "chain.sqlite") as chain:
            chain.set_neuron(uid, stake=6000 * 10**9, validator_permit=True)
        before = min(height(root, v) for v in old)
        cluster.start(newcomer)

        def newcomer_signs() -> bool:
            return any(key in signers for signers in certificate_signers(root, vals[0]).values())

        wait_for(newcomer_signs, 150, "a block certified with the newcomer's signature")
        target = max(height(root, v) for v in vals) + 4
        wait_for(lambda: all(height(root, v) >= target for v in vals), 60, "four more heights")
    signers = certificate_signers(root, vals[0])
    joined = min(h for h, s in signers.items() if key in s)
    assert joined > before and (joined - 1) % 12 == 0, (before, joined)  # at an epoch's start
    assert all(key in signers[h] for h in signers if h >= joined)  # needed for every quorum since
    assert all(key not in signers[h] for h in signers if h < joined)
    chains = [dict(devnet.decided_chain(root, v)) for v in vals]
    for chain in chains[1:]:
        shared = chain.keys() & chains[0].keys()
        assert shared and all(chain[h] == chains[0][h] for h in shared)
