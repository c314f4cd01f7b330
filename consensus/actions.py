"""Effects a replica asks its driver to perform, in order.

Contract with the driver: execute actions in list order, and make each `PersistVote` durable
(fsync or equivalent) before executing any later action of the same list, because the later ones
may send the signature it records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from consensus.messages import Certificate, Equivocation, VoteRecord


@dataclass(frozen=True)
class PersistVote:
    record: VoteRecord


@dataclass(frozen=True)
class Broadcast:
    """Send a packet to every other validator."""

    packet: Any


@dataclass(frozen=True)
class Send:
    """Send a packet to one validator, named by hotkey; the driver maps it to a peer."""

    to: bytes
    packet: Any


@dataclass(frozen=True)
class Decide:
    """`block` is decided at `height`, proven by `certificate`.

    The driver applies it to the application and then calls `on_timer(now)` (whatever the
    deadline): that lets the replica replay packets it buffered for the next height, which only
    validate once the application has applied this block.
    """

    height: int
    block: bytes
    certificate: Certificate


@dataclass(frozen=True)
class RequestProposal:
    """This replica leads (height, view) with a free choice of block: call `propose(block)`."""

    height: int
    view: int


@dataclass(frozen=True)
class ReportEvidence:
    evidence: Equivocation


@dataclass(frozen=True)
class Rejected:
    """A packet was refused; `reason` is a short stable label for metrics, `detail` for the log."""

    reason: str
    detail: str
    sender: bytes | None = None


@dataclass(frozen=True)
class ViewChanged:
    """Informational: the replica moved to `view` at `height` (for metrics and logs)."""

    height: int
    view: int


Action = PersistVote | Broadcast | Send | Decide | RequestProposal | ReportEvidence | Rejected | ViewChanged
