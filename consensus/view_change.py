"""PBFT view changes: leaving a view, proving what was prepared, and justifying a new view.

A mixin of `Replica` (split out because the rules for changing views are the subtle part of PBFT
and deserve a file of their own). Safety rests on two rules here: a view change reports the
highest prepared certificate the replica holds, and a new view must re-propose the highest
prepared block among the quorum of view changes that justify it.
"""

from __future__ import annotations

from consensus.actions import Action, Broadcast, Rejected, Send, ViewChanged
from consensus.certificates import CertificateError, verify_certificate
from consensus.messages import (
    PHASE_PREPARE,
    RECORD_VIEW_CHANGE,
    Certificate,
    PrePrepare,
    ProposalPacket,
    ViewChange,
    ViewChangePacket,
    block_hash_of,
)
from consensus.replica_fields import ReplicaFields
from consensus.round_state import KIND_VIEW_CHANGE
from wire.codec import decode
from wire.errors import WireError


class ViewChangeRules(ReplicaFields):
    def _justified(self, pp: PrePrepare, pkt: ProposalPacket, out: list[Action]) -> bool:
        """A proposal for view > 0 must carry a quorum of view changes and re-propose the
        highest prepared block among them (if any).

        Everything that needs no signature is checked first, on what the view changes claim
        (views, heights, distinct signers, a quorum of stake, the highest prepared block); only
        then are they verified, each at most once a height (`_held_view_change`). The leader can
        make us verify justifications for at most two blocks a view (as for any statement)."""
        rs = self.round
        if (pp.view, pp.block_hash) in rs.justification_ok:
            return True
        claims: list[ViewChange] = []
        for vcp in pkt.justification:
            try:
                claims.append(decode(vcp.view_change.body, ViewChange))
            except WireError:
                claims = []
                break
        signers = {vcp.view_change.signer for vcp in pkt.justification}
        if (
            len(claims) != len(pkt.justification)
            or len(signers) != len(claims)
            or any(vc.view != pp.view or vc.height != pp.height for vc in claims)
        ):
            out.append(Rejected("invalid_justification", "bad view change in new-view"))
            return False
        if not rs.vset.is_quorum(rs.vset.stake_of_all(s for s in signers if s in rs.vset)):
            out.append(Rejected("invalid_justification", f"new-view {pp.view} lacks a quorum"))
            return False
        best: tuple[int, bytes | None] | None = None
        for vc in claims:
            if vc.prepared_view is not None and (best is None or vc.prepared_view > best[0]):
                best = (vc.prepared_view, vc.prepared_hash)
        if best is not None and best[1] != pp.block_hash:
            out.append(Rejected("invalid_justification", f"new-view {pp.view} ignores a prepared block"))
            return False
        tried = rs.justifications_tried.setdefault(pp.view, set())
        if pp.block_hash not in tried and len(tried) >= 2:
            return False  # the leader is past two values for this view: nothing more is verified
        tried.add(pp.block_hash)
        for vcp in pkt.justification:
            if self._held_view_change(vcp) is None:
                if self._check_view_change(vcp, out) is None:
                    out.append(Rejected("invalid_justification", "bad view change in new-view"))
                    return False
                env = vcp.view_change
                rs.verified_view_changes[(env.signer, env.body, env.signature)] = vcp.prepared
        rs.justification_ok.add((pp.view, pp.block_hash))
        return True

    def _held_view_change(self, pkt: ViewChangePacket) -> ViewChange | None:
        """The view change in `pkt` if this replica already verified exactly it (same envelope,
        same certificate), so a new-view's justification costs no second check of it."""
        env = pkt.view_change
        try:
            vc = decode(env.body, ViewChange)
        except WireError:
            return None
        held = self.round.view_changes.get(vc.view, {}).get(env.signer)
        if held is not None and held.view_change == env and held.prepared == pkt.prepared:
            return vc
        verified = self.round.verified_view_changes.get((env.signer, env.body, env.signature), False)
        if verified is not False and verified == pkt.prepared and vc.height == self.height:
            return vc  # checked in an earlier justification (signature and certificate)
        return None

    def _check_view_change(
        self, pkt: ViewChangePacket, out: list[Action], opened: ViewChange | None = None
    ) -> ViewChange | None:
        env = pkt.view_change
        vc = opened if opened is not None else self._verified(env, ViewChange, out)
        if vc is None or not self._member(env.signer, out, self.validator_sets(vc.height)):
            return None
        if vc.prepared_view is None:
            if vc.prepared_hash is not None or pkt.prepared is not None:
                out.append(Rejected("invalid_certificate", "view change with a stray certificate"))
                return None
            return vc
        if vc.prepared_hash is None or pkt.prepared is None or vc.prepared_view >= vc.view:
            out.append(Rejected("invalid_certificate", "view change claims a prepared value without proof"))
            return None
        cert = pkt.prepared
        if cert.view != vc.prepared_view:
            out.append(Rejected("invalid_certificate", "prepared certificate view mismatch"))
            return None
        try:
            verify_certificate(
                cert,
                self.validator_sets(vc.height),
                self.cfg.netuid,
                self.scheme,
                phase=PHASE_PREPARE,
                height=vc.height,
                block_hash=vc.prepared_hash,
            )
        except CertificateError as exc:
            out.append(Rejected("invalid_certificate", str(exc), env.signer))
            return None
        return vc

    def _attach_prepared_block(
        self, vc: ViewChange, block: bytes, out: list[Action], check: bool = True
    ) -> bool:
        """Keep the block a (verified) view change says was prepared; the replica sends it only
        to the new leader, which needs it to re-propose. False if the block is not that one."""
        if vc.prepared_hash is None or block_hash_of(block) != vc.prepared_hash:
            return False
        if vc.prepared_hash not in self.round.blocks:
            self.round.blocks[vc.prepared_hash] = block
            if check:
                self._check_new_view(vc.view, out)
        return True

    def _on_view_change(self, pkt: ViewChangePacket, now: float, out: list[Action]) -> None:
        env = pkt.view_change
        opened = self._admit(env, ViewChange, pkt, out)
        if opened is None:
            return
        vc = self._check_view_change(pkt, out, opened)
        if vc is None or not self._view_in_range(vc.view, env.signer, out):
            return
        if pkt.block is not None and not self._attach_prepared_block(vc, pkt.block, out, check=False):
            out.append(Rejected("block_hash_mismatch", "view change block", env.signer))
            return
        value = (vc.prepared_view or 0).to_bytes(4, "big") + (vc.prepared_hash or b"")
        if not self._equivocation(KIND_VIEW_CHANGE, vc.view, env.signer, value, env, out):
            return
        if vc.view < self.view:
            return
        stripped = ViewChangePacket(view_change=env, prepared=pkt.prepared, block=None)
        self.round.view_changes.setdefault(vc.view, {})[env.signer] = stripped
        # f+1 rule: if more than 1/3 of stake wants a later view, follow the smallest such view
        ahead = {
            s: v for v, by in self.round.view_changes.items() if v > self.view for s in by if s != self.me
        }
        if ahead and self.round.vset.exceeds_one_third(self.round.vset.stake_of_all(ahead)):
            self._start_view_change(min(ahead.values()), now, out)
        self._check_new_view(vc.view, out)

    def _start_view_change(self, view: int, now: float, out: list[Action]) -> None:
        if view <= self.view and self.in_view_change:
            return
        self.view = view
        self.in_view_change = True
        self.deadline = now + self.cfg.timeout(view)
        out.append(ViewChanged(self.height, view))
        rs = self.round
        p = rs.prepared
        vc = ViewChange(
            height=self.height,
            view=view,
            prepared_view=None if p is None else p.view,
            prepared_hash=None if p is None else p.block_hash,
        )
        value = (vc.prepared_view or 0).to_bytes(4, "big") + (vc.prepared_hash or b"")
        env = self._sign(RECORD_VIEW_CHANGE, view, value, vc, out, p, rs.prepared_block)
        if env is None:
            return
        rs.observe(KIND_VIEW_CHANGE, view, self.me, value, env)
        pkt = ViewChangePacket(view_change=env, prepared=p, block=None)
        rs.view_changes.setdefault(view, {})[self.me] = pkt
        out.append(Broadcast(pkt))
        leader = rs.vset.leader(self.height, view)
        if leader != self.me and rs.prepared_block is not None:
            out.append(Send(leader, ViewChangePacket(view_change=env, prepared=p, block=rs.prepared_block)))
        self._check_new_view(view, out)

    def _check_new_view(self, view: int, out: list[Action]) -> None:
        rs = self.round
        if view != self.view or view in rs.new_view_sent or rs.vset.leader(self.height, view) != self.me:
            return
        vcs = rs.view_changes.get(view, {})
        if not rs.vset.is_quorum(rs.vset.stake_of_all(vcs)):
            return
        best: Certificate | None = None
        for pkt in vcs.values():
            if pkt.prepared is not None and (best is None or pkt.prepared.view > best.view):
                best = pkt.prepared
        if best is not None:
            block = rs.blocks.get(best.block_hash)
            if block is None:
                return  # wait for a replica that prepared it to send us the block
            rs.new_view_sent.add(view)
            self.in_view_change = False
            self._send_proposal(block, out)
            return
        rs.new_view_sent.add(view)
        self.in_view_change = False
        self._request_proposal(out)

    def _enter_view(self, view: int, now: float, out: list[Action]) -> None:
        if view != self.view:
            out.append(ViewChanged(self.height, view))
        self.view = view
        self.in_view_change = False
        self.deadline = now + self.cfg.timeout(view)
