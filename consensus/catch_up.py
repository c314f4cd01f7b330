"""Catch-up: routing statements by height, buffering the future, helping and asking peers.

A mixin of `Replica`. A replica that missed decisions learns them from peers as `DecisionPacket`s
(block plus commit certificate), which it verifies before deciding. Every way a peer can make us
send decided blocks (a sync request, a view change for a height we decided) goes through one
`SendBudget` per recipient: deduplicated, refused below the height the recipient is known to have
reached, and bounded in blocks and bytes per second, with the cheap checks made before the
signature check. So a Byzantine validator replaying requests cannot use us to amplify.
"""

from __future__ import annotations

from typing import Any

from consensus.actions import Action, Rejected, Send
from consensus.certificates import CertificateError, verify_certificate
from consensus.crypto import seal
from consensus.messages import DecisionPacket, SyncPacket, SyncRequest, ViewChangePacket, block_hash_of
from consensus.replica_fields import ReplicaFields
from consensus.send_budget import SendBudget
from wire.codec import decode
from wire.errors import WireError


class CatchUpRules(ReplicaFields):
    decided: dict[int, DecisionPacket]
    _future: dict[int, list[Any]]
    _future_seen: dict[int, set[tuple[bytes, bytes]]]
    _sync_asked: dict[tuple[bytes, int], float]
    _budget: SendBudget
    _decisions: Any

    def _route_height(
        self, height: int, signer: bytes, pkt: Any, out: list[Action], key: tuple[bytes, bytes] | None = None
    ) -> bool:
        """True if `height` is the current one; otherwise buffer, help or drop the packet (`key`
        names a verified statement, so a buffered one's copies are dropped unverified)."""
        if height == self.height:
            return True
        if height < self.height:
            # A view change for a height we decided means its sender is stuck there: help it,
            # within its send budget (`_help_wanted` was checked before the signature).
            if isinstance(pkt, ViewChangePacket) and signer != self.me:
                self._send_decisions(signer, range(height, height + 1), out)
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
            if key is not None:
                self._future_seen.setdefault(height, set()).add(key)
        self._ask_sync(signer, out)
        return False

    def _help_wanted(self, signer: bytes, height: int) -> bool:
        """Before any signature work: is a view change for the decided `height` worth verifying?
        Only if its signer is a validator we could still help there (see `SendBudget.wanted`)."""
        if signer == self.me or not self._budget.wanted(signer, range(height, height + 1), self._now):
            return False
        return signer in self.round.vset or signer in self.validator_sets(height)

    def _send_decisions(self, peer: bytes, heights: range, out: list[Action]) -> None:
        sent, cut = self._budget.send(peer, heights, self._lookup_decided, self._now)
        out.extend(Send(peer, d) for d in sent)
        if cut:
            out.append(Rejected("send_budget", f"{peer.hex()[:16]}: decided blocks held back", peer))

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
        """Answer a sync request with up to `sync_batch` decided blocks. Everything that decides
        whether to answer is checked before the signature: membership, that we have anything
        newer, and the requester's send budget (copies of one request, or replays of its older
        requests, cost a decode and a dict lookup)."""
        env = pkt.request
        try:
            height = decode(env.body, SyncRequest).height
        except WireError as exc:
            out.append(Rejected("malformed", str(exc), env.signer))
            return
        if env.signer == self.me or not self._member(env.signer, out) or height >= self.height:
            return
        heights = range(height, min(height + self.cfg.sync_batch, self.height))
        if not self._budget.wanted(env.signer, heights, self._now):
            return
        if self._verified(env, SyncRequest, out) is None:
            return
        self._budget.reached(env.signer, height, self._now)
        self._send_decisions(env.signer, heights, out)

    def _lookup_decided(self, height: int) -> DecisionPacket | None:
        found = self.decided.get(height)
        if found is None and self._decisions is not None:
            found = self._decisions(height)
        return found
