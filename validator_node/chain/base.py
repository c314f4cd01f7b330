"""The one `Chain` protocol the node talks to, and the integer-only values it returns.

Two implementations: `local.LocalChain` (the embedded default, a SQLite file shared by a devnet's
processes) and `subtensor.SubtensorChain` (bittensor 11). Everything here is plain integers and
strings so that what validators agree on (stake, weights) never passes through a float.
Calls block; the node runs them through `trio.to_thread`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

U16_MAX = 65_535


class ChainError(RuntimeError):
    """A chain call failed for a reason other than the chain refusing the weights (I/O, decoding)."""


@dataclass(frozen=True)
class Neuron:
    uid: int
    hotkey: str  # ss58
    coldkey: str  # ss58 ("" when unknown)
    stake: int  # total stake, rao
    validator_permit: bool


@dataclass(frozen=True)
class Metagraph:
    """A subnet's neurons at one block, ordered by uid."""

    netuid: int
    block: int
    neurons: tuple[Neuron, ...]

    @property
    def n(self) -> int:
        return len(self.neurons)

    @property
    def hotkeys(self) -> tuple[str, ...]:
        return tuple(n.hotkey for n in self.neurons)

    def uid_of(self, hotkey: str) -> int | None:
        for n in self.neurons:
            if n.hotkey == hotkey:
                return n.uid
        return None

    def validators(self, min_stake: int = 1) -> tuple[Neuron, ...]:
        """Neurons that may join consensus: a validator permit and at least `min_stake` rao."""
        return tuple(n for n in self.neurons if n.validator_permit and n.stake >= min_stake)

    @property
    def total_stake(self) -> int:
        return sum(n.stake for n in self.neurons)


@dataclass(frozen=True)
class Hyperparameters:
    """The subnet parameters the weight path depends on (names follow subtensor's)."""

    tempo: int = 360
    weights_rate_limit: int = 100
    min_allowed_weights: int = 1
    max_weight_limit: int = U16_MAX  # u16 ratio; 65535 = no cap
    commit_reveal: bool = False
    reveal_period_epochs: int = 1
    mechanism_count: int = 1
    weights_version_key: int = 0
    weights_min_stake: int = 0  # rao

    def epoch_of(self, block: int, netuid: int) -> int:
        """subtensor's epoch index: (block + netuid + 1) // (tempo + 1)."""
        return (block + netuid + 1) // (self.tempo + 1)

    def first_block_of(self, epoch: int, netuid: int) -> int:
        return max(epoch * (self.tempo + 1) - (netuid + 1), 0)


@dataclass(frozen=True)
class WeightsReceipt:
    """An accepted `set_weights`: plain, or a commit that reveals at `reveal_block` / `reveal_round`."""

    block: int
    mode: str  # "plain" | "commit"
    uids: tuple[int, ...]
    weights: tuple[int, ...]  # as submitted (u16)
    reveal_block: int | None = None
    reveal_round: int | None = None
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


class EndpointRefused(ChainError):
    """The chain refused a commitment; `code` is the pallet's error name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@runtime_checkable
class Chain(Protocol):
    """What the node needs from a chain. Commit-reveal is chosen by the chain's own hyperparameter."""

    netuid: int

    def current_block(self) -> int: ...

    def metagraph(self, block: int | None = None) -> Metagraph:
        """The subnet's neurons now, or as they were at chain `block` (validators read an epoch's
        snapshot at a block its first decided block pins, so they all read the same)."""
        ...

    def hyperparameters(self, block: int | None = None) -> Hyperparameters: ...

    def subnet_owner(self, block: int | None = None) -> str:
        """The subnet owner's hotkey (ss58): the registry's sudo key and the burn UID's hotkey."""
        ...

    def set_weights(
        self,
        signer: Any,
        uids: Sequence[int],
        weights: Sequence[int],
        *,
        mechid: int = 0,
        version_key: int = 0,
        app_epoch: int | None = None,
    ) -> WeightsReceipt:
        """Submit u16 weights signed by `signer`; raises rules.WeightsRefused when the chain refuses.

        `app_epoch` is the decided epoch the row belongs to: the local chain records it in the
        signed call, so an auditor maps the record to its epoch exactly; subtensor's extrinsic has
        no field for it (an auditor maps by chain block, `validator_node.audit.chain_records`)."""
        ...

    def publish_endpoint(self, signer: Any, endpoint: str) -> int:
        """Publish where this hotkey's node listens (`endpoints.format_endpoint`: a full libp2p
        multiaddr with its peer id) as the hotkey's commitment on the subnet; returns the block.
        Raises `EndpointRefused` when the chain refuses (not registered, over its space quota)."""
        ...

    def endpoints(self) -> dict[str, str]:
        """Every hotkey's published commitment on the subnet (ss58 -> text), newest per hotkey.
        A hint where to dial, never a credential: the p2p handshake proves the hotkey."""
        ...

    def close(self) -> None: ...
