"""Routine chain changes mid-run never halt the network (issue 12, items 2 and 3), with real
validator processes on loopback and the local chain.

The subnet starts with two mechanisms and a challenge active on mechanism 1. The owner then
lowers the mechanism count to 1 (on 1be342a: `weights_impossible` at the next epoch end, every
leader at every view, for ever), and later sets a `max_weight_limit` that needs more UIDs than
the subnet has (the same). The validators keep deciding across epoch ends, the decided weights
record why they fell back, and the chain accepts every vector they submit. Then the owner
rotates its hotkey: the new key lands a registry action once an epoch's decided snapshot names
it, and the old key is refused at the door. Afterwards every validator restarts cleanly (on
1be342a a genesis re-read from the changed chain failed block 1 for ever), and a validator whose
store is wiped joins again from the genesis record its peers serve.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import urllib.request
from pathlib import Path

import trio

from registry.manifest import ChallengeManifest, ModulePolicy
from registry.state import OP_ACTIVATE, OP_DEACTIVATE, sign_command, sign_manifest
from validator_node import devnet
from validator_node.block import Block
from validator_node.chain.local import LocalChain
from validator_node.p2p.submit_client import submit_items
from validator_node.p2p.submit_replies import accepted
from validator_node.pipeline.messages import BlockBody, EpochWeights, RegistryItem
from wire.codec import decode, encode
from wire.keys import Hotkey

B = 12  # blocks per epoch (devnet default)
wait_for = devnet.wait_until


def height(root: Path, v: devnet.DevnetValidator) -> int:
    s = devnet.read_status(root, v)
    return -1 if s is None else int(s["height"])


def decided_weights(root: Path, v: devnet.DevnetValidator) -> dict[int, EpochWeights]:
    """Epoch -> the weights its last block decided, from the validator's own store."""
    path = root / "data" / str(devnet.NETUID) / v.ss58 / "node.sqlite"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT height, block FROM decided WHERE height % ? = 0", (B,)).fetchall()
    except sqlite3.OperationalError:  # the node is creating its tables
        rows = []
    finally:
        db.close()
    out = {}
    for h, data in rows:
        body = decode(decode(bytes(data), Block).body, BlockBody)
        if body.weights is not None:
            out[int(h) // B - 1] = body.weights
    return out


def after_of(root: Path, v: devnet.DevnetValidator, offset: int) -> str:
    with open(root / "logs" / f"validator{v.index}.log", "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def mechanism_one_challenge(root: Path) -> list[bytes]:
    """The owner's signed add + activate of maxsat on mechanism 1 (half its emission)."""
    c = next(c for c in devnet.example_challenges() if c.challenge_id == "maxsat")
    owner = Hotkey.from_wallet("owner", "default", root / "wallets")
    m = ChallengeManifest(
        "maxsat", "maxsat", 1, hashlib.sha256(c.wasm).digest(), len(c.wasm), 1,
        ModulePolicy.from_dict(c.policy), 500_000_000, 1, c.task, 0, 1,
    )  # fmt: skip
    return [
        encode(RegistryItem(sign_manifest(m, owner, devnet.NETUID), c.wasm)),
        encode(RegistryItem(sign_command(OP_ACTIVATE, "maxsat", 2, owner, devnet.NETUID), None)),
    ]


def challenge_status(v: devnet.DevnetValidator, cid: str) -> str | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{v.api_port}/api/challenges", timeout=10) as r:
        found = [c["status"] for c in json.loads(r.read()) if c["id"] == cid]
    return found[0] if found else None


def owner_command(root: Path, v: devnet.DevnetValidator, op: str, nonce: int, key: Hotkey) -> str:
    item = RegistryItem(sign_command(op, "maxsat", nonce, key, devnet.NETUID), None)
    return trio.run(submit_items, v.multiaddr(), [encode(item)])[0]


def unpinned(cmd: list[str]) -> list[str]:
    """A validator command without the devnet's genesis file and pin: a new node that knows only
    its bootstrap peers, and so takes the genesis record they serve."""
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


def test_chain_changes_mid_run_never_halt_the_network_and_every_node_restarts_and_joins(
    tmp_path: Path,
) -> None:
    root = tmp_path / "dn"
    vals, _ = devnet.create(root, 4)  # 11 UIDs: owner, 4 validators, 6 miners
    with LocalChain(root / "chain.sqlite") as chain:
        chain.set_hyperparameters(mechanism_count=2)
    with devnet.Processes(root, vals).start_all() as cluster:
        wait_for(lambda: all(height(root, v) >= 2 for v in vals), 90, "height 2 everywhere")
        replies = trio.run(submit_items, vals[0].multiaddr(), mechanism_one_challenge(root))
        assert all(r.startswith("ok") for r in replies), replies

        def epoch_weights(pred: object) -> int | None:
            found = decided_weights(root, vals[0])
            return next((e for e, w in sorted(found.items()) if pred(w)), None)  # type: ignore[operator]

        # maxsat is active on mechanism 1 and an epoch has ended with two rows
        wait_for(lambda: epoch_weights(lambda w: len(w.rows) == 2) is not None, 90, "two-mechanism weights")

        with LocalChain(root / "chain.sqlite") as chain:
            chain.set_hyperparameters(mechanism_count=1)
        dropped = lambda w: w.fallback is not None and "maxsat" in w.fallback  # noqa: E731
        wait_for(lambda: epoch_weights(dropped) is not None, 120, "an epoch end past the lowered count")
        first_dropped = epoch_weights(dropped)

        def submitted(epoch: int) -> bool:  # before the next change, so the chain judges them as they were
            return all(any(r["epoch"] == epoch for r in devnet.submitted_weights(root, v)) for v in vals)

        wait_for(lambda: submitted(first_dropped), 60, "every validator's submission of that epoch")  # type: ignore[arg-type]

        with LocalChain(root / "chain.sqlite") as chain:
            chain.set_hyperparameters(max_weight_limit=1000)  # needs 67 UIDs; the subnet has 11
        self_weight = lambda w: w.fallback is not None and w.fallback.startswith("self_weight")  # noqa: E731
        wait_for(lambda: epoch_weights(self_weight) is not None, 120, "an epoch end past the tight limit")
        last = epoch_weights(self_weight)
        assert first_dropped is not None and last is not None and last > first_dropped
        # and the network keeps deciding past it
        target = (last + 2) * B + 1
        wait_for(lambda: all(height(root, v) >= target for v in vals), 90, "the epoch after next")
        assert all(p.poll() is None for p in cluster.procs.values()), "a validator exited"

        # the owner rotates its hotkey: once an epoch's decided snapshot names the new key, the
        # new owner lands a registry action and the old one is refused at the door
        old_owner = Hotkey.from_wallet("owner", "default", root / "wallets")
        new_owner = Hotkey.from_name("chain-change-new-owner")
        with LocalChain(root / "chain.sqlite") as chain:
            chain.set_subnet_owner(new_owner.ss58)
        wait_for(
            lambda: accepted(owner_command(root, vals[1], OP_DEACTIVATE, 3, new_owner)),
            120,
            "the new owner's deactivate to be accepted",
        )
        wait_for(
            lambda: all(challenge_status(v, "maxsat") not in (None, "active") for v in vals),
            90,
            "the new owner's deactivate decided everywhere",
        )
        refused = owner_command(root, vals[1], OP_ACTIVATE, 4, old_owner)
        assert refused.startswith("refused"), refused
        rotated_at = max(height(root, v) for v in vals)
        wait_for(
            lambda: all(height(root, v) >= rotated_at + B for v in vals), 90, "an epoch past the rotation"
        )

    # the epochs decided under the new parameters were submitted, and the chain accepted them
    # (an epoch whose snapshot predates a change may be refused: the chain moved under it)
    with LocalChain(root / "chain.sqlite") as chain:
        uid_of = {n.hotkey: n.uid for n in chain.metagraph().neurons}
        landed = {(r.hotkey, r.uids) for r in chain.weight_records()}
    for v in vals:
        rows = devnet.submitted_weights(root, v)
        for e in (first_dropped, last):
            got = [r for r in rows if r["epoch"] == e]
            assert got and all(r["result"] == "ok" for r in got), (e, rows)
        assert [r["uids"] for r in rows if r["epoch"] == last] == [[uid_of[v.ss58]]]  # a self-weight
        assert any(h == v.ss58 and list(u) == [uid_of[v.ss58]] for h, u in landed)

    # every validator restarts cleanly on the changed chain (genesis comes from the record)
    stopped_at = max(height(root, v) for v in vals)
    logs = {v.index: (root / "logs" / f"validator{v.index}.log").stat().st_size for v in vals}
    with devnet.Processes(root, vals).start_all() as cluster:
        wait_for(
            lambda: all(height(root, v) >= stopped_at + B for v in vals), 120, "an epoch past the restart"
        )
        # a validator whose store is lost joins again as a new node: no genesis file, no pin,
        # only its bootstrap peers, from which it takes and verifies the network's record
        new = vals[0]
        proc = cluster.procs[new.index]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        node_dir = root / "data" / str(devnet.NETUID) / new.ss58
        for child in node_dir.iterdir():
            if child.name != "peer_key.ed25519":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        cmd = unpinned(devnet.node_command(root, new, None, 12, 0.5))
        env = dict(os.environ, PYTHONWARNINGS="ignore::DeprecationWarning")
        with open(root / "logs" / "validator0.log", "ab") as log:
            cluster.procs[new.index] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        others = vals[1:]
        wait_for(
            lambda: height(root, new) >= max(height(root, v) for v in others) - 1,
            120,
            "the new node to catch up",
        )
        joined_at = max(height(root, v) for v in others)
        wait_for(lambda: height(root, new) >= joined_at + B, 120, "the new node to decide an epoch")
        status = devnet.read_status(root, new)
        assert status is not None and status["genesis"] == cluster.genesis_hash
        assert all(p.poll() is None for p in cluster.procs.values()), "a validator exited"
        after = {v.index: after_of(root, v, logs[v.index]) for v in vals}  # before the stop
    for i, text in after.items():
        assert "state_diverged" not in text and "Traceback" not in text, (i, text[-3000:])
    assert "genesis " + cluster.genesis_hash + " from peer /ip4/" in after[new.index]

    # every validator decided the same chain
    chains = [dict(devnet.decided_chain(root, v)) for v in vals]
    for c in chains[1:]:
        shared = c.keys() & chains[0].keys()
        assert shared and all(c[h] == chains[0][h] for h in shared)
