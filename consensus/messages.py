"""Consensus wire messages.

Signed statements (each inside a `SignedEnvelope`, signed by the validator's hotkey):
  PrePrepare(height, view, block_hash)     the leader's proposal
  Vote(phase, height, view, block_hash)    PREPARE or COMMIT
  ViewChange(height, view, prepared_*)      "I leave for `view`; the highest value I prepared is ..."
  SyncRequest(height)                       "send me decided blocks from `height`"

Packets are what travels between nodes. They carry the signed statements plus what lets a
receiver check them without another round trip: block bytes (bound by hash), prepared
certificates, the view changes that justify a new view. Block bytes are never signed directly:
signatures cover the block's hash, so a certificate stays small.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

from wire.codec import U8, U32, U64, Bytes32, Bytes64, Len, wire_message
from wire.envelope import SignedEnvelope

PHASE_PREPARE = 1
PHASE_COMMIT = 2
PHASE_NAMES = {PHASE_PREPARE: "prepare", PHASE_COMMIT: "commit"}

MAX_BLOCK_SIZE = 1024 * 1024
MAX_VALIDATORS = 256
_BLOCK = Annotated[bytes, Len(0, MAX_BLOCK_SIZE)]
_PACKET_CAP = 6 * 1024 * 1024


@wire_message("consensus.preprepare", version=1, max_size=256, domain="consensus")
class PrePrepare:
    height: U64
    view: U32
    block_hash: Bytes32


@wire_message("consensus.vote", version=1, max_size=256, domain="consensus")
class Vote:
    phase: U8
    height: U64
    view: U32
    block_hash: Bytes32


@wire_message("consensus.viewchange", version=1, max_size=256, domain="consensus")
class ViewChange:
    height: U64
    view: U32
    prepared_view: U32 | None
    prepared_hash: Bytes32 | None


@wire_message("consensus.syncrequest", version=1, max_size=256, domain="consensus")
class SyncRequest:
    height: U64


@wire_message("consensus.sig", version=1, max_size=256)
class VoteSignature:
    signer: Bytes32
    signature: Bytes64


@wire_message("consensus.certificate", version=1, max_size=64 * 1024)
class Certificate:
    """>2/3-stake signatures on Vote(phase, height, view, block_hash); verifiable on its own."""

    phase: U8
    height: U64
    view: U32
    block_hash: Bytes32
    signatures: Annotated[tuple[VoteSignature, ...], Len(1, MAX_VALIDATORS)]


@wire_message("consensus.viewchangepacket", version=1, max_size=MAX_BLOCK_SIZE + 80 * 1024)
class ViewChangePacket:
    view_change: SignedEnvelope
    prepared: Certificate | None
    block: _BLOCK | None


@wire_message("consensus.proposal", version=1, max_size=_PACKET_CAP)
class ProposalPacket:
    pre_prepare: SignedEnvelope
    block: _BLOCK
    justification: Annotated[tuple[ViewChangePacket, ...], Len(0, MAX_VALIDATORS)]


@wire_message("consensus.votepacket", version=1, max_size=1024)
class VotePacket:
    vote: SignedEnvelope


@wire_message("consensus.decision", version=1, max_size=MAX_BLOCK_SIZE + 80 * 1024)
class DecisionPacket:
    block: _BLOCK
    certificate: Certificate


@wire_message("consensus.syncpacket", version=1, max_size=1024)
class SyncPacket:
    request: SignedEnvelope


@wire_message("consensus.equivocation", version=1, max_size=8 * 1024)
class Equivocation:
    """Two conflicting statements signed by one validator: proof on its own, shown to operators."""

    first: SignedEnvelope
    second: SignedEnvelope


def block_hash_of(block: bytes) -> bytes:
    """Blocks are opaque to consensus and identified (and signed) by their SHA-256."""
    return hashlib.sha256(block).digest()


PACKET_TYPES: tuple[type, ...] = (ProposalPacket, VotePacket, ViewChangePacket, DecisionPacket, SyncPacket)

# --- durable vote record ------------------------------------------------------------------------

RECORD_PROPOSAL = 0
RECORD_PREPARE = PHASE_PREPARE
RECORD_COMMIT = PHASE_COMMIT
RECORD_VIEW_CHANGE = 3


@wire_message("consensus.voterecord", version=1, max_size=MAX_BLOCK_SIZE + 80 * 1024)
class VoteRecord:
    """What a replica signed, written durably *before* the signature leaves the process.

    On restart the replica rebuilds from these records, so it re-sends exactly what it signed and
    never signs a different value for the same (height, view, kind). A COMMIT or VIEW_CHANGE
    record carries the prepared certificate and block, which the replica must still report in a
    later view change for PBFT's safety argument to hold across a crash.
    """

    kind: U8
    height: U64
    view: U32
    block_hash: Bytes32 | None
    envelope: SignedEnvelope
    prepared: Certificate | None
    block: _BLOCK | None
