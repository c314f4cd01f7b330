"""A small subnet for the pipeline's pure tests: an owner (uid 0, no stake), four validators
with unequal stake (uids 1-4) and three miners (uids 5-7), all with deterministic hotkeys."""

from __future__ import annotations

from typing import NamedTuple

from consensus.validators import ValidatorSet
from validator_node.pipeline.messages import EpochInfo, NeuronEntry
from wire.keys import Hotkey

STAKES = (400, 300, 200, 100)


class ToySubnet(NamedTuple):
    owner: Hotkey
    validators: list[Hotkey]
    miners: list[Hotkey]
    vset: ValidatorSet
    neurons: tuple[NeuronEntry, ...]
    info: EpochInfo  # epoch 0's snapshot: 1 mechanism, min 1 weight, max weight 65535, version 0


def toy_subnet(name: str) -> ToySubnet:
    """Hotkeys are named `<name>-owner`, `<name>-v<i>` and `<name>-m<i>`."""
    owner = Hotkey.from_name(f"{name}-owner")
    vals = [Hotkey.from_name(f"{name}-v{i}") for i in range(len(STAKES))]
    miners = [Hotkey.from_name(f"{name}-m{i}") for i in range(3)]
    rows = [(owner, 0, False)] + [(k, s, True) for k, s in zip(vals, STAKES, strict=True)]
    rows += [(m, 0, False) for m in miners]
    neurons = tuple(
        NeuronEntry(uid, k.public_key, stake, permit) for uid, (k, stake, permit) in enumerate(rows)
    )
    vset = ValidatorSet.of((k.public_key, s) for k, s in zip(vals, STAKES, strict=True))
    return ToySubnet(owner, vals, miners, vset, neurons, EpochInfo(0, neurons, 0, 1, 65535, 1, 0))
