"""Rebuilding a replica's own statements from its durable vote record after a restart.

A mixin of `Replica`. What the replica signed before the crash is signed again nowhere: it is
re-sent byte for byte, and the (kind, view) slots it occupied stay occupied, so the restarted
replica can never sign a second value for them. Its highest prepared certificate comes back too.
"""

from __future__ import annotations

from typing import Any

from consensus.actions import Action, Broadcast
from consensus.messages import (
    PHASE_COMMIT,
    PHASE_PREPARE,
    RECORD_PROPOSAL,
    RECORD_VIEW_CHANGE,
    ProposalPacket,
    ViewChangePacket,
    VotePacket,
    VoteRecord,
)
from consensus.replica_fields import ReplicaFields


class RecoveryRules(ReplicaFields):
    _records: dict[int, list[VoteRecord]]

    def _restore(self, out: list[Action]) -> None:
        """Rebuild this height's own statements from the durable vote record and re-send them."""
        records = self._records.pop(self.height, [])
        if not records:
            return
        rs = self.round
        ordered = sorted(records, key=_signing_order)
        for r in ordered:
            value = r.block_hash if r.block_hash is not None else _vc_value(r)
            rs.signed[(r.kind, r.view)] = (value, r.envelope)
            if r.prepared is not None:
                rs.keep_prepared(r.prepared, r.block)
            if r.block is not None and r.block_hash is not None:
                rs.blocks[r.block_hash] = r.block
            if r.kind == PHASE_PREPARE and r.block_hash is not None:
                rs.accepted[r.view] = r.block_hash
                rs.add_vote(PHASE_PREPARE, r.view, r.block_hash, self.me, r.envelope.signature)
            elif r.kind == PHASE_COMMIT and r.block_hash is not None:
                rs.add_vote(PHASE_COMMIT, r.view, r.block_hash, self.me, r.envelope.signature)
            out.append(Broadcast(_packet_for(r)))
        last_view, last_kind = ordered[-1].view, ordered[-1].kind  # what it signed last
        self.view = last_view
        self.in_view_change = last_kind == RECORD_VIEW_CHANGE
        if self.in_view_change:
            rec = next(r for r in records if r.kind == RECORD_VIEW_CHANGE and r.view == last_view)
            rs.view_changes.setdefault(last_view, {})[self.me] = ViewChangePacket(
                view_change=rec.envelope, prepared=rec.prepared, block=None
            )
        if any(r.kind == RECORD_PROPOSAL for r in records):
            rs.proposal_requested.update(r.view for r in records if r.kind == RECORD_PROPOSAL)
        self.deadline = self._now + self.cfg.timeout(self.view)


#: the order in which a replica signs within one view: it enters view v by signing VIEW_CHANGE(v)
#: (view 0 has none), then the leader's proposal, then PREPARE, then COMMIT. Record kinds are
#: numbered otherwise (VIEW_CHANGE = 3), so sorting by kind would put the view change last and
#: restart a replica that prepared in v "in a view change", unable to commit in v.
_RANK = {RECORD_VIEW_CHANGE: 0, RECORD_PROPOSAL: 1, PHASE_PREPARE: 2, PHASE_COMMIT: 3}


def _signing_order(r: VoteRecord) -> tuple[int, int]:
    return (r.view, _RANK[r.kind])


def _vc_value(r: VoteRecord) -> bytes:
    p = r.prepared
    return (0 if p is None else p.view).to_bytes(4, "big") + (b"" if p is None else p.block_hash)


def _packet_for(r: VoteRecord) -> Any:
    if r.kind == RECORD_PROPOSAL:
        return ProposalPacket(pre_prepare=r.envelope, block=r.block or b"", justification=())
    if r.kind == RECORD_VIEW_CHANGE:
        return ViewChangePacket(view_change=r.envelope, prepared=r.prepared, block=None)
    return VotePacket(vote=r.envelope)
