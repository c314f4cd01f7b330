"""Restart cost does not grow with the chain (issue 12, item 10): vote records of heights that are
decided and checkpointed are pruned, never one the replica could still need, and a restart starts
from the node's newest checkpoint instead of replaying from the first one it ever had.

The store is filled as a running node fills it (its votes, decided blocks and epoch checkpoints
for a chain built and certified offline by `bench.certified_chain`); the restart is a real
`ValidatorNode` opening it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.certified_chain import World, make_world
from consensus.crypto import seal
from consensus.messages import PHASE_COMMIT, PHASE_PREPARE, Vote, VoteRecord
from validator_node.app import Application
from validator_node.node import NodeConfig, ValidatorNode
from validator_node.store import NodeStore
from wire.codec import encode

NETUID = 29
EPOCH = 4


def fill(world: World, store: NodeStore, tip: int) -> None:
    """What validator 3 wrote while deciding 1..tip: per height its PREPARE (with the block) and
    COMMIT records, then the decision, then the checkpoint the decision completes; and a PREPARE
    at tip+1, which it is still deciding."""
    me = world.validators[3]
    store.set_genesis_vset(world.vset)
    store.set_genesis_record(encode(world.app.genesis))
    for h in range(1, tip + 2):
        d = world.decisions.get(h)
        bh = d.certificate.block_hash if d else bytes(32)
        for phase in (PHASE_PREPARE, PHASE_COMMIT) if d else (PHASE_PREPARE,):
            env = seal(Vote(phase, h, 0, bh), me, NETUID)
            store.append_vote(VoteRecord(phase, h, 0, bh, env, None, d.block if d else None))
        if d is None:
            break
        store.put_decision(h, d.block, d.certificate)
        if h - 1 in world.snapshots:
            store.put_checkpoint(h - 1, encode(world.checkpoint(h - 1)))


@pytest.fixture
def world(tmp_path: Path) -> World:
    w = make_world(tmp_path / "world", netuid=NETUID, epoch_blocks=EPOCH, tag="restart")
    w.decide_until(19)  # epoch ends 4, 8, 12, 16: checkpoints proved by blocks 5, 9, 13, 17
    return w


def test_votes_of_decided_and_checkpointed_heights_are_pruned(world: World, tmp_path: Path) -> None:
    store = NodeStore(tmp_path / "node.sqlite")
    fill(world, store, 19)
    kept = sorted({r.height for r in store.votes_from(0)})
    assert kept == [17, 18, 19, 20]  # 20 is undecided: its vote must survive
    assert store.vote_count() == 3 * 2 + 1
    store.close()


def test_restart_starts_from_the_newest_checkpoint(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = NodeStore(tmp_path / "node" / "node.sqlite")
    fill(world, store, 19)
    store.close()
    applied: list[int] = []
    real_apply = Application.apply_decided

    def counting(self: Application, height: int, data: bytes):  # type: ignore[no-untyped-def]
        applied.append(height)
        return real_apply(self, height, data)

    monkeypatch.setattr(Application, "apply_decided", counting)
    cfg = NodeConfig(netuid=NETUID, data_dir=tmp_path / "node", epoch_blocks=EPOCH, dht=False)
    node = ValidatorNode(cfg, world.validators[3], world.chain)
    try:
        assert applied == [17, 18, 19]  # from the checkpoint after 16, not from genesis
        assert node.metrics.get("blocks_replayed_at_start") == 3
        assert (node.app.tip_height, node.app.tip_hash, node.app.root) == (
            19,
            world.app.tip_hash,
            world.app.root,
        )
        assert node.replica.height == 20
        assert node.replica._records[20][0].kind == PHASE_PREPARE  # its pending vote is back
    finally:
        node.store.close()
