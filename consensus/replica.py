"""A stake-weighted PBFT replica as a sans-I/O state machine.

Inputs: `start(now)`, `on_message(packet, now)`, `on_timer(now)`, `propose(block)`.
Outputs: lists of actions (see `consensus.actions`). No clock reads, no I/O, no randomness.

One consensus instance runs per height. Within a height, views proceed as in PBFT:

* the leader of (height, view) broadcasts a PrePrepare with the block;
* replicas that accept it (right leader, valid block, justified view) broadcast PREPARE;
* a quorum of PREPAREs makes the block *prepared*: the replica keeps the certificate and
  broadcasts COMMIT;
* a quorum of COMMITs for any view decides the block (the commit certificate is the proof);
* on timeout a replica broadcasts a ViewChange carrying its highest prepared certificate; the new
  leader, on a quorum of view changes, re-proposes the highest prepared block (or a fresh one if
  none) with the view changes as justification.

Safety rests on two invariants enforced in `_sign`: a replica never signs two different values
for one (height, view, kind), and it reports the highest prepared certificate it ever held, even
across a crash (the durable vote record carries both).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from consensus.actions import (
    Action,
    Broadcast,
    Decide,
    PersistVote,
    Rejected,
    ReportEvidence,
    RequestProposal,
)
from consensus.catch_up import CatchUpRules
from consensus.certificates import build_certificate
from consensus.crypto import Scheme, Signer, Sr25519Scheme, open_signed, seal
from consensus.messages import (
    PACKET_TYPES,
    PHASE_COMMIT,
    PHASE_PREPARE,
    RECORD_PROPOSAL,
    Certificate,
    DecisionPacket,
    Equivocation,
    PrePrepare,
    ProposalPacket,
    SyncPacket,
    ViewChange,
    ViewChangePacket,
    Vote,
    VotePacket,
    VoteRecord,
    block_hash_of,
)
from consensus.recovery import RecoveryRules
from consensus.round_state import KIND_PREPREPARE, KIND_VIEW_CHANGE, RoundState
from consensus.send_budget import SendBudget, SendLimits
from consensus.validators import ValidatorSet
from consensus.view_change import ViewChangeRules
from wire.codec import decode, decode_any
from wire.errors import WireError

BlockValidator = Callable[[int, bytes], str | None]
ValidatorSets = Callable[[int], ValidatorSet]


@dataclass(frozen=True)
class ReplicaConfig:
    netuid: int
    base_timeout: float = 2.0
    max_timeout_exponent: int = 6
    future_heights: int = 32
    max_view_ahead: int = 64
    decided_window: int = 256
    sync_batch: int = 32
    send_limits: SendLimits = field(default_factory=SendLimits)

    def timeout(self, view: int) -> float:
        return self.base_timeout * (2 ** min(view, self.max_timeout_exponent))


class Replica(ViewChangeRules, CatchUpRules, RecoveryRules):
    def __init__(
        self,
        signer: Signer,
        validator_sets: ValidatorSets,
        validate_block: BlockValidator,
        config: ReplicaConfig,
        *,
        scheme: Scheme | None = None,
        committed_height: int = 0,
        records: Iterable[VoteRecord] = (),
        decisions: Callable[[int], DecisionPacket | None] | None = None,
    ) -> None:
        """`decisions` looks up decided blocks older than the in-memory window (or from before a
        restart) in the application's store, so this replica can still help laggards."""
        self.signer = signer
        self.me = signer.public_key
        self.validator_sets = validator_sets
        self.validate_block = validate_block
        self.cfg = config
        self.scheme = scheme or Sr25519Scheme()
        self.height = committed_height + 1
        self.view = 0
        self.in_view_change = False
        self.deadline = float("inf")
        self.decided: dict[int, DecisionPacket] = {}
        self._decisions = decisions
        self._records: dict[int, list[VoteRecord]] = {}
        for r in records:
            if r.height > committed_height:
                self._records.setdefault(r.height, []).append(r)
        self._future: dict[int, list[Any]] = {}
        self._sync_asked: dict[tuple[bytes, int], float] = {}
        # what peers can make us send; a height is re-sent to one peer at most once a base timeout
        self._budget = SendBudget(replace(config.send_limits, resend_after=config.base_timeout))
        # height -> the signed statements buffered for it, so a replayed copy is not verified again
        self._future_seen: dict[int, set[tuple[bytes, bytes]]] = {}
        self._pending_proposal: tuple[int, int] | None = None
        self.round = RoundState(self.height, validator_sets(self.height))
        # the highest height each validator of the current set signed a verified statement for:
        # for operators (is a peer behind, or silent?), never for the protocol; one entry per member
        self.peer_heights: dict[bytes, int] = {}

    # ------------------------------------------------------------------ inputs

    def start(self, now: float) -> list[Action]:
        """Begin (or resume after a restart) deciding `self.height`."""
        out: list[Action] = []
        self._now = now
        self._enter_height(self.height, now, out, resumed=True)
        return out

    def on_message(self, packet: Any, now: float) -> list[Action]:
        out: list[Action] = []
        self._now = now
        self._drain(now, out)
        if isinstance(packet, bytes | bytearray | memoryview):
            try:
                packet = decode_any(bytes(packet), PACKET_TYPES)
            except WireError as exc:
                return [Rejected("malformed", str(exc))]
        try:
            self._dispatch(packet, now, out)
        except WireError as exc:
            out.append(Rejected("malformed", str(exc)))
        return out

    def on_timer(self, now: float) -> list[Action]:
        out: list[Action] = []
        self._now = now
        self._drain(now, out)
        if now >= self.deadline:
            self._start_view_change(self.view + 1, now, out)
        return out

    def propose(self, block: bytes) -> list[Action]:
        """Answer a RequestProposal for the current (height, view) with a block."""
        out: list[Action] = []
        if self._pending_proposal != (self.height, self.view):
            return [Rejected("not_leader", f"no proposal pending for {self.height}/{self.view}")]
        self._pending_proposal = None
        self._send_proposal(block, out)
        return out

    def _drain(self, now: float, out: list[Action]) -> None:
        """Replay packets buffered for the current height (see Decide's contract)."""
        height = self.height
        self._future_seen.pop(height, None)
        for pkt in self._future.pop(height, []):
            if self.height != height:
                return
            self._dispatch(pkt, now, out)

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, pkt: Any, now: float, out: list[Action]) -> None:
        if isinstance(pkt, VotePacket):
            self._on_vote(pkt, now, out)
        elif isinstance(pkt, ProposalPacket):
            self._on_proposal(pkt, now, out)
        elif isinstance(pkt, ViewChangePacket):
            self._on_view_change(pkt, now, out)
        elif isinstance(pkt, DecisionPacket):
            self._on_decision(pkt, now, out)
        elif isinstance(pkt, SyncPacket):
            self._on_sync(pkt, out)
        else:
            out.append(Rejected("malformed", f"not a consensus packet: {type(pkt).__name__}"))

    def _verified(self, env: Any, cls: type, out: list[Action]) -> Any | None:
        try:
            msg = open_signed(env, cls, self.cfg.netuid, self.scheme)
        except WireError as exc:
            out.append(Rejected("bad_signature", str(exc), env.signer))
            return None
        return msg

    def _admit(self, env: Any, cls: type, pkt: Any, out: list[Action]) -> Any | None:
        """Decode a signed statement and return it if it is for the current height and verifies.

        Dedup comes before the signature check, keyed so that only a statement that verified can
        occupy a slot (a forger cannot block the real one):
        * heights already decided: dropped unverified (late votes are the common case), except a
          view change that could still help its stuck signer (`_help_wanted`, a budget check);
        * the current height: a statement whose (kind, view, signer, value) already counted, or
          whose signer already showed two values, is dropped (`RoundState.seen`);
        * future heights: a vote already buffered (same signer, body and signature: the whole
          packet) is dropped; new ones are verified, then buffered. Proposals and view changes
          carry more than their envelope (block, certificate, justification), so a copy with a
          valid envelope and junk beside it must not stand in for the real one: they are
          verified each time (the buffer's cap bounds them).
        """
        try:
            msg = decode(env.body, cls)
        except WireError as exc:
            out.append(Rejected("malformed", str(exc), env.signer))
            return None
        height, signer = msg.height, env.signer
        if height < self.height:
            if cls is not ViewChange or not self._help_wanted(signer, height):
                return None
        elif height == self.height:
            if self._counted_already(cls, msg, signer, pkt, out):
                return None
        elif cls is Vote and (signer, env.signature + env.body) in self._future_seen.get(height, ()):
            return None
        if height == self.height and signer not in self.round.vset:
            out.append(Rejected("unknown_signer", f"{signer.hex()[:16]} is not a validator", signer))
            return None
        msg = self._verified(env, cls, out)
        if msg is None:
            return None
        if signer != self.me:
            self._budget.reached(signer, height, self._now)
            if signer in self.round.vset and height > self.peer_heights.get(signer, -1):
                self.peer_heights[signer] = height
        key = (signer, env.signature + env.body) if cls is Vote else None
        if not self._route_height(height, signer, pkt, out, key):
            return None
        return msg

    def _counted_already(self, cls: type, msg: Any, signer: bytes, pkt: Any, out: list[Action]) -> bool:
        """True if an equal statement from `signer` was already verified and counted at this
        height (or the signer is past its two values): the copy needs no signature check."""
        if cls is Vote:
            if msg.phase not in (PHASE_PREPARE, PHASE_COMMIT):
                return False  # refused as malformed once verified
            kind, value = msg.phase, msg.block_hash
        elif cls is PrePrepare:
            kind, value = KIND_PREPREPARE, msg.block_hash
        else:
            kind = KIND_VIEW_CHANGE
            value = (msg.prepared_view or 0).to_bytes(4, "big") + (msg.prepared_hash or b"")
        verdict = self.round.seen(kind, msg.view, signer, value)
        if verdict == "duplicate" and cls is ViewChange and pkt.block is not None:
            self._attach_prepared_block(msg, pkt.block, out)  # the copy sent to the leader
        return verdict is not None

    def _member(self, signer: bytes, out: list[Action], vset: ValidatorSet | None = None) -> bool:
        if signer in (vset or self.round.vset):
            return True
        out.append(Rejected("unknown_signer", f"{signer.hex()[:16]} is not a validator", signer))
        return False

    def _view_in_range(self, view: int, signer: bytes, out: list[Action]) -> bool:
        if view > self.view + self.cfg.max_view_ahead:
            out.append(Rejected("view_too_far", f"view {view}, at {self.view}", signer))
            return False
        return True

    def _equivocation(
        self, kind: int, view: int, signer: bytes, value: bytes, env: Any, out: list[Action]
    ) -> bool:
        """Return True if the statement is new; report evidence on the first conflict."""
        verdict = self.round.observe(kind, view, signer, value, env)
        if verdict == "conflict":
            first_env = self.round.first_seen[(kind, view, signer)][1]
            out.append(ReportEvidence(Equivocation(first=first_env, second=env)))
            return True  # a conflicting vote still counts for its own value (PBFT allows it)
        return verdict == "new"

    # ------------------------------------------------------------------ votes

    def _on_vote(self, pkt: VotePacket, now: float, out: list[Action]) -> None:
        env = pkt.vote
        vote = self._admit(env, Vote, pkt, out)
        if vote is None:
            return
        if vote.phase not in (PHASE_PREPARE, PHASE_COMMIT):
            out.append(Rejected("malformed", f"unknown phase {vote.phase}", env.signer))
            return
        if not self._member(env.signer, out) or not self._view_in_range(vote.view, env.signer, out):
            return
        if not self._equivocation(vote.phase, vote.view, env.signer, vote.block_hash, env, out):
            return
        self.round.add_vote(vote.phase, vote.view, vote.block_hash, env.signer, env.signature)
        self._progress(vote.view, vote.block_hash, now, out)

    def _progress(self, view: int, block_hash: bytes, now: float, out: list[Action]) -> None:
        """Re-evaluate the prepared and committed predicates for (view, block_hash)."""
        rs = self.round
        if (
            view == self.view
            and not self.in_view_change
            and rs.accepted.get(view) == block_hash
            and (PHASE_COMMIT, view) not in rs.signed
            and rs.has_quorum(PHASE_PREPARE, view, block_hash)
        ):
            cert = build_certificate(
                PHASE_PREPARE, self.height, view, block_hash, rs.tally(PHASE_PREPARE, view, block_hash)
            )
            block = rs.blocks.get(block_hash)
            rs.keep_prepared(cert, block)
            self._vote(PHASE_COMMIT, view, block_hash, out, prepared=cert, block=block)
        if rs.has_quorum(PHASE_COMMIT, view, block_hash):
            block = rs.blocks.get(block_hash)
            if block is None:
                # certified but we never saw the block: fetch the decision from a signer
                for signer in sorted(rs.tally(PHASE_COMMIT, view, block_hash))[:2]:
                    self._ask_sync(signer, out)
                return
            cert = build_certificate(
                PHASE_COMMIT, self.height, view, block_hash, rs.tally(PHASE_COMMIT, view, block_hash)
            )
            self._decide(DecisionPacket(block=block, certificate=cert), now, out)

    def _vote(
        self,
        phase: int,
        view: int,
        block_hash: bytes,
        out: list[Action],
        *,
        prepared: Certificate | None = None,
        block: bytes | None = None,
    ) -> None:
        env = self._sign(
            phase, view, block_hash, Vote(phase, self.height, view, block_hash), out, prepared, block
        )
        if env is None:
            return
        out.append(Broadcast(VotePacket(vote=env)))
        self.round.observe(phase, view, self.me, block_hash, env)
        self.round.add_vote(phase, view, block_hash, self.me, env.signature)

    def _sign(
        self,
        kind: int,
        view: int,
        value: bytes,
        statement: Any,
        out: list[Action],
        prepared: Certificate | None = None,
        block: bytes | None = None,
    ) -> Any | None:
        """Sign a statement at most once per (kind, view): the replica's central safety guard.

        A replica outside this height's set (a validator in the epoch before it joins, or after
        it leaves) signs nothing: its signature weighs nothing, and its own vote in the commit
        certificate it decides with would make that certificate fail verification elsewhere."""
        if self.me not in self.round.vset:
            return None
        if (kind, view) in self.round.signed:
            return None  # already signed this (kind, view): never sign a second value
        env = seal(statement, self.signer, self.cfg.netuid)
        self.round.signed[(kind, view)] = (value, env)
        rec = VoteRecord(
            kind=kind,
            height=self.height,
            view=view,
            block_hash=value if len(value) == 32 else None,
            envelope=env,
            prepared=prepared,
            block=block,
        )
        out.append(PersistVote(rec))
        return env

    # ------------------------------------------------------------------ proposals

    def _send_proposal(self, block: bytes, out: list[Action]) -> None:
        view = self.view
        bh = block_hash_of(block)
        env = self._sign(RECORD_PROPOSAL, view, bh, PrePrepare(self.height, view, bh), out, None, block)
        if env is None:
            return
        justification: tuple[ViewChangePacket, ...] = ()
        if view > 0:
            vcs = self.round.view_changes.get(view, {})
            justification = tuple(vcs[k] for k in sorted(vcs))
        pkt = ProposalPacket(pre_prepare=env, block=block, justification=justification)
        out.append(Broadcast(pkt))
        self.round.justification_ok.add((view, bh))
        self._accept_proposal(view, bh, block, env, out)

    def _on_proposal(self, pkt: ProposalPacket, now: float, out: list[Action]) -> None:
        env = pkt.pre_prepare
        pp = self._admit(env, PrePrepare, pkt, out)
        if pp is None:
            return
        if not self._member(env.signer, out) or not self._view_in_range(pp.view, env.signer, out):
            return
        if env.signer != self.round.vset.leader(pp.height, pp.view):
            out.append(Rejected("not_leader", f"{env.signer.hex()[:16]} does not lead view {pp.view}"))
            return
        if block_hash_of(pkt.block) != pp.block_hash:
            out.append(Rejected("block_hash_mismatch", f"proposal {pp.height}/{pp.view}", env.signer))
            return
        if pp.view < self.view or pp.view in self.round.accepted:
            # stale, or already accepted for this view (still evidence if it conflicts)
            self._equivocation(KIND_PREPREPARE, pp.view, env.signer, pp.block_hash, env, out)
            return
        # the justification is checked before the proposal takes its (view, leader) slot: a copy
        # stripped of it by a relay must not make us drop the leader's real proposal as a duplicate
        if pp.view > 0 and not self._justified(pp, pkt, out):
            return
        if not self._equivocation(KIND_PREPREPARE, pp.view, env.signer, pp.block_hash, env, out):
            return
        if pp.view > self.view or self.in_view_change:
            self._enter_view(pp.view, now, out)
        self._accept_proposal(pp.view, pp.block_hash, pkt.block, env, out)

    def _accept_proposal(self, view: int, bh: bytes, block: bytes, env: Any, out: list[Action]) -> None:
        rs = self.round
        if view != self.view or self.in_view_change or view in rs.accepted:
            return
        reason = self.validate_block(self.height, block)
        if reason is not None:
            out.append(Rejected("invalid_block", f"{self.height}/{view}: {reason}", env.signer))
            return
        rs.blocks[bh] = block
        rs.accepted[view] = bh
        self._vote(PHASE_PREPARE, view, bh, out, block=block)
        self._progress(view, bh, self._now, out)

    # ------------------------------------------------------------------ decisions

    def _decide(self, decision: DecisionPacket, now: float, out: list[Action]) -> None:
        h = decision.certificate.height
        out.append(Decide(h, decision.block, decision.certificate))
        self.decided[h] = decision
        for old in [k for k in self.decided if k <= h - self.cfg.decided_window]:
            del self.decided[old]
        self._enter_height(h + 1, now, out)

    def _enter_height(self, height: int, now: float, out: list[Action], resumed: bool = False) -> None:
        if not resumed:
            self.height = height
            self.view = 0
            self.in_view_change = False
            self.round = RoundState(height, self.validator_sets(height))
        self._pending_proposal = None
        self._now = now
        self.deadline = now + self.cfg.timeout(self.view)
        self._restore(out)
        for h in [k for k in self._future if k < height]:
            del self._future[h]
        for h in [k for k in self._future_seen if k < height]:
            del self._future_seen[h]
        idle = not self.in_view_change and self.view == 0 and 0 not in self.round.accepted
        if idle and self.round.vset.leader(self.height, 0) == self.me:
            self._request_proposal(out)
        # Packets buffered for this height are replayed on the next input, not now: the driver
        # must first apply the Decide for the previous height, or blocks here would not validate.

    def _request_proposal(self, out: list[Action]) -> None:
        rs = self.round
        if (RECORD_PROPOSAL, self.view) in rs.signed or self.view in rs.proposal_requested:
            return
        rs.proposal_requested.add(self.view)
        self._pending_proposal = (self.height, self.view)
        out.append(RequestProposal(self.height, self.view))

    _now: float = 0.0
