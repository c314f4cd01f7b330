"""The audit replay's weights figures follow the rule validators run (issue 13, section 4): the
permit holders of the epoch's snapshot are listed as unpaid, and the burn it reports is the one
left after their scores are dropped (it recomputes the burn, so it must drop them too)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

from bench.certified_chain import make_world, registry_body, sorted_by_id
from consensus.messages import DecisionPacket
from validator_node.audit.replay import Replayer
from validator_node.devnet import example_challenges
from validator_node.pipeline.messages import BlockBody
from validator_node.pipeline.state import submission_id
from validator_node.weights import SCALE
from wire.codec import encode

NETUID = 37
EPOCH = 4


class Memory:
    """A replay source over a world's decided blocks, genesis and modules."""

    label = "memory"

    def __init__(self, genesis: bytes, decisions: dict[int, DecisionPacket], modules: list[bytes]) -> None:
        self._genesis, self._decisions = genesis, decisions
        self._content = {hashlib.sha256(m).digest(): m for m in modules}

    async def genesis(self, digest: bytes | None) -> bytes | None:
        return self._genesis

    async def decision(self, height: int) -> DecisionPacket | None:
        return self._decisions.get(height)

    async def content(
        self, digest: bytes, *, size: int | None = None, key: bytes | None = None
    ) -> bytes | None:
        return self._content.get(digest)


async def test_the_replay_lists_permit_holders_as_unpaid_and_burns_their_share(tmp_path: Path) -> None:
    world = make_world(tmp_path / "world", netuid=NETUID, epoch_blocks=EPOCH, miners=1, tag="unpaid-audit")
    maxsat = next(c for c in example_challenges() if c.challenge_id == "maxsat")
    info = replace(world.app.chain_view, epoch=0)
    world.decide(BlockBody(info, tuple(registry_body(world, [maxsat])), (), (), None))
    # only a validator (uid 1, with a permit) submits; every validator attests it
    sub = world.submission(world.validators[0], "maxsat", 0, maxsat.payloads[0])
    world.decide(BlockBody(None, (), tuple(sorted_by_id([sub])), (), None))
    world.decide(BlockBody(None, (), (), tuple(world.attestations([submission_id(sub)], 900_000_000)), None))
    world.decide()  # the weights block, as the leader derives it
    world.decide()  # the next epoch's first block commits to the state after epoch 0
    (row,) = world.app.state.weights[0].rows
    assert (row.uids, row.weights) == ((0,), (65535,))  # all burnt to the owner

    source = Memory(encode(world.app.genesis), world.decisions, [maxsat.wasm])
    report = await Replayer(source, epoch=0, genesis_hash=None, work_dir=tmp_path / "audit").run()
    assert report.failures == [] and report.incomplete is None
    (genesis,) = [c for c in report.checks if c.item == "genesis"]
    assert genesis.figures["validators_as_miners"] is False
    (weights,) = [c for c in report.checks if c.item == "epoch 0 weights"]
    assert weights.figures["best_scores"] == {"maxsat": {"1": 900_000_000}}  # scored, shown
    assert weights.figures["unpaid_uids"] == [1, 2, 3, 4]
    assert weights.figures["burnt"] == {0: SCALE}  # its share is burnt with the rest
