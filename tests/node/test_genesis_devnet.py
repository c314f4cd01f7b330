"""The genesis record with real validator processes over libp2p on loopback and the local chain:
restarts from height 0 after the owner changed the chain, a late joiner that fetches the
network's genesis from its peers, and a joiner pinned to another genesis that refuses to start.

Epochs are long (40 blocks) so that no checkpoint exists while these run: every restarted or new
node replays from block 1, which is where a genesis rebuilt from today's chain failed.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from validator_node import devnet
from validator_node.chain.local import LocalChain

ENV = dict(os.environ, PYTHONWARNINGS="ignore::DeprecationWarning")
EPOCH = 40
TAO = 10**9
wait_for = devnet.wait_until


def height(root: Path, v: devnet.DevnetValidator) -> int:
    s = devnet.read_status(root, v)
    return -1 if s is None else int(s["height"])


def unpinned(cmd: list[str]) -> list[str]:
    """A validator command without the devnet's genesis file and pin: a joiner that knows only
    its bootstrap peers."""
    out: list[str] = []
    skip = False
    for arg in cmd:
        if skip:
            skip = False
        elif arg in ("--genesis", "--genesis-hash"):
            skip = True
        else:
            out.append(arg)
    return out


def restart(cluster: devnet.Processes, v: devnet.DevnetValidator) -> None:
    proc = cluster.procs[v.index]
    proc.send_signal(signal.SIGTERM)  # the clean stop (KeyboardInterrupt can land anywhere)
    proc.wait(timeout=30)
    cluster.start(v)


def keeps_deciding(root: Path, v: devnet.DevnetValidator, others: list[devnet.DevnetValidator]) -> None:
    target = max(height(root, o) for o in others) + 3
    wait_for(lambda: height(root, v) >= target, 90, f"validator {v.index} to reach height {target}")


def test_restarts_from_height_0_after_the_owner_changes_the_chain(tmp_path: Path) -> None:
    """Item 3 (a), real processes: the owner raises the mechanism count, later rotates the owner
    hotkey; validators whose stores start at height 0 are restarted after each change and keep
    deciding (a genesis re-read from the chain made them fail on block 1 for ever)."""
    from wire.keys import Hotkey

    root = tmp_path / "dn"
    vals, _ = devnet.create(root, 4, miners=1)
    with devnet.Processes(root, vals, epoch_blocks=EPOCH).start_all() as cluster:
        wait_for(lambda: all(height(root, v) >= 4 for v in vals), 90, "height 4")
        with LocalChain(root / "chain.sqlite") as chain:
            chain.set_hyperparameters(mechanism_count=2)
        restart(cluster, vals[1])
        keeps_deciding(root, vals[1], vals)

        new_owner = Hotkey.from_name("genesis-devnet-new-owner")
        with LocalChain(root / "chain.sqlite") as chain:
            chain.set_subnet_owner(new_owner.ss58)
        restart(cluster, vals[1])
        restart(cluster, vals[2])
        keeps_deciding(root, vals[1], vals)
        keeps_deciding(root, vals[2], vals)
        statuses = [devnet.read_status(root, v) for v in vals]
    assert {s["genesis"] for s in statuses if s} == {cluster.genesis_hash}
    log = (root / "logs" / "validator1.log").read_text()
    assert "state_diverged" not in log and "Traceback" not in log
    chains = [dict(devnet.decided_chain(root, v)) for v in vals]
    for chain in chains[1:]:
        shared = chain.keys() & chains[0].keys()
        assert len(shared) >= 8 and all(chain[h] == chains[0][h] for h in shared)


def test_a_late_joiner_takes_the_networks_genesis_and_a_wrong_pin_is_refused(tmp_path: Path) -> None:
    """Item 3 (b) and (c): stake moves on the chain after the network started; a validator with an
    empty store, no checkpoint to start from and only bootstrap peers gets the network's genesis
    record from them (not today's stake), decides with the others and restarts cleanly. The same
    joiner pinned to another --genesis-hash refuses to start, in one line."""
    root = tmp_path / "dn"
    vals, _ = devnet.create(root, 4, miners=1)
    first, late = vals[:3], vals[3]  # 9000 of 10000 TAO: a quorum without the late validator
    with devnet.Processes(root, vals, epoch_blocks=EPOCH).start_all(first) as cluster:
        wait_for(lambda: all(height(root, v) >= 4 for v in first), 90, "height 4 without the late one")
        with LocalChain(root / "chain.sqlite") as chain:  # uids: owner 0, validators 1..4
            chain.set_neuron(1, stake=2500 * TAO)
            chain.set_neuron(4, stake=5000 * TAO)
        cmd = unpinned(devnet.node_command(root, late, None, EPOCH, 0.5))

        wrong = subprocess.run(
            [*cmd, "--genesis-hash", "ab" * 32], capture_output=True, text=True, env=ENV, timeout=120
        )
        assert wrong.returncode == 2, wrong.stderr[-2000:]
        last = wrong.stderr.strip().splitlines()[-1]
        assert last.startswith("validator-node run: the genesis record served has hash ")
        assert "not the pinned --genesis-hash " + "ab" * 32 in last
        assert "Traceback" not in wrong.stderr

        log_path = root / "logs" / "validator3.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=ENV)
            cluster.procs[late.index] = proc  # stopped with the others on the way out
            wait_for(
                lambda: height(root, late) >= max(height(root, v) for v in first) - 1,
                120,
                "the late one to catch up",
            )
            keeps_deciding(root, late, first)
            status = devnet.read_status(root, late)
            assert status is not None and status["genesis"] == cluster.genesis_hash
            proc.send_signal(signal.SIGTERM)  # the clean stop (KeyboardInterrupt can land anywhere)
            assert proc.wait(timeout=30) == 0
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=ENV)
            cluster.procs[late.index] = proc
            keeps_deciding(root, late, first)
    text = log_path.read_text()
    assert "genesis " + cluster.genesis_hash + " from peer /ip4/" in text
    assert "state_diverged" not in text and "Traceback" not in text
    # its store holds the network's record: epoch 0's stake as the network started, not today's
    from validator_node.genesis import GenesisRecord, genesis_hash
    from validator_node.store import NodeStore
    from wire.codec import decode

    store = NodeStore(root / "data" / str(devnet.NETUID) / late.ss58 / "node.sqlite")
    try:
        raw = store.genesis_record()
    finally:
        store.close()
    assert raw is not None
    record = decode(raw, GenesisRecord)
    assert genesis_hash(record).hex() == cluster.genesis_hash
    assert sorted(v.stake // TAO for v in record.validators) == [1000, 2000, 3000, 4000]
