"""The embedded local chain's genesis file: its neurons, owner, hyperparameters and block time."""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from validator_node.chain.base import ChainError, Hyperparameters


@dataclass(frozen=True)
class GenesisNeuron:
    hotkey: str
    stake: int
    validator_permit: bool
    coldkey: str = ""


@dataclass(frozen=True)
class Genesis:
    """The initial chain state. UIDs are the neurons' positions; the owner should hold one (uid 0)."""

    netuid: int
    owner: str  # owner hotkey ss58 (the registry's sudo key)
    neurons: tuple[GenesisNeuron, ...]
    hyperparameters: Hyperparameters = field(default_factory=Hyperparameters)
    block_time_ms: int = 12_000
    genesis_time_ms: int = 0  # 0: the time the chain file is first created
    genesis_block: int = 1

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Genesis:
        known = set(Hyperparameters.__dataclass_fields__)
        hp = d.get("hyperparameters", {})
        unknown = sorted(set(hp) - known)
        if unknown:
            raise ChainError(f"genesis: unknown hyperparameters {unknown} (known: {sorted(known)})")
        neurons = []
        for i, n in enumerate(d.get("neurons", [])):
            stake = n.get("stake", 0)
            if type(stake) is not int or stake < 0:
                raise ChainError(
                    f"genesis: neuron {i} stake must be a non-negative integer (rao), got {stake!r}"
                )
            neurons.append(
                GenesisNeuron(
                    str(n["hotkey"]), stake, bool(n.get("validator_permit", False)), str(n.get("coldkey", ""))
                )
            )
        if len({n.hotkey for n in neurons}) != len(neurons):
            raise ChainError("genesis: duplicate hotkey")
        return cls(
            netuid=int(d["netuid"]),
            owner=str(d["owner"]),
            neurons=tuple(neurons),
            hyperparameters=Hyperparameters(**hp),
            block_time_ms=int(d.get("block_time_ms", 12_000)),
            genesis_time_ms=int(d.get("genesis_time_ms", 0)),
            genesis_block=int(d.get("genesis_block", 1)),
        )

    @classmethod
    def load(cls, path: str | Path) -> Genesis:
        p = Path(path)
        text = p.read_text()
        data = tomllib.loads(text) if p.suffix == ".toml" else json.loads(text)
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["neurons"] = [asdict(n) for n in self.neurons]
        return d
