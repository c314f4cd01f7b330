"""Application messages: miner submissions, evaluation attestations, and the block body.

Every item a block carries is self-verifying: submissions and attestations are signed envelopes
(miner and validator hotkeys), registry items are sudo-signed, and the epoch's metagraph snapshot
and weights are re-derived by every validator before it prepares the block.
"""

from __future__ import annotations

from typing import Annotated

from registry.manifest import RegistryAction
from wire.codec import U8, U16, U64, Bytes32, Len, Range, wire_message
from wire.envelope import SignedEnvelope

MAX_INLINE_PAYLOAD = 256 * 1024
MAX_REF_PAYLOAD = 16 * 1024 * 1024  # larger payloads travel by hash (the DHT), never in a block
MAX_ITEMS = 512
MAX_EVIDENCE = 512 * 1024  # one bundle; a block carries agreed bundles within its byte budget
MAX_EVIDENCE_VOTES = 256
I64 = Annotated[int, Range(-(2**63), 2**63 - 1)]


@wire_message("app.payloadref", version=1, max_size=128)
class PayloadRef:
    """A payload too large for a block: its sha256 and size, and the digest in its DHT key (the
    payload's own sha256 when it fits one record, else its chunk manifest's: `dht.records.blob_key`)."""

    sha256: Bytes32
    size: Annotated[int, Range(MAX_INLINE_PAYLOAD + 1, MAX_REF_PAYLOAD)]
    dht_key: Bytes32


@wire_message("app.submission", version=2, max_size=MAX_INLINE_PAYLOAD + 1024, domain="miner-submission")
class Submission:
    """A miner's answer to a challenge for one epoch (signed by the miner's registered hotkey).

    Up to 256 KiB the payload is inline; above, `payload` is empty and `payload_ref` names it, so
    a block stays small whatever miners send (one canonical form: a ref is only valid above the
    inline cap)."""

    challenge_id: Annotated[str, Len(1, 64)]
    epoch: U64
    nonce: U64
    payload: Annotated[bytes, Len(0, MAX_INLINE_PAYLOAD)]
    payload_ref: PayloadRef | None = None


@wire_message("app.largesubmission", version=1, max_size=MAX_REF_PAYLOAD + 2048)
class LargeSubmission:
    """What a miner hands a validator for a payload above the inline cap: the signed submission
    (with its `payload_ref`) and the bytes. The validator checks both, keeps the bytes and puts
    them in the DHT, and gossips only the envelope."""

    envelope: SignedEnvelope
    payload: Annotated[bytes, Len(MAX_INLINE_PAYLOAD + 1, MAX_REF_PAYLOAD)]


@wire_message("app.attestation", version=1, max_size=512, domain="eval-attestation")
class Attestation:
    """A validator's result for one admitted submission: a score (1e9 = 1.0) or a negative error."""

    epoch: U64
    submission_id: Bytes32
    score: I64
    error_kind: Annotated[str, Len(1, 32)] | None


@wire_message("app.registryitem", version=1, max_size=17 * 1024 * 1024)
class RegistryItem:
    """A sudo-signed registry action, with the module bytes an add/update needs (checked by hash)."""

    action: RegistryAction
    module: Annotated[bytes, Len(1, 16 * 1024 * 1024)] | None


@wire_message("app.neuron", version=1, max_size=256)
class NeuronEntry:
    uid: U16
    hotkey: Bytes32
    stake: U64
    validator_permit: bool


@wire_message("app.epochinfo", version=2, max_size=512 * 1024)
class EpochInfo:
    """The chain as the epoch's first block saw it: neurons and the weight-relevant parameters.

    The registry follows it at every epoch start (`Draft.open_epoch`): its mechanism count and,
    when given, the owner's hotkey (the registry's sudo key), so a chain change reaches the
    registry through a decided block, identically on every validator."""

    epoch: U64
    neurons: Annotated[tuple[NeuronEntry, ...], Len(1, 4096)]
    owner_uid: U16
    min_allowed_weights: U16
    max_weight_limit: U16
    mechanism_count: U8
    version_key: U64
    owner_hotkey: Bytes32 | None = None  # None: keep the registry's sudo key


@wire_message("app.weightrow", version=1, max_size=64 * 1024)
class WeightRowMsg:
    mechid: U8
    uids: Annotated[tuple[U16, ...], Len(0, 4096)]
    weights: Annotated[tuple[U16, ...], Len(0, 4096)]


@wire_message("app.epochweights", version=2, max_size=512 * 1024)
class EpochWeights:
    """The epoch's decided weight matrix, one row per mechanism.

    `fallback` says why the rows are not simply the scores (`pipeline.state.derive_weights`):
    challenges on mechanisms the chain no longer has were dropped, or no vector over the subnet's
    UIDs is chain-valid (then every row is empty: each validator sets a self-weight, the one
    vector the chain always accepts). There is a valid weights block for every decided input."""

    epoch: U64
    rows: Annotated[tuple[WeightRowMsg, ...], Len(1, 256)]
    fallback: Annotated[str, Len(1, 512)] | None = None


@wire_message("app.evidencevote", version=1, max_size=512, domain="evidence-vote")
class EvidenceVote:
    """A validator's statement: the evidence it observed for this challenge and epoch hashes to this.

    An epoch-scored challenge (one whose module exports `aggregate`) is scored over an evidence
    bundle; the bundle counts once validators holding a quorum of stake have voted for its hash."""

    challenge_id: Annotated[str, Len(1, 64)]
    epoch: U64
    bundle_sha256: Bytes32


@wire_message("app.evidence", version=1, max_size=MAX_EVIDENCE + 1024)
class EvidenceBundle:
    """The bytes behind a voted hash. Unsigned: it is admitted only under a vote naming its hash."""

    challenge_id: Annotated[str, Len(1, 64)]
    epoch: U64
    bundle: Annotated[bytes, Len(1, MAX_EVIDENCE)]


@wire_message("app.body", version=2, max_size=1024 * 1024)
class BlockBody:
    epoch_info: EpochInfo | None
    registry: Annotated[tuple[RegistryItem, ...], Len(0, 16)]
    submissions: Annotated[tuple[SignedEnvelope, ...], Len(0, MAX_ITEMS)]
    attestations: Annotated[tuple[SignedEnvelope, ...], Len(0, 8 * MAX_ITEMS)]
    weights: EpochWeights | None
    evidence_votes: Annotated[tuple[SignedEnvelope, ...], Len(0, MAX_EVIDENCE_VOTES)] = ()
    evidence: Annotated[tuple[EvidenceBundle, ...], Len(0, 16)] = ()  # agreed ones only: one per challenge


EMPTY_BODY = BlockBody(None, (), (), (), None)

# What travels on the app channel between validators and from miners / the owner to validators.
APP_GOSSIP_TYPES: tuple[type, ...] = (SignedEnvelope, RegistryItem, EvidenceBundle)
# What a miner or the owner may send on the submit protocol.
SUBMIT_TYPES: tuple[type, ...] = (SignedEnvelope, RegistryItem, LargeSubmission)
