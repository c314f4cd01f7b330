"""Quorum certificates: >2/3 of stake signed the same Vote. Verifiable with only a validator set.

Checkpoints and state sync rely on this: a node that was offline can check a decided block by
its commit certificate alone, without trusting whoever served it.
"""

from __future__ import annotations

from collections.abc import Mapping

from consensus.crypto import Scheme, Sr25519Scheme
from consensus.messages import PHASE_COMMIT, PHASE_NAMES, Certificate, Vote, VoteSignature
from consensus.validators import ValidatorSet
from wire.codec import encode
from wire.envelope import signing_bytes


class CertificateError(ValueError):
    """The certificate does not prove what it claims; the message says why."""


def vote_signing_bytes(netuid: int, phase: int, height: int, view: int, block_hash: bytes) -> bytes:
    body = encode(Vote(phase=phase, height=height, view=view, block_hash=block_hash))
    return signing_bytes(netuid, Vote, body)


def build_certificate(
    phase: int, height: int, view: int, block_hash: bytes, signatures: Mapping[bytes, bytes]
) -> Certificate:
    sigs = tuple(VoteSignature(signer=k, signature=signatures[k]) for k in sorted(signatures))
    return Certificate(phase=phase, height=height, view=view, block_hash=block_hash, signatures=sigs)


def verify_certificate(
    cert: Certificate,
    vset: ValidatorSet,
    netuid: int,
    scheme: Scheme | None = None,
    *,
    phase: int | None = PHASE_COMMIT,
    height: int | None = None,
    block_hash: bytes | None = None,
) -> None:
    """Raise CertificateError unless `cert` carries valid signatures from a quorum of `vset`."""
    signers = _checked_signers(cert, phase, height, block_hash)
    outsiders = [s for s in signers if s not in vset]
    if outsiders:
        raise CertificateError(f"{len(outsiders)} signer(s) are not in the validator set")
    stake = vset.stake_of_all(signers)
    if not vset.is_quorum(stake):
        raise CertificateError(f"signers hold {stake} of {vset.total_stake} stake, not a quorum")
    _check_signatures(cert, cert.signatures, netuid, scheme)


def verify_vouched(
    cert: Certificate,
    trust: ValidatorSet,
    netuid: int,
    scheme: Scheme | None = None,
    *,
    phase: int | None = PHASE_COMMIT,
    height: int | None = None,
    block_hash: bytes | None = None,
) -> None:
    """Raise CertificateError unless members of `trust` holding more than a third of its stake
    validly signed `cert` (other signers are ignored).

    For a reader that does not know the set that certified a height (a new node, whose only
    anchor is the chain's validators of today): if fewer than a third of `trust`'s stake is
    Byzantine, an honest validator signed, and honest validators sign only what they decided. It
    proves that the block was decided, not that `cert` is a quorum of the set of its height; the
    reader checks that against the state the block leads to."""
    _checked_signers(cert, phase, height, block_hash)
    known = [s for s in cert.signatures if s.signer in trust]
    stake = trust.stake_of_all(s.signer for s in known)
    if not trust.exceeds_one_third(stake):
        raise CertificateError(
            f"signers hold {stake} of the trusted {trust.total_stake} stake (more than a third is needed)"
        )
    _check_signatures(cert, tuple(known), netuid, scheme)


def _checked_signers(
    cert: Certificate, phase: int | None, height: int | None, block_hash: bytes | None
) -> list[bytes]:
    if phase is not None and cert.phase != phase:
        raise CertificateError(f"expected a {PHASE_NAMES.get(phase)} certificate, got phase {cert.phase}")
    if cert.phase not in PHASE_NAMES:
        raise CertificateError(f"unknown phase {cert.phase}")
    if height is not None and cert.height != height:
        raise CertificateError(f"certificate is for height {cert.height}, expected {height}")
    if block_hash is not None and cert.block_hash != block_hash:
        raise CertificateError("certificate is for a different block")
    signers = [s.signer for s in cert.signatures]
    if signers != sorted(set(signers)):
        raise CertificateError("signatures must be sorted by signer and unique")
    return signers


def _check_signatures(
    cert: Certificate, signatures: tuple[VoteSignature, ...], netuid: int, scheme: Scheme | None
) -> None:
    scheme = scheme or Sr25519Scheme()
    data = vote_signing_bytes(netuid, cert.phase, cert.height, cert.view, cert.block_hash)
    for s in signatures:
        if not scheme.verify(s.signer, data, s.signature):
            raise CertificateError(f"bad signature from {s.signer.hex()[:16]}")
