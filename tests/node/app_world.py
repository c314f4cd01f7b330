"""An `Application` over a real local chain for a toy subnet (tests.node.toy_subnet's keys)."""

from __future__ import annotations

from pathlib import Path

from tests.node.toy_subnet import STAKES, toy_subnet
from validator_node.app import Application
from validator_node.chain.base import Hyperparameters
from validator_node.chain.local import Genesis, GenesisNeuron, LocalChain
from validator_node.genesis import record_from_chain


def make_app(
    root: Path, name: str, netuid: int, epoch_blocks: int, **hp: int
) -> tuple[Application, LocalChain]:
    """The owner (uid 0), the four validators and three miners of `toy_subnet(name)` on a new
    local chain under `root`, and an application at genesis."""
    owner, vals, miners, _, _, _ = toy_subnet(name)
    neurons = (
        GenesisNeuron(owner.ss58, 0, False),
        *(GenesisNeuron(v.ss58, s, True) for v, s in zip(vals, STAKES, strict=True)),
        *(GenesisNeuron(m.ss58, 0, False) for m in miners),
    )
    genesis = Genesis(netuid, owner.ss58, neurons, Hyperparameters(tempo=epoch_blocks, **hp), 0, 1)
    root.mkdir(parents=True, exist_ok=True)
    chain = LocalChain(root / "chain.sqlite", genesis)
    return Application(record_from_chain(chain, netuid, epoch_blocks)), chain
