"""What a peer can make this replica send: decided blocks, bounded per recipient and per time.

A replica sends decided blocks on request (a signed `SyncRequest`) and unasked (a view change for
a height it already decided means the sender is stuck there). Both are answers to messages that
anyone on the link can replay, so the cost they impose is bounded here, per recipient (the
validator the blocks go to, which names the link they fill):

* **dedup**: one height goes to one recipient at most once per `resend_after` seconds, however
  many requests (or copies of one request) ask for it;
* **floor**: a recipient that signed a statement at height h has decided every height below h
  (its committed height never goes back), so a request or view change for a lower height is a
  replay and is dropped before its signature is checked. The floor is raised only by statements
  that verified, so a forger cannot raise it; it is forgotten after `floor_ttl` seconds so that a
  validator that lost its store can still be helped later;
* **budget**: a token bucket in blocks and one in bytes, refilled with the time passed in, so a
  recipient's link carries at most `blocks_per_s` blocks and `bytes_per_s` bytes a second (after
  a burst of `burst_s` seconds' worth) whatever arrives.

Sans-I/O: time is an argument, nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from consensus.messages import DecisionPacket


@dataclass(frozen=True)
class SendLimits:
    blocks_per_s: float = 32.0
    bytes_per_s: float = 4 * 1024 * 1024
    burst_s: float = 2.0  # a bucket holds this many seconds' worth (>= one max-size block)
    resend_after: float = 2.0
    floor_ttl: float = 120.0
    max_recipients: int = 1024  # recipients are validators; this only bounds a bug's cost


def decision_size(d: DecisionPacket) -> int:
    """Encoded size of a decision, close enough for a budget (block + ~100 bytes a signature)."""
    return len(d.block) + 100 * len(d.certificate.signatures) + 64


@dataclass
class _Account:
    blocks: float
    bytes: float
    at: float
    sent: dict[int, float] = field(default_factory=dict)  # height -> when last sent
    floor: tuple[int, float] = (0, 0.0)  # (height the recipient reached, when we learnt it)
    need: float = 0.0  # bytes the block that did not fit needs: nothing is worth asking before


class SendBudget:
    def __init__(self, limits: SendLimits | None = None) -> None:
        self.limits = limits or SendLimits()
        self._accounts: dict[bytes, _Account] = {}

    def _account(self, peer: bytes, now: float) -> _Account:
        lim = self.limits
        acc = self._accounts.get(peer)
        if acc is None:
            if len(self._accounts) >= lim.max_recipients:
                self._accounts.clear()
            acc = _Account(lim.blocks_per_s * lim.burst_s, lim.bytes_per_s * lim.burst_s, now)
            self._accounts[peer] = acc
        elif now > acc.at:
            dt = now - acc.at
            acc.blocks = min(lim.blocks_per_s * lim.burst_s, acc.blocks + dt * lim.blocks_per_s)
            acc.bytes = min(lim.bytes_per_s * lim.burst_s, acc.bytes + dt * lim.bytes_per_s)
            acc.at = now
            acc.sent = {h: t for h, t in acc.sent.items() if now - t < lim.resend_after}
        return acc

    def _past(self, acc: _Account, height: int, now: float) -> bool:
        floor, learnt = acc.floor
        return height < floor and now - learnt < self.limits.floor_ttl

    def reached(self, peer: bytes, height: int, now: float) -> None:
        """`peer` signed a statement (that verified) at `height`: it decided every height below."""
        acc = self._account(peer, now)
        if height >= acc.floor[0] or now - acc.floor[1] >= self.limits.floor_ttl:
            acc.floor = (height, now)

    def wanted(self, peer: bytes, heights: range, now: float) -> bool:
        """Cheap pre-check (before any signature work): could sending `heights` to `peer` help
        it, and is there budget? False means drop the message that asks for them."""
        acc = self._account(peer, now)
        if self._past(acc, heights.start, now):
            return False  # it is past that height: a replay of an old request
        return acc.blocks >= 1 and acc.bytes >= acc.need and any(h not in acc.sent for h in heights)

    def send(
        self, peer: bytes, heights: range, lookup: Callable[[int], DecisionPacket | None], now: float
    ) -> tuple[list[DecisionPacket], bool]:
        """The decisions to send `peer` for `heights` (in order, skipping those sent recently),
        within its budget; and whether the budget cut the answer short."""
        acc = self._account(peer, now)
        out: list[DecisionPacket] = []
        for h in heights:
            if self._past(acc, h, now) or h in acc.sent:
                continue
            if acc.blocks < 1:
                return out, True
            d = lookup(h)
            if d is None:
                break
            size = decision_size(d)
            if size > acc.bytes:
                acc.need = size
                return out, True
            acc.need = 0.0
            acc.blocks -= 1
            acc.bytes -= size
            acc.sent[h] = now
            out.append(d)
        return out, False
