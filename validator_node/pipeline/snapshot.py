"""Canonical snapshots of the application state, their root, and checkpoints.

The root of the state after block h is written into block h+1's header, so a commit
certificate on block h+1 certifies the whole state at h. A node that has never seen the chain
can therefore start from a checkpoint served by any peer (or, later, the DHT) without trusting
it: it checks the certificate against the validator set and the snapshot against the root.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

from consensus.certificates import CertificateError, verify_certificate
from consensus.messages import DecisionPacket
from consensus.validators import ValidatorSet
from registry.state import RegistryState
from validator_node.pipeline.messages import EpochInfo, EpochWeights, EvidenceBundle, PayloadRef
from validator_node.pipeline.state import Admitted, AppState
from wire.codec import U16, U32, U64, Bytes32, Len, decode, encode, wire_message
from wire.errors import WireError

MAX_SNAPSHOT = 256 * 1024 * 1024


@wire_message("app.admitted", version=2, max_size=512 * 1024)
class AdmittedRow:
    submission_id: Bytes32
    challenge_id: Annotated[str, Len(1, 64)]
    miner: Bytes32
    uid: U16
    height: U64
    payload: bytes
    seed: Bytes32
    payload_ref: PayloadRef | None


@wire_message("app.attestationrow", version=1, max_size=256)
class AttestationRow:
    submission_id: Bytes32
    validator: Bytes32
    score: int


@wire_message("app.minercount", version=1, max_size=256)
class MinerCountRow:
    miner: Bytes32
    challenge_id: Annotated[str, Len(1, 64)]
    count: U32


@wire_message("app.evidencevoterow", version=1, max_size=256)
class EvidenceVoteRow:
    challenge_id: Annotated[str, Len(1, 64)]
    validator: Bytes32
    bundle_sha256: Bytes32


@wire_message("app.validatorrow", version=1, max_size=64)
class ValidatorRow:
    hotkey: Bytes32
    stake: U64


@wire_message("app.snapshot", version=3, max_size=MAX_SNAPSHOT)
class AppSnapshot:
    netuid: U16
    epoch_blocks: U32
    validators_as_miners: bool  # the genesis record's: whether permit holders earn miner weight
    registry: RegistryState
    modules: tuple[bytes, ...]  # sorted by sha256
    epoch_info: EpochInfo | None
    submissions: tuple[AdmittedRow, ...]
    attestations: tuple[AttestationRow, ...]
    miner_counts: tuple[MinerCountRow, ...]
    weights: tuple[EpochWeights, ...]
    evidence_votes: tuple[EvidenceVoteRow, ...]
    evidence: tuple[EvidenceBundle, ...]  # sorted by (challenge, sha256 of the bundle)
    validators: tuple[ValidatorRow, ...]  # the epoch's consensus set; empty: the genesis set


def snapshot(state: AppState) -> AppSnapshot:
    return AppSnapshot(
        netuid=state.netuid,
        epoch_blocks=state.epoch_blocks,
        validators_as_miners=state.validators_as_miners,
        registry=state.registry,
        modules=tuple(state.modules[h] for h in sorted(state.modules)),
        epoch_info=state.epoch_info,
        submissions=tuple(
            AdmittedRow(
                a.submission_id, a.challenge_id, a.miner, a.uid, a.height, a.payload, a.seed, a.payload_ref
            )
            for _, a in sorted(state.submissions.items())
        ),
        attestations=tuple(
            AttestationRow(sid, v, score)
            for sid in sorted(state.attestations)
            for v, score in sorted(state.attestations[sid].items())
        ),
        miner_counts=tuple(MinerCountRow(m, c, n) for (m, c), n in sorted(state.miner_counts.items())),
        weights=tuple(state.weights[e] for e in sorted(state.weights)),
        evidence_votes=tuple(
            EvidenceVoteRow(c, v, h)
            for c in sorted(state.evidence_votes)
            for v, h in sorted(state.evidence_votes[c].items())
        ),
        evidence=tuple(state.evidence[k] for k in sorted(state.evidence)),
        validators=()
        if state.validators is None
        else tuple(ValidatorRow(v.hotkey, v.stake) for v in state.validators.validators),
    )


def restore(snap: AppSnapshot) -> AppState:
    attestations: dict[bytes, dict[bytes, int]] = {}
    for row in snap.attestations:
        attestations.setdefault(row.submission_id, {})[row.validator] = row.score
    evidence_votes: dict[str, dict[bytes, bytes]] = {}
    for v in snap.evidence_votes:
        evidence_votes.setdefault(v.challenge_id, {})[v.validator] = v.bundle_sha256
    return AppState(
        netuid=snap.netuid,
        epoch_blocks=snap.epoch_blocks,
        validators_as_miners=snap.validators_as_miners,
        registry=snap.registry,
        modules={hashlib.sha256(m).digest(): m for m in snap.modules},
        epoch_info=snap.epoch_info,
        submissions={
            r.submission_id: Admitted(
                r.submission_id, r.challenge_id, r.miner, r.uid, r.height, r.payload, r.seed, r.payload_ref
            )
            for r in snap.submissions
        },
        attestations=attestations,
        miner_counts={(r.miner, r.challenge_id): r.count for r in snap.miner_counts},
        weights={w.epoch: w for w in snap.weights},
        evidence_votes=evidence_votes,
        evidence={(e.challenge_id, hashlib.sha256(e.bundle).digest()): e for e in snap.evidence},
        validators=ValidatorSet.of((v.hotkey, v.stake) for v in snap.validators) if snap.validators else None,
    )


def state_root(state: AppState) -> bytes:
    return hashlib.sha256(encode(snapshot(state))).digest()


@wire_message("app.checkpoint", version=1, max_size=MAX_SNAPSHOT + 2 * 1024 * 1024)
class Checkpoint:
    """The state after block `height` and the decided block `height + 1` whose header commits to
    it (`state_root`) and whose certificate makes that commitment verifiable."""

    height: U64
    snapshot: bytes  # canonical encoding of an AppSnapshot
    next_block: DecisionPacket


class CheckpointInvalid(ValueError):
    """A served checkpoint does not prove what it claims (one line, for the log)."""


def verify_checkpoint(
    cp: Checkpoint,
    vset: ValidatorSet,
    netuid: int,
    epoch_blocks: int,
    *,
    validators_as_miners: bool | None = None,
) -> AppState:
    """The state a checkpoint proves, or CheckpointInvalid, for a reader that knows the set
    certifying the block after it (`vset`): its own records. `validators_as_miners`, when given,
    is the reader's genesis value, which the snapshot must carry too."""
    _check_certificate(cp, vset, netuid)  # before the (possibly large) snapshot is restored
    return _open_checkpoint(cp, netuid, epoch_blocks, validators_as_miners)


def verify_stranger_checkpoint(
    cp: Checkpoint,
    trust: ValidatorSet,
    netuid: int,
    epoch_blocks: int,
    *,
    validators_as_miners: bool | None = None,
) -> AppState:
    """The state a checkpoint from a peer or the DHT proves, for a node that knows only the
    chain's validators of today (`trust`), or CheckpointInvalid.

    The consensus set moves with the decided metagraph (pipeline.validator_sets), so the set that
    certified an older block need not be today's. Two checks instead: the block after the
    checkpoint carries a commit certificate of a quorum of the set the checkpoint itself names
    for that height (it is a decision of that network, under its own rules), and its signers
    hold more than a third of `trust`'s stake (so, if fewer than a third of today's stake is
    Byzantine, an honest validator of today signed it, and honest validators only sign what
    they decide). The state root binds everything else, including the named set."""
    from validator_node.pipeline.validator_sets import consensus_set

    signers = [s.signer for s in cp.next_block.certificate.signatures]
    vouching = trust.stake_of_all(signers)
    if not trust.exceeds_one_third(vouching):  # cheap, before the snapshot is restored
        raise CheckpointInvalid(
            f"its signers hold {vouching} of the chain's {trust.total_stake} validator stake"
            " (more than a third is needed)"
        )
    state = _open_checkpoint(cp, netuid, epoch_blocks, validators_as_miners)
    named = consensus_set(state, cp.height, cp.height + 1, trust)
    assert named is not None  # the height after a state is in its epoch or the next
    _check_certificate(cp, named, netuid)
    return state


def _check_certificate(cp: Checkpoint, vset: ValidatorSet, netuid: int) -> None:
    nb = cp.next_block
    try:
        verify_certificate(
            nb.certificate, vset, netuid, height=cp.height + 1, block_hash=hashlib.sha256(nb.block).digest()
        )
    except CertificateError as exc:
        raise CheckpointInvalid(f"certificate of block {cp.height + 1}: {exc}") from None


def _open_checkpoint(
    cp: Checkpoint, netuid: int, epoch_blocks: int, validators_as_miners: bool | None = None
) -> AppState:
    """Decode a checkpoint and check that the block after it commits to its snapshot (no
    signature checked yet)."""
    from validator_node.block import Block

    nb = cp.next_block
    try:
        block = decode(nb.block, Block)
        snap = decode(cp.snapshot, AppSnapshot)
    except WireError as exc:
        raise CheckpointInvalid(f"undecodable: {exc}") from None
    if block.height != cp.height + 1:
        raise CheckpointInvalid(f"block {block.height} does not follow checkpoint height {cp.height}")
    if hashlib.sha256(cp.snapshot).digest() != block.state_root:
        raise CheckpointInvalid("snapshot does not match the state root the certified block commits to")
    if snap.netuid != netuid or snap.epoch_blocks != epoch_blocks:
        raise CheckpointInvalid("snapshot is for another subnet or epoch length")
    if validators_as_miners is not None and snap.validators_as_miners != validators_as_miners:
        raise CheckpointInvalid(
            f"snapshot has validators_as_miners = {snap.validators_as_miners}, this network's genesis"
            f" {validators_as_miners}"
        )
    try:
        return restore(snap)
    except ValueError as exc:  # e.g. a validator row with no stake
        raise CheckpointInvalid(f"snapshot does not restore: {exc}") from None
