"""Binding a libp2p peer id to a Bittensor hotkey.

libp2p has no sr25519 keys, so a node's peer id is an Ed25519 key of its own. The node proves
which hotkey it speaks for with a hotkey-signed attestation naming the subnet, the peer id, its
addresses and an expiry (a chain block). A receiver admits the peer to consensus only if the
attestation verifies, the peer id is the one the encrypted connection authenticated, it has not
expired, and the hotkey holds a validator permit in the current metagraph.
"""

from __future__ import annotations

from typing import Annotated

from wire.codec import U16, U64, Len, wire_message
from wire.envelope import SignedEnvelope, open_envelope, seal
from wire.errors import WireError
from wire.keys import Hotkey


@wire_message("p2p.attestation", version=1, max_size=2048, domain="peer-attestation")
class PeerAttestation:
    netuid: U16
    peer_id: Annotated[bytes, Len(1, 64)]
    addrs: Annotated[tuple[Annotated[str, Len(1, 200)], ...], Len(0, 8)]
    expires_block: U64


class AttestationRefused(ValueError):
    """Why a peer's attestation was refused (one line, for the log and a metric label)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class DuplicateHotkey(AttestationRefused):
    """A second node speaks for one hotkey (issue 13: one signer per hotkey): a peer attesting our
    own hotkey (`self`), or a second peer id attesting a validator we hold a live link with
    (`peer`). The host logs and counts these itself (`duplicate_hotkey_total{kind}`)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__("self" if kind == "self" else "duplicate_hotkey", detail)
        self.kind = kind


def attest(
    hotkey: Hotkey, netuid: int, peer_id: bytes, addrs: tuple[str, ...], expires_block: int
) -> SignedEnvelope:
    return seal(PeerAttestation(netuid, peer_id, addrs, expires_block), hotkey, netuid)


def check_attestation(
    env: SignedEnvelope,
    *,
    netuid: int,
    remote_peer_id: bytes,
    current_block: int,
    permitted: frozenset[bytes],
) -> PeerAttestation:
    """Return the attestation if it admits `remote_peer_id`, else raise AttestationRefused."""
    try:
        att = open_envelope(env, PeerAttestation, netuid)
    except WireError as exc:
        raise AttestationRefused("bad_attestation", str(exc)) from None
    if att.peer_id != remote_peer_id:
        raise AttestationRefused("peer_id_mismatch", "attestation names another peer id")
    if att.expires_block < current_block:
        raise AttestationRefused("attestation_expired", f"expired at block {att.expires_block}")
    if env.signer not in permitted:
        raise AttestationRefused("not_a_validator", f"{env.signer.hex()[:16]} has no validator permit")
    return att
