"""Restart time of a validator node at 1,000 and 10,000 decided heights (issue 12, item 10).

Setup (not timed): a chain certified offline by `bench.certified_chain` (real blocks built and
applied by the node's `Application`, sr25519 commit certificates; the blocks are empty apart from
each epoch's weights, so this measures the chain's length, not its content), and a node store
filled as a running validator fills it: per height its PREPARE and COMMIT records (each holding
the block), the decision, and each epoch's checkpoint once the next block commits to it.

Timed: constructing a `ValidatorNode` on that store, which is what a restart does before it
touches the network (open the store, rebuild the application state, load the replica's votes).
Reported with the number of blocks replayed and the vote records and file size on disk.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from pathlib import Path

from bench.certified_chain import World, make_world
from consensus.crypto import seal
from consensus.messages import PHASE_COMMIT, PHASE_PREPARE, Vote, VoteRecord
from validator_node.node import NodeConfig, ValidatorNode
from validator_node.store import NodeStore
from wire.codec import encode

NETUID = 31
EPOCH_BLOCKS = 20  # the node's default
HEIGHTS = (1_000, 10_000)
RUNS = 3


def fill(world: World, store: NodeStore, tip: int) -> None:
    """Votes, decisions and checkpoints of validator 3 for heights 1..tip, in the node's order
    (one transaction: the node commits each write, but the bench times the restart, not this)."""
    me = world.validators[3]
    store.set_genesis_vset(world.vset)
    store.set_genesis_record(encode(world.app.genesis))
    store.db.execute("BEGIN")
    for h in range(1, tip + 1):
        d = world.decisions[h]
        bh = d.certificate.block_hash
        for phase in (PHASE_PREPARE, PHASE_COMMIT):
            env = seal(Vote(phase, h, 0, bh), me, NETUID)
            store.append_vote(VoteRecord(phase, h, 0, bh, env, None, d.block))
        store.put_decision(h, d.block, d.certificate)
        if h - 1 in world.snapshots:
            store.put_checkpoint(h - 1, encode(world.checkpoint(h - 1)))
    store.db.execute("COMMIT")


def restart(world: World, data_dir: Path) -> tuple[float, ValidatorNode]:
    cfg = NodeConfig(netuid=NETUID, data_dir=data_dir, epoch_blocks=EPOCH_BLOCKS, dht=False)
    t = time.perf_counter()
    node = ValidatorNode(cfg, world.validators[3], world.chain)
    return time.perf_counter() - t, node


def measure(root: Path, tip: int) -> dict[str, float]:
    world = make_world(root / "world", netuid=NETUID, epoch_blocks=EPOCH_BLOCKS, tag=f"restart-{tip}")
    world.decide_until(tip)
    data_dir = root / "node"
    store = NodeStore(data_dir / "node.sqlite")
    fill(world, store, tip)
    votes = int(store.db.execute("SELECT COUNT(*) FROM votes").fetchone()[0])
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    times = []
    replayed = float("nan")
    for _ in range(RUNS):
        seconds, node = restart(world, data_dir)
        assert node.app.tip_height == tip and node.app.root == world.app.root
        times.append(seconds)
        # a node without the gauge (before issue 12) replays every block from genesis
        replayed = node.metrics.get("blocks_replayed_at_start") or float(tip)
        node.store.close()
        node.payloads.close()
    size = sum(p.stat().st_size for p in data_dir.glob("node.sqlite*"))
    return {"seconds": statistics.median(times), "replayed": replayed, "votes": votes, "bytes": size}


def main() -> None:
    logging.getLogger("validator_node").setLevel(logging.WARNING)
    print(f"restart of a node (median of {RUNS}); epochs of {EPOCH_BLOCKS} blocks, a checkpoint each")
    print(f"{'heights':>8} {'restart':>10} {'replayed':>9} {'vote rows':>10} {'store':>10}")
    for tip in HEIGHTS:
        with tempfile.TemporaryDirectory() as d:
            r = measure(Path(d), tip)
        print(
            f"{tip:>8} {r['seconds'] * 1000:8.1f} ms {r['replayed']:>9.0f} {r['votes']:>10.0f}"
            f" {r['bytes'] / 1e6:7.2f} MB",
            flush=True,
        )


if __name__ == "__main__":
    main()
