"""The application state's shape: what every validator holds after each decided block.

Its own module, apart from the rules that change it (`pipeline.state`), so that the modules those
rules use (`pipeline.validator_sets`) can read a state without importing the rules. Its canonical
encoding, whose hash is the state root in every block header, is `pipeline.snapshot`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from consensus.validators import ValidatorSet
from registry.state import RegistryState
from validator_node.pipeline.messages import EpochInfo, EpochWeights, EvidenceBundle, PayloadRef


@dataclass(frozen=True)
class Admitted:
    submission_id: bytes
    challenge_id: str
    miner: bytes
    uid: int
    height: int
    payload: bytes
    seed: bytes  # the evaluation's `platform.seed`: from the parent hash, so every validator agrees
    payload_ref: PayloadRef | None = None  # set for payloads above the inline cap (then payload is b"")


@dataclass(frozen=True)
class AppState:
    netuid: int
    epoch_blocks: int
    registry: RegistryState
    modules: Mapping[bytes, bytes] = field(default_factory=dict)
    epoch_info: EpochInfo | None = None
    submissions: Mapping[bytes, Admitted] = field(default_factory=dict)
    attestations: Mapping[bytes, Mapping[bytes, int]] = field(default_factory=dict)
    miner_counts: Mapping[tuple[bytes, str], int] = field(default_factory=dict)
    weights: Mapping[int, EpochWeights] = field(default_factory=dict)
    # this epoch's evidence for epoch-scored challenges (pipeline.evidence)
    evidence_votes: Mapping[str, Mapping[bytes, bytes]] = field(default_factory=dict)
    evidence: Mapping[tuple[str, bytes], EvidenceBundle] = field(default_factory=dict)
    # the consensus set of the current epoch, from the previous epoch's decided EpochInfo (None:
    # the genesis set still applies; pipeline.validator_sets)
    validators: ValidatorSet | None = None
    # the genesis record's `validators_as_miners`: whether permit holders' miner scores earn
    # weight (pipeline.state.unpaid_uids); a network constant, in the snapshot so the root commits to it
    validators_as_miners: bool = False

    def epoch_of(self, height: int) -> int:
        return (height - 1) // self.epoch_blocks

    def is_epoch_start(self, height: int) -> bool:
        return (height - 1) % self.epoch_blocks == 0

    def is_epoch_end(self, height: int) -> bool:
        return height % self.epoch_blocks == 0
