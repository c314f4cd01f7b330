"""A tiny synchronous driver for replicas with real sr25519 keys, for unit tests.

Messages are delivered FIFO through a queue, so a test can run the protocol step by step and
intercept, drop or inject packets.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from consensus.actions import Broadcast, Decide, PersistVote, Rejected, ReportEvidence, RequestProposal, Send
from consensus.messages import VoteRecord
from consensus.replica import Replica, ReplicaConfig
from consensus.sim.app import ChainApp, make_block
from consensus.validators import ValidatorSet
from wire.codec import encode
from wire.keys import Hotkey

NETUID = 7


@dataclass
class Node:
    key: Hotkey
    replica: Replica
    app: ChainApp
    records: list[VoteRecord] = field(default_factory=list)
    decided: list[Decide] = field(default_factory=list)
    evidence: list[ReportEvidence] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    proposal_requests: list[RequestProposal] = field(default_factory=list)


class Cluster:
    def __init__(self, stakes: list[int], *, auto_propose: bool = True, max_height: int = 4) -> None:
        self.keys = [Hotkey.from_name(f"unit-v{i}") for i in range(len(stakes))]
        self.vset = ValidatorSet.of((k.public_key, s) for k, s in zip(self.keys, stakes, strict=True))
        self.cfg = ReplicaConfig(netuid=NETUID, base_timeout=1.0)
        self.nodes: dict[bytes, Node] = {}
        self.queue: deque[tuple[bytes, bytes]] = deque()  # (destination hotkey, encoded packet)
        self.down: set[bytes] = set()
        self.auto_propose = auto_propose
        self.max_height = max_height
        self.now = 0.0
        for k in self.keys:
            self.nodes[k.public_key] = self._new_node(k, ChainApp(), [])

    def _new_node(self, key: Hotkey, app: ChainApp, records: list[VoteRecord]) -> Node:
        committed = app.tip()[0]
        rep = Replica(
            key,
            lambda h: self.vset,
            app.validate,
            self.cfg,
            committed_height=committed,
            records=records,
            decisions=app.decision,
        )
        return Node(key, rep, app, records=list(records))

    def start(self) -> None:
        for hk, node in self.nodes.items():
            self.apply(hk, node.replica.start(self.now))

    def restart(self, hk: bytes) -> None:
        """Crash and restart a node from its durable record and decided chain."""
        old = self.nodes[hk]
        node = self._new_node(old.key, old.app, old.records)
        node.decided = old.decided
        self.nodes[hk] = node
        self.down.discard(hk)
        self.apply(hk, node.replica.start(self.now))

    def apply(self, hk: bytes, actions: list[Any]) -> None:
        node = self.nodes[hk]
        decided = False
        for a in actions:
            if isinstance(a, PersistVote):
                node.records.append(a.record)
            elif isinstance(a, Broadcast):
                for other in self.nodes:
                    if other != hk:
                        self.queue.append((other, encode(a.packet)))
            elif isinstance(a, Send):
                self.queue.append((a.to, encode(a.packet)))
            elif isinstance(a, Decide):
                node.app.apply(a.height, a.block, a.certificate)
                node.decided.append(a)
                decided = True
            elif isinstance(a, RequestProposal):
                node.proposal_requests.append(a)
                if self.auto_propose and a.height <= self.max_height:
                    _, parent = node.app.tip()
                    self.apply(hk, node.replica.propose(make_block(a.height, parent, b"p%d" % a.view)))
            elif isinstance(a, ReportEvidence):
                node.evidence.append(a)
            elif isinstance(a, Rejected):
                node.rejected.append(a)
        if decided:
            self.apply(hk, node.replica.on_timer(self.now))

    def deliver(self, limit: int = 100_000) -> int:
        n = 0
        while self.queue and n < limit:
            dst, data = self.queue.popleft()
            n += 1
            if dst in self.down or dst not in self.nodes:
                continue
            self.apply(dst, self.nodes[dst].replica.on_message(data, self.now))
        return n

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for hk, node in list(self.nodes.items()):
            if hk not in self.down:
                self.apply(hk, node.replica.on_timer(self.now))

    def heights(self) -> dict[bytes, int]:
        return {hk: n.app.tip()[0] for hk, n in self.nodes.items()}
