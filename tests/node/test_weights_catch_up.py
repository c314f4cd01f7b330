"""A node catching up over several epochs submits only the newest decided weights (issue 12,
item 11): on a real LocalChain with `weights_rate_limit`, the current epoch's vector is the one
that lands, never a stale one after it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import trio

from validator_node.chain.base import Hyperparameters
from validator_node.chain.local import Genesis, GenesisNeuron, LocalChain
from validator_node.chain_duty import ChainDuty
from validator_node.metrics import Metrics
from validator_node.pipeline.messages import EpochWeights, WeightRowMsg
from validator_node.store import NodeStore
from wire.keys import Hotkey

OWNER = Hotkey.from_name("catch-up-owner")
VALIDATOR = Hotkey.from_name("catch-up-validator")
MINERS = [Hotkey.from_name(f"catch-up-miner-{i}") for i in range(3)]


class Duty(ChainDuty):
    """The weights half of a ValidatorNode: its chain, hotkey, store and metrics."""

    weights_retry_interval = 0.05

    def __init__(self, chain: LocalChain, path: Path) -> None:
        self.chain = chain
        self.hotkey = VALIDATOR
        self.metrics = Metrics()
        self.store = NodeStore(path)
        self.app = SimpleNamespace(state=SimpleNamespace(epoch_info=None))
        self.last_weights = None
        self.last_weights_result = None
        self._weights_pending = 0


def local_chain(path: Path) -> LocalChain:
    neurons = [GenesisNeuron(OWNER.ss58, 10**12, True), GenesisNeuron(VALIDATOR.ss58, 10**12, True)]
    neurons += [GenesisNeuron(m.ss58, 0, False) for m in MINERS]
    hp = Hyperparameters(tempo=20, weights_rate_limit=10, min_allowed_weights=1, max_weight_limit=65535)
    return LocalChain(path, Genesis(1, OWNER.ss58, tuple(neurons), hp, block_time_ms=0))


def weights(epoch: int) -> EpochWeights:
    """Each epoch's vector differs (the miner it favours), so the chain shows which one landed."""
    favoured = 2 + epoch % 3
    values = tuple(60_000 if uid == favoured else 1_000 for uid in (2, 3, 4))
    return EpochWeights(epoch=epoch, rows=(WeightRowMsg(mechid=0, uids=(2, 3, 4), weights=values),))


def landed(chain: LocalChain) -> list[tuple[int, ...]]:
    return [tuple(r.submitted) for r in chain.weight_records(hotkey=VALIDATOR.ss58)]


async def test_missed_epochs_decided_back_to_back_submit_only_the_newest(tmp_path: Path) -> None:
    chain = local_chain(tmp_path / "chain.sqlite")
    duty = Duty(chain, tmp_path / "node.sqlite")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:  # as the node does: one task per decided block
            for epoch in (3, 4, 5, 6):
                nursery.start_soon(duty._submit_weights, weights(epoch))
    assert landed(chain) == [weights(6).rows[0].weights]
    assert chain.refusals() == []
    assert duty.last_weights is not None and duty.last_weights["epoch"] == 6
    # a stale epoch's weights handed over afterwards are never sent
    await duty._submit_weights(weights(5))
    assert landed(chain) == [weights(6).rows[0].weights]
    assert duty.metrics.get("chain_set_weights_total", result="superseded") >= 1
    duty.store.close()
    chain.close()


async def test_newest_weights_refused_by_the_rate_limit_land_once_it_allows(tmp_path: Path) -> None:
    """Epoch 3's weights went out just before epoch 4's were decided (one chain block apart):
    the rate limit refuses epoch 4's, which are sent again once the chain has moved on."""
    chain = local_chain(tmp_path / "chain.sqlite")
    duty = Duty(chain, tmp_path / "node.sqlite")
    await duty._submit_weights(weights(3))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(duty._submit_weights, weights(4))
            while not chain.refusals():  # refused once by the rate limit ...
                await trio.sleep(0.01)
            chain.advance(10)  # ... then the chain moves past it
    assert landed(chain) == [weights(3).rows[0].weights, weights(4).rows[0].weights]
    assert [code for _, _, code, _ in chain.refusals()] == ["SettingWeightsTooFast"]
    duty.store.close()
    chain.close()
