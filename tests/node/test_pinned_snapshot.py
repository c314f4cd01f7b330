"""Issue 13 §1: an epoch's metagraph snapshot is the chain at a block its first decided block pins.

Real validator processes on the local chain while a writer moves every neuron's stake several
times per chain block. Before, each validator compared the proposer's snapshot with its own latest
12-second read of the chain, so with stake moving all the time the epoch-opening blocks were
refused by some and needed view changes; now each reads the chain at `snapshot_block(header's
chain block)` (prefetched as the chain passes), which is one value for all."""

from __future__ import annotations

import threading
from pathlib import Path

from validator_node import devnet
from validator_node.block import Block, snapshot_block
from validator_node.chain.local import LocalChain
from validator_node.chain_view import epoch_info_from_chain
from validator_node.pipeline.messages import BlockBody
from wire.codec import decode

EPOCH_BLOCKS = 6
EPOCHS = 4
TAO = 10**9


def move_stake_until(root: Path, stop: threading.Event) -> int:
    """Change every neuron's stake four times per chain block (1 s) until `stop`; returns how
    many changes were made. Validators keep their permits; their stake order changes too."""
    changes = 0
    with LocalChain(root / "chain.sqlite") as chain:
        n = chain.metagraph().n
        while not stop.wait(0.25):
            for uid in range(n):
                stake = chain.metagraph().neurons[uid].stake
                chain.set_neuron(uid, stake=stake + (uid + 1 + changes % 7) * TAO // 1000)
            changes += 1
    return changes


def test_stake_moving_every_block_needs_no_view_change_at_epoch_starts(tmp_path: Path) -> None:
    root = tmp_path / "dn"
    vals, _ = devnet.create(root, 4)
    stop = threading.Event()
    moved: list[int] = []
    writer = threading.Thread(target=lambda: moved.append(move_stake_until(root, stop)))
    last = EPOCHS * EPOCH_BLOCKS + 1
    with devnet.Processes(root, vals, epoch_blocks=EPOCH_BLOCKS).start_all():
        writer.start()
        try:
            devnet.wait_until(
                lambda: all((devnet.read_status(root, v) or {}).get("height", 0) >= last for v in vals),
                180,
                f"height {last} everywhere",
            )
        finally:
            stop.set()
            writer.join(timeout=30)
    assert moved and moved[0] > 4 * EPOCHS, "the stake did not move during the run"
    chains = [devnet.decided_chain(root, v) for v in vals]
    assert all(c[:last] == chains[0][:last] for c in chains)
    store = root / "data" / str(devnet.NETUID) / vals[0].ss58 / "node.sqlite"
    import sqlite3

    db = sqlite3.connect(store)
    from validator_node.genesis import load

    genesis_block = load(root / "genesis.cbor").chain_block
    with LocalChain(root / "chain.sqlite") as chain:
        pinned = set()
        for epoch in range(EPOCHS + 1):
            height = epoch * EPOCH_BLOCKS + 1
            block_bytes, cert_bytes = db.execute(
                "SELECT block, certificate FROM decided WHERE height = ?", (height,)
            ).fetchone()
            from consensus.messages import Certificate

            assert decode(bytes(cert_bytes), Certificate).view == 0, (
                f"epoch {epoch} opened after a view change"
            )
            block = decode(bytes(block_bytes), Block)
            info = decode(block.body, BlockBody).epoch_info
            assert info is not None
            at = snapshot_block(block.chain_block, genesis_block)
            # the decided snapshot is exactly the chain at the pinned block
            assert info == epoch_info_from_chain(chain, epoch, at), (
                f"epoch {epoch}: not the chain at block {at}"
            )
            pinned.add(at)
    db.close()
    assert len(pinned) > 1  # the epochs pinned different blocks, with different stake
    for v in vals:
        log = (root / "logs" / f"validator{v.index}.log").read_text()
        assert "snapshot differs" not in log and "moved to view" not in log, log[-2000:]
