"""Catch-up: routing statements by height, buffering the future, helping and asking peers.

A mixin of `Replica`. A replica that missed decisions learns them from peers as `DecisionPacket`s
(block plus commit certificate), which it verifies before deciding. Every way a peer can make us
send data is rate-limited per (peer, height), so a Byzantine validator cannot use us to amplify.
"""

from __future__ import annotations

from typing import Any

from consensus.actions import Action, Rejected, Send
from consensus.certificates import CertificateError, verify_certificate
from consensus.crypto import seal
from consensus.messages import DecisionPacket, SyncPacket, SyncRequest, ViewChangePacket, block_hash_of
from consensus.replica_fields import ReplicaFields


class CatchUpRules(ReplicaFields):
    decided: dict[int, DecisionPacket]
    _future: dict[int, list[Any]]
    _sync_asked: dict[tuple[bytes, int], float]
    _helped: dict[tuple[bytes, int], float]
    _decisions: Any

    def _route_height(self, height: int, signer: bytes, pkt: Any, out: list[Action]) -> bool:
        """True if `height` is the current one; otherwise buffer, help or drop the packet."""
        if height == self.height:
            return True
        if height < self.height:
            # A view change for a height we decided means its sender is stuck there: help it,
            # at most once per (sender, height) per base timeout so it cannot make us amplify.
            if isinstance(pkt, ViewChangePacket) and signer != self.me:
                decision = self._lookup_decided(height)
                if decision is not None and self._rate_ok(self._helped, (signer, height)):
                    out.append(Send(signer, decision))
            return False
        if height > self.height + self.cfg.future_heights:
            # far behind: do not buffer, but ask this (authenticated) peer for the decided blocks
            out.append(Rejected("height_too_far", f"height {height}, at {self.height}", signer))
            if signer in self.round.vset:
                self._ask_sync(signer, out)
            return False
        # a member of that height's set (which may be the next epoch's) or of the current one
        if signer not in self.round.vset and signer not in self.validator_sets(height):
            out.append(Rejected("unknown_signer", f"{signer.hex()[:16]} is not a validator", signer))
            return False
        buf = self._future.setdefault(height, [])
        if len(buf) >= 8 * len(self.round.vset) + 64:
            out.append(Rejected("future_buffer_full", f"height {height}", signer))
        else:
            buf.append(pkt)
        self._ask_sync(signer, out)
        return False

    def _rate_ok(self, table: dict[tuple[bytes, int], float], key: tuple[bytes, int]) -> bool:
        last = table.get(key)
        if last is not None and self._now - last < self.cfg.base_timeout:
            return False
        if len(table) > 50_000:
            table.clear()
        table[key] = self._now
        return True

    def _ask_sync(self, peer: bytes, out: list[Action]) -> None:
        if peer == self.me or not self._rate_ok(self._sync_asked, (peer, self.height)):
            return
        req = seal(SyncRequest(height=self.height), self.signer, self.cfg.netuid)
        out.append(Send(peer, SyncPacket(request=req)))

    def _on_decision(self, pkt: DecisionPacket, now: float, out: list[Action]) -> None:
        cert = pkt.certificate
        if cert.height < self.height:
            return
        if cert.height > self.height:
            buf = self._future.setdefault(cert.height, [])
            if (
                cert.height <= self.height + self.cfg.future_heights
                and len(buf) < 8 * len(self.round.vset) + 64
            ):
                buf.append(pkt)
            return
        try:
            verify_certificate(
                cert,
                self.round.vset,
                self.cfg.netuid,
                self.scheme,
                height=self.height,
                block_hash=block_hash_of(pkt.block),
            )
        except CertificateError as exc:
            out.append(Rejected("invalid_certificate", str(exc)))
            return
        self._decide(pkt, now, out)

    def _on_sync(self, pkt: SyncPacket, out: list[Action]) -> None:
        req = self._verified(pkt.request, SyncRequest, out)
        if req is None or not self._member(pkt.request.signer, out):
            return
        for h in range(req.height, min(req.height + self.cfg.sync_batch, self.height)):
            decision = self._lookup_decided(h)
            if decision is None:
                break
            out.append(Send(pkt.request.signer, decision))

    def _lookup_decided(self, height: int) -> DecisionPacket | None:
        found = self.decided.get(height)
        if found is None and self._decisions is not None:
            found = self._decisions(height)
        return found
