"""Everything a replica knows about the one height it is deciding: blocks, votes, view changes.

Kept separate from the replica's control flow so the tallying rules (one vote per signer per
value, at most two values per signer before it is ignored, equivocation detection) live in one
small place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from consensus.messages import Certificate, ViewChangePacket
from consensus.validators import ValidatorSet
from wire.envelope import SignedEnvelope

# statement kinds for the equivocation map
KIND_PREPREPARE = 0
KIND_VIEW_CHANGE = 3


@dataclass
class RoundState:
    height: int
    vset: ValidatorSet
    blocks: dict[bytes, bytes] = field(default_factory=dict)
    # view -> hash of the proposal this replica accepted in that view
    accepted: dict[int, bytes] = field(default_factory=dict)
    # (phase, view, block_hash) -> signer -> signature
    votes: dict[tuple[int, int, bytes], dict[bytes, bytes]] = field(default_factory=dict)
    # (phase, view, block_hash) -> stake behind it (kept incrementally: checked on every vote)
    vote_stake: dict[tuple[int, int, bytes], int] = field(default_factory=dict)
    # (kind, view, signer) -> (first value, its envelope); for equivocation detection
    first_seen: dict[tuple[int, int, bytes], tuple[bytes, SignedEnvelope]] = field(default_factory=dict)
    # (kind, view, signer) -> number of distinct values seen (capped)
    distinct: dict[tuple[int, int, bytes], int] = field(default_factory=dict)
    # view -> signer -> verified view-change packet (block stripped)
    view_changes: dict[int, dict[bytes, ViewChangePacket]] = field(default_factory=dict)
    # highest prepared certificate this replica holds, and its block
    prepared: Certificate | None = None
    prepared_block: bytes | None = None
    # (kind, view) -> (block_hash or b"", envelope) of what this replica signed
    signed: dict[tuple[int, int], tuple[bytes, SignedEnvelope]] = field(default_factory=dict)
    new_view_sent: set[int] = field(default_factory=set)
    proposal_requested: set[int] = field(default_factory=set)
    justification_ok: set[tuple[int, bytes]] = field(default_factory=set)
    # view -> proposal hashes whose justification was verified (at most two: see _justified)
    justifications_tried: dict[int, set[bytes]] = field(default_factory=dict)
    # (signer, body, signature) of a view change verified in a justification -> its certificate
    verified_view_changes: dict[tuple[bytes, bytes, bytes], Certificate | None] = field(default_factory=dict)

    def observe(self, kind: int, view: int, signer: bytes, value: bytes, env: SignedEnvelope) -> str:
        """Classify a signed statement: 'new', 'duplicate', 'conflict' (first conflict) or 'flood'.

        A signer gets at most two distinct values per (kind, view): the first conflict is
        evidence, anything beyond is dropped so that a Byzantine validator cannot grow our memory.
        """
        key = (kind, view, signer)
        first = self.first_seen.get(key)
        if first is None:
            self.first_seen[key] = (value, env)
            self.distinct[key] = 1
            return "new"
        if first[0] == value:
            return "duplicate"
        n = self.distinct[key]
        if n >= 2:
            return "flood"
        self.distinct[key] = n + 1
        return "conflict"

    def seen(self, kind: int, view: int, signer: bytes, value: bytes) -> str | None:
        """What `observe` would say, without recording anything: 'duplicate' or 'flood' if the
        statement needs no further work (so no signature check), else None."""
        first = self.first_seen.get((kind, view, signer))
        if first is None:
            return None
        if first[0] == value:
            return "duplicate"
        return "flood" if self.distinct[(kind, view, signer)] >= 2 else None

    def add_vote(self, phase: int, view: int, block_hash: bytes, signer: bytes, signature: bytes) -> int:
        """Record a vote; return the stake now behind (phase, view, block_hash)."""
        key = (phase, view, block_hash)
        tally = self.votes.setdefault(key, {})
        if signer not in tally:
            tally[signer] = signature
            self.vote_stake[key] = self.vote_stake.get(key, 0) + self.vset.stake_of(signer)
        return self.vote_stake[key]

    def tally(self, phase: int, view: int, block_hash: bytes) -> dict[bytes, bytes]:
        return self.votes.get((phase, view, block_hash), {})

    def has_quorum(self, phase: int, view: int, block_hash: bytes) -> bool:
        return self.vset.is_quorum(self.vote_stake.get((phase, view, block_hash), 0))

    def keep_prepared(self, cert: Certificate, block: bytes | None) -> None:
        if self.prepared is None or cert.view > self.prepared.view:
            self.prepared = cert
            self.prepared_block = block
