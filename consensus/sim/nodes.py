"""Simulated validator nodes: an honest driver around a Replica, and Byzantine variants.

The honest driver is what a real node does, minus sockets: it executes the replica's actions in
order, keeps the durable vote record (surviving crashes), keeps the decided chain, and arms the
replica's timer. Byzantine nodes reuse it and tamper with what goes out.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from consensus.actions import (
    Broadcast,
    Decide,
    PersistVote,
    Rejected,
    ReportEvidence,
    RequestProposal,
    Send,
)
from consensus.certificates import CertificateError, verify_certificate
from consensus.crypto import Scheme, seal
from consensus.messages import (
    PHASE_COMMIT,
    PHASE_PREPARE,
    Certificate,
    DecisionPacket,
    PrePrepare,
    ProposalPacket,
    Vote,
    VotePacket,
    VoteRecord,
    VoteSignature,
    block_hash_of,
)
from consensus.replica import Replica, ReplicaConfig
from consensus.sim.app import ChainApp, make_block
from consensus.sim.network import EventLoop, Network
from consensus.validators import ValidatorSet
from wire.codec import decode, encode


class Simulation(Protocol):
    """What a node sees of the simulation running it (`runner.Simulation` is one): the nodes
    depend on this, so the runner imports them without the two importing each other."""

    replica_config: ReplicaConfig
    scheme: Scheme
    loop: EventLoop
    net: Network
    rng: random.Random

    @property
    def nodes(self) -> Sequence[SimNode]: ...

    def validator_set_for(self, height: int) -> ValidatorSet: ...

    def broadcast_targets(self, node: SimNode) -> Sequence[int]: ...

    def new_app(self) -> ChainApp: ...

    def payload_for(self, height: int, hotkey: bytes, salt: bytes) -> bytes: ...

    def others(self, idx: int) -> list[int]: ...

    def split_half(self, idx: int) -> frozenset[int]: ...

    def deliver_to(self, src: int, targets: Iterable[int], packet: Any) -> None: ...

    def record_decision(self, node: SimNode, a: Decide) -> None: ...


class SimNode:
    byzantine = False

    def __init__(self, idx: int, key: Any, sim: Simulation) -> None:
        self.idx = idx
        self.key = key
        self.hotkey: bytes = key.public_key
        self.sim = sim
        self.app = sim.new_app()
        self.records: list[VoteRecord] = []  # the durable vote record
        self.alive = True
        self.incarnation = 0
        self.replica: Replica | None = None
        self.evidence = 0
        self.rejected: dict[str, int] = {}
        self.decide_times: dict[int, float] = {}
        self.enter_times: dict[int, float] = {}  # height -> when this node began deciding it

    # --- lifecycle --------------------------------------------------------------------------

    def boot(self) -> None:
        self.incarnation += 1
        self.alive = True
        committed, _ = self.app.tip()
        self.enter_times.setdefault(committed + 1, self.sim.loop.now)
        self.replica = Replica(
            self.key,
            self.app.vset_for,
            self.app.validate,
            self.sim.replica_config,
            scheme=self.sim.scheme,
            committed_height=committed,
            records=list(self.records),
            decisions=self.app.decision,
        )
        self.handle(self.replica.start(self.sim.loop.now))

    def crash(self) -> None:
        self.alive = False
        self.replica = None  # volatile state is lost; records and app survive

    # --- inputs -----------------------------------------------------------------------------

    def receive(self, payload: bytes) -> None:
        if self.alive and self.replica is not None:
            self.handle(self.replica.on_message(payload, self.sim.loop.now))

    def _timer(self, incarnation: int) -> None:
        r = self.replica
        if (
            self.alive
            and r is not None
            and incarnation == self.incarnation
            and self.sim.loop.now >= r.deadline
        ):
            self.handle(r.on_timer(self.sim.loop.now))

    # --- actions ----------------------------------------------------------------------------

    def handle(self, actions: list[Any]) -> None:
        for a in actions:
            if isinstance(a, PersistVote):
                self.records.append(a.record)
            elif isinstance(a, Broadcast):
                self.broadcast(a.packet)
            elif isinstance(a, Send):
                self.send_to(a.to, a.packet)
            elif isinstance(a, Decide):
                self.on_decide(a)
            elif isinstance(a, RequestProposal):
                self.on_request_proposal(a)
            elif isinstance(a, ReportEvidence):
                self.evidence += 1
            elif isinstance(a, Rejected):
                self.rejected[a.reason] = self.rejected.get(a.reason, 0) + 1
        r = self.replica
        if r is not None and any(isinstance(a, Decide) for a in actions):
            self.handle(r.on_timer(self.sim.loop.now))
            return
        if r is not None and r.deadline != float("inf"):
            inc = self.incarnation
            self.sim.loop.at(r.deadline, lambda: self._timer(inc))

    def broadcast(self, packet: Any) -> None:
        data = encode(packet)
        for other in self.sim.broadcast_targets(self):
            self.sim.net.send(self.idx, other, data)

    def send_to(self, hotkey: bytes, packet: Any) -> None:
        targets = [n.idx for n in self.sim.nodes if n.hotkey == hotkey and n.idx != self.idx]
        if targets:
            self.sim.net.send(self.idx, self.sim.rng.choice(targets), encode(packet))

    def on_decide(self, a: Decide) -> None:
        self.app.apply(a.height, a.block, a.certificate)
        self.decide_times[a.height] = self.sim.loop.now
        self.enter_times.setdefault(a.height + 1, self.sim.loop.now)
        self.sim.record_decision(self, a)

    def state_sync(self, donor: SimNode) -> str | None:
        """Adopt `donor`'s decided chain as a node joining the network does (state sync): every
        block is checked against this node's own rules and its certificate against the set this
        node derives for its height. The reason it stopped, or None if it took the whole chain."""
        tip = donor.app.tip()[0]
        for h in range(self.app.tip()[0] + 1, tip + 1):
            proof = donor.app.decision(h)
            if proof is None:
                return f"height {h}: the donor has no certificate"
            reason = self.app.validate(h, proof.block)
            if reason is None:
                try:
                    verify_certificate(
                        proof.certificate,
                        self.app.vset_for(h),
                        self.sim.replica_config.netuid,
                        self.sim.scheme,
                        height=h,
                        block_hash=block_hash_of(proof.block),
                    )
                except CertificateError as exc:
                    reason = str(exc)
            if reason is not None:
                return f"height {h}: {reason}"
            self.app.apply(h, proof.block, proof.certificate)
        return None

    def on_request_proposal(self, a: RequestProposal) -> None:
        if self.replica is None:
            return
        block = self.make_block(a.height, b"")
        self.handle(self.replica.propose(block))

    def make_block(self, height: int, salt: bytes, tamper: bool = False) -> bytes:
        """This node's block for `height`; `tamper`: with a snapshot (an epoch's first block)
        that doubles this node's stake in the next set, which honest validators refuse."""
        _, parent = self.app.tip()
        payload = self.sim.payload_for(height, self.hotkey, salt)
        snapshot = self.app.snapshot_due(height)
        if tamper and snapshot is not None:
            snapshot = [[k, s * 2 if k == self.hotkey else s] for k, s in snapshot]
        return make_block(height, parent, payload, snapshot)


class SilentNode(SimNode):
    """Crashed from the start, forever: the weakest Byzantine behaviour."""

    byzantine = True

    def boot(self) -> None:
        self.alive = False


class EquivocatingNode(SimNode):
    """As leader, proposes two different valid blocks to two halves of the network and votes for
    both; otherwise behaves honestly. With epochs, the second block of an epoch's first height
    carries a snapshot giving this node more stake in the next set (invalid)."""

    byzantine = True

    def on_request_proposal(self, a: RequestProposal) -> None:
        r = self.replica
        if r is None:
            return
        block_a = self.make_block(a.height, b"A")
        block_b = self.make_block(a.height, b"B", tamper=True)
        actions = r.propose(block_a)
        half = self.sim.split_half(self.idx)
        netuid = self.sim.replica_config.netuid
        hash_b = block_hash_of(block_b)
        pp_b = seal(PrePrepare(a.height, a.view, hash_b), self.key, netuid)
        proposal_b = ProposalPacket(pre_prepare=pp_b, block=block_b, justification=())
        for act in actions:
            if isinstance(act, Broadcast) and isinstance(act.packet, ProposalPacket):
                self.sim.deliver_to(
                    self.idx, [i for i in self.sim.others(self.idx) if i not in half], act.packet
                )
                self.sim.deliver_to(self.idx, sorted(half), proposal_b)
            else:
                self.handle([act])
        for phase in (PHASE_PREPARE, PHASE_COMMIT):
            env = seal(Vote(phase, a.height, a.view, hash_b), self.key, netuid)
            self.sim.deliver_to(self.idx, sorted(half), VotePacket(vote=env))
        self.handle([])  # re-arm the timer


class DoubleVotingNode(SimNode):
    """Every vote it casts is accompanied by a conflicting one sent to a random half."""

    byzantine = True

    def broadcast(self, packet: Any) -> None:
        super().broadcast(packet)
        if isinstance(packet, VotePacket):
            orig = decode(packet.vote.body, Vote)
            v = Vote(orig.phase, orig.height, orig.view, hashlib.sha256(orig.block_hash).digest())
            env = seal(v, self.key, self.sim.replica_config.netuid)
            self.sim.deliver_to(self.idx, sorted(self.sim.split_half(self.idx)), VotePacket(vote=env))


class ForgingNode(SimNode):
    """Honest core, plus a stream of forged packets: bad signatures, outsider keys, fake
    leadership, fake certificates, and random byte mutations of real packets."""

    byzantine = True

    def receive(self, payload: bytes) -> None:
        super().receive(payload)
        rng = self.sim.rng
        if not self.alive or rng.random() > 0.15:
            return
        target = rng.choice(self.sim.others(self.idx))
        self.sim.net.send(self.idx, target, self._forge(payload, rng))

    def _forge(self, payload: bytes, rng: random.Random) -> bytes:
        netuid = self.sim.replica_config.netuid
        h = self.replica.height if self.replica else 1
        choice = rng.randrange(5)
        if choice == 0:  # mutate real bytes
            b = bytearray(payload)
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            return bytes(b)
        if choice == 1:  # a vote signed by an outsider
            env = seal(Vote(PHASE_COMMIT, h, 0, rng.randbytes(32)), self.sim.outsider, netuid)
            return encode(VotePacket(vote=env))
        if choice == 2:  # someone else's vote with a forged signature
            victim = rng.choice(self.sim.nodes).hotkey
            env = seal(Vote(PHASE_COMMIT, h, 0, rng.randbytes(32)), self.key, netuid)
            env = type(env)(netuid=netuid, signer=victim, body=env.body, signature=rng.randbytes(64))
            return encode(VotePacket(vote=env))
        if choice == 3:  # a proposal although not the leader
            block = self.make_block(h, rng.randbytes(4))
            env = seal(PrePrepare(h, 0, block_hash_of(block)), self.key, netuid)
            return encode(ProposalPacket(pre_prepare=env, block=block, justification=()))
        # a decision with a certificate of garbage signatures
        block = self.make_block(h, rng.randbytes(4))
        signers = sorted({n.hotkey for n in self.sim.nodes})
        sigs = tuple(VoteSignature(signer=k, signature=rng.randbytes(64)) for k in signers)
        cert = Certificate(
            phase=PHASE_COMMIT, height=h, view=0, block_hash=block_hash_of(block), signatures=sigs
        )
        return encode(DecisionPacket(block=block, certificate=cert))


class ReplayingNode(SimNode):
    """Honest core, plus re-sends of old packets it saw (other heights, views, validators)."""

    byzantine = True

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.seen: list[bytes] = []

    def receive(self, payload: bytes) -> None:
        super().receive(payload)
        rng = self.sim.rng
        if len(self.seen) < 400:
            self.seen.append(payload)
        else:
            self.seen[rng.randrange(400)] = payload
        if self.alive and rng.random() < 0.2:
            self.sim.net.send(self.idx, rng.choice(self.sim.others(self.idx)), rng.choice(self.seen))


BEHAVIOURS: dict[str, Callable[..., SimNode]] = {
    "silent": SilentNode,
    "equivocate": EquivocatingNode,
    "doublevote": DoubleVotingNode,
    "forge": ForgingNode,
    "replay": ReplayingNode,
}
