"""The validator node: wires the PBFT replica to libp2p, the store and the chain (trio).

Everything the replica decides on comes in through its three inputs and every effect it wants
comes out as an action; this module is the driver that executes them in order:
PersistVote is committed to SQLite (fsync) before any later action of the same list runs, so a
vote is never on the wire before it is on disk. When the store cannot be written (a full disk),
the node stops voting for good (`_halt_voting`): nothing after the failed write is executed, the
replica gets no more input, and the node keeps serving reads (API, DHT, gossip) until it is
stopped; an operator frees space and restarts it. Chosen over exiting so that the status, the
metrics and the blocks this node holds stay reachable while someone looks at why.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import trio

from consensus.actions import (
    Broadcast,
    Decide,
    PersistVote,
    Rejected,
    ReportEvidence,
    RequestProposal,
    Send,
    ViewChanged,
)
from consensus.messages import DecisionPacket
from consensus.validators import ValidatorSet
from validator_node.app import Application
from validator_node.chain.base import Chain
from validator_node.chain_duty import ChainDuty, validator_set_from
from validator_node.chain_view import epoch_info_from_chain
from validator_node.discovery import Discovery
from validator_node.evaluation import Evaluator, SandboxAggregator
from validator_node.evidence import EvidenceDuty, parse_sources
from validator_node.genesis import GenesisProof, GenesisRecord, genesis_hash
from validator_node.genesis import resolve as resolve_genesis
from validator_node.metrics import Metrics
from validator_node.p2p.channels import CONSENSUS
from validator_node.p2p.host import ConsensusTransport, load_or_create_peer_seed
from validator_node.p2p.submit_replies import Accepted
from validator_node.payloads import PayloadDuty, PayloadStore
from validator_node.pipeline.messages import (
    APP_GOSSIP_TYPES,
    Attestation,
    LargeSubmission,
    RegistryItem,
    Submission,
)
from validator_node.pipeline.state import Admitted
from validator_node.state_sync import StateSync
from validator_node.status import StatusDuty
from validator_node.store import NodeStore
from wire.codec import decode, decode_any, encode
from wire.envelope import SignedEnvelope, seal
from wire.errors import WireError
from wire.keys import Hotkey

log = logging.getLogger("validator_node")

MIN_EPOCH_BLOCKS = 4


@dataclass
class NodeConfig:
    netuid: int
    data_dir: Path
    listen_host: str = "127.0.0.1"
    listen_port: int = 0
    bootstrap: list[str] = field(default_factory=list)
    block_interval: float = 1.0
    base_timeout: float = 3.0
    stop_at_height: int | None = None
    status_interval: float = 0.5
    epoch_blocks: int = 20
    api_host: str = "127.0.0.1"
    api_port: int | None = None  # None: no HTTP API
    sync_from_checkpoint: bool = True
    dht: bool = True  # keep decided blocks and checkpoints in the Kademlia DHT
    evidence: str = ""  # CHALLENGE=SOURCE,... (validator_node.evidence)
    genesis_hash: bytes | None = None  # the operator's pin (--genesis-hash): refuse any other genesis
    announce: str | None = None  # the multiaddr to publish on the chain (default: a dialable listen one)
    discovery_interval: float = 30.0  # seconds between reads of validators' addresses on the chain; 0: off


def _bare_reference(item: object) -> str | None:
    """A miner's submission by reference must come with its bytes (`LargeSubmission`): a bare one
    would have every validator search the DHT for bytes nobody may hold. (Validators relay bare
    envelopes among themselves once one of them holds and has published the bytes.)"""
    if not isinstance(item, SignedEnvelope):
        return None
    try:
        sub = decode(item.body, Submission)
    except WireError:
        return None  # not a submission, or a malformed one: the pool's checks give the reason
    if sub.payload_ref is not None:
        return "a submission by reference must be sent with its payload (a large submission)"
    return None


class ValidatorNode(StateSync, EvidenceDuty, PayloadDuty, ChainDuty, Discovery, StatusDuty):
    #: why this node stopped voting (a store write failed), or None while it votes
    _voting_halted: str | None = None

    def __init__(
        self, cfg: NodeConfig, hotkey: Hotkey, chain: Chain, genesis: GenesisRecord | None = None
    ) -> None:
        """`genesis`: the network's record (a file, or fetched from peers by `fetch_from_peers`);
        a store that already holds one must hold the same. Without one, an empty store takes
        today's chain as the genesis of a new network (validator_node.genesis.resolve)."""
        self.hotkey = hotkey
        self.chain = chain
        self.metrics = Metrics()
        self.data_dir = cfg.data_dir
        self.store = NodeStore(self.data_dir / "node.sqlite")
        self.payloads = PayloadStore(self.data_dir / "payloads.sqlite")
        if cfg.epoch_blocks < MIN_EPOCH_BLOCKS:
            raise ValueError(f"--epoch-blocks must be at least {MIN_EPOCH_BLOCKS} (got {cfg.epoch_blocks})")
        obtained = resolve_genesis(
            self.store,
            netuid=cfg.netuid,
            given=genesis,
            pin=cfg.genesis_hash,
            chain=chain,
            epoch_blocks=cfg.epoch_blocks,
        )
        record = obtained.record
        if record.epoch_blocks != cfg.epoch_blocks:  # a network constant: the record's wins
            log.warning(
                "the genesis record says %d blocks per epoch; --epoch-blocks %d is ignored",
                record.epoch_blocks,
                cfg.epoch_blocks,
            )
            cfg = replace(cfg, epoch_blocks=record.epoch_blocks)
        if cfg.epoch_blocks < MIN_EPOCH_BLOCKS:
            # the replica may enter height h+2 while the application has applied only h-1, and
            # must still know that height's validator set (pipeline.validator_sets)
            raise ValueError(f"the genesis epoch length {cfg.epoch_blocks} is below {MIN_EPOCH_BLOCKS}")
        self.cfg = cfg
        log.info(
            "genesis %s (%s; read at chain block %d, %d validators)",
            genesis_hash(record).hex(),
            "created from the chain now" if obtained.source == "chain" else f"from the {obtained.source}",
            record.chain_block,
            len(record.validators),
        )
        # the chain's validators now: the trust root for a checkpoint or genesis from strangers;
        # consensus follows the genesis record, then the decided metagraph snapshots
        self.chain_vset = validator_set_from(chain)
        self._chain_block = chain.current_block()
        self.app = Application(record)
        self.app.metrics = self.metrics  # refusals by reason, decided-block disagreements
        self.app.chain_view = epoch_info_from_chain(chain)  # the live view this node proposes
        self.app.pin_views = True  # epoch snapshots are read at the block each pins (chain_duty)
        self._genesis_served: tuple[int, bytes] | None = None
        self.evaluator = Evaluator(self.data_dir, self.metrics, hotkey=hotkey, netuid=cfg.netuid)
        self.aggregator = SandboxAggregator(self.evaluator, self.app.validate_module, self.metrics)
        self.app.aggregator = self.aggregator  # replaying an epoch's weights block may run a module
        self.evidence_sources = parse_sources(cfg.evidence)
        self._warmed: set[tuple[str, bytes]] = set()
        self._load_state()
        self._permitted = self._admissible()  # who may hold a consensus link (chain_duty)
        if hotkey.public_key not in self._permitted:
            raise RuntimeError(f"hotkey {hotkey.ss58} has no validator permit on netuid {cfg.netuid}")
        self.replica = self._new_replica()
        self._pending_checkpoint: tuple[int, bytes] | None = None
        self._proposal_due: float | None = None
        self._last_decide = 0.0
        self._inbound_send, self._inbound_recv = trio.open_memory_channel[tuple[bytes, bytes]](8192)
        self.transport = ConsensusTransport(
            hotkey=hotkey,
            netuid=cfg.netuid,
            peer_seed=load_or_create_peer_seed(self.data_dir),
            listen_host=cfg.listen_host,
            listen_port=cfg.listen_port,
            permitted=lambda: self._permitted,
            current_block=lambda: self._chain_block,
            metrics=self.metrics,
            inbound=self._inbound_send,
            on_submit=self._on_submit,
            checkpoint=self.store.read_latest_checkpoint,  # in a worker thread
            genesis=self._genesis_proof,
            on_link=self._on_link,
            on_app_item=self._on_app_item,
        )
        self.dht: Any = None
        self._dht_backlog = 0
        self._done = trio.Event()
        self._nursery: trio.Nursery
        self.last_weights: dict[str, Any] | None = None
        self.last_weights_result: dict[str, Any] | None = None
        # wall-clock time of the last frame from each validator (operators' view only)
        self.peer_last_seen: dict[bytes, float] = {}
        self._weights_pending = 0
        self.api_port: int | None = None

    def _genesis_proof(self) -> bytes:
        """What the `genesis` request is answered with: the record and the newest certified block
        (which names its hash). Encoded at most once per decided height, however often asked."""
        tip = self.store.tip()[0]
        if self._genesis_served is None or self._genesis_served[0] != tip:
            decision = self.store.decision(tip) if tip else None
            self._genesis_served = (tip, encode(GenesisProof(self.app.genesis, decision)))
        return self._genesis_served[1]

    # --- the application side of consensus -----------------------------------------------------

    def _validate_block(self, height: int, data: bytes) -> str | None:
        return self.app.validate(height, data, self._chain_block)

    @property
    def vset(self) -> ValidatorSet:
        """The consensus set of the next height (decided; see pipeline.validator_sets)."""
        return self.app.vset

    def _build_block(self, height: int) -> bytes | None:
        """This node's proposal, or None if building it failed (a bug, or a module the rules run
        failing locally): then this node does not propose, and the view change that follows hands
        the height to the next leader instead of stopping the node."""
        try:
            return self.app.propose(height, self.hotkey.public_key, self._chain_block)
        except Exception as exc:
            self.metrics.inc("proposals_failed_total")
            log.error("height %d: could not build a proposal: %s", height, exc)
            return None

    def _on_submit(self, item: object) -> str | None:
        """A miner's submission or the owner's registry item arrived on the submit protocol."""
        if isinstance(item, LargeSubmission):
            kind = "large_submission"
            reason = self._on_large_submission(item)  # relays the envelope itself
            if reason is None:
                self.metrics.inc("items_admitted_total", kind=kind)
        else:
            kind = "registry" if isinstance(item, RegistryItem) else "submission"
            reason = _bare_reference(item) or self.app.offer(item)  # type: ignore[arg-type]
        if reason is None:
            if kind != "large_submission":
                self.metrics.inc("items_admitted_total", kind=kind)
                self._relay(item)
            if isinstance(item, RegistryItem):  # the owner hears what the action will do
                return Accepted(self.app.registry_outlook(item))
        else:
            self.metrics.inc("items_refused_total", kind=kind)
            log.info("refused %s: %s", kind, reason)
        return reason

    def _relay(self, item: object) -> None:
        """Gossip an app item this node accepted to the other validators."""
        self.transport.publish_item(encode(item))

    def _on_app_item(self, data: bytes) -> None:
        try:
            item = decode_any(data, APP_GOSSIP_TYPES)
        except WireError as exc:
            self.metrics.inc("app_rejected_total", reason="malformed")
            log.warning("refused app message: %s", exc)
            return
        reason = self.app.offer(item)
        if reason is not None and reason != "duplicate":
            self.metrics.inc("app_rejected_total", reason="invalid")
            log.debug("refused gossiped item: %s", reason)

    # --- running --------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.transport.run, list(self.cfg.bootstrap))
            if self.cfg.discovery_interval > 0:
                nursery.start_soon(self._run_discovery)  # discovery: peers' addresses from the chain
            if self.cfg.dht:
                await nursery.start(self._run_dht)
            nursery.start_soon(self._chain_poller)
            nursery.start_soon(self._status_writer)
            nursery.start_soon(self._stop_on_signal)
            if self.cfg.api_port is not None:
                from validator_node.api import NodeApi

                self.api_port = await nursery.start(NodeApi(self).serve, self.cfg.api_host, self.cfg.api_port)
            task_status.started()
            peers_known = self.cfg.bootstrap or self.cfg.discovery_interval > 0
            if self.store.tip()[0] == 0 and self.cfg.sync_from_checkpoint and peers_known:
                await self._bootstrap_from_checkpoint()
            await self._await_quorum_links()
            await self._execute(self.replica.start(trio.current_time()))
            nursery.start_soon(self._consensus_loop)
            if self.dht is not None:
                nursery.start_soon(self._run_dht_catch_up)  # state_sync: blocks we lack, from the DHT
            await self._done.wait()
            with trio.move_on_after(15):  # let weights being submitted reach the chain
                while self._weights_pending:
                    await trio.sleep(0.05)
            self._try_write_status()
            nursery.cancel_scope.cancel()

    async def _await_quorum_links(self, patience: float = 20.0) -> None:
        """Start the replica once validators holding a quorum of stake are linked (or after
        `patience` seconds): a leader that proposes to nobody only causes a view change."""
        with trio.move_on_after(patience):
            while True:
                linked = set(self.transport.book.links) | {self.hotkey.public_key}
                if self.vset.is_quorum(self.vset.stake_of_all(linked)):
                    return
                await trio.sleep(0.1)
        log.warning("starting consensus without a quorum of linked validators")

    async def _consensus_loop(self) -> None:
        while True:
            if self._voting_halted is not None:  # drain, so that links (and gossip) stay up
                await self._inbound_recv.receive()
                continue
            wake = self.replica.deadline
            if self._proposal_due is not None:
                wake = min(wake, self._proposal_due)
            got = None
            with trio.move_on_at(wake):
                got = await self._inbound_recv.receive()
            now = trio.current_time()
            if got is not None:
                sender, data = got
                if sender in self.transport.book.links:  # admitted validators only: bounded
                    self.peer_last_seen[sender] = time.time()
                if data[:1] == CONSENSUS:
                    await self._execute(self.replica.on_message(data[1:], now))
                else:
                    self.metrics.inc("p2p_dropped_total", reason="unknown_channel")
            if self._proposal_due is not None and now >= self._proposal_due:
                self._proposal_due = None
                height = self.replica.height
                proposal = self._build_block(height)
                if proposal is not None:
                    await self._execute(self.replica.propose(proposal))
            if now >= self.replica.deadline:
                await self._execute(self.replica.on_timer(now))

    async def _execute(self, actions: list[Any]) -> None:
        """Run the replica's actions in order; a store write that fails (disk full, I/O error)
        stops this node voting before any later action (the vote's broadcast) runs."""
        if self._voting_halted is not None:
            return
        try:
            await self._execute_actions(actions)
        except (OSError, sqlite3.Error) as exc:
            self._halt_voting(exc)

    def _halt_voting(self, exc: BaseException) -> None:
        full = "full" in str(exc) or getattr(exc, "errno", None) == 28  # ENOSPC, or SQLITE_FULL
        self._voting_halted = f"{'disk full' if full else 'store write failed'}: {exc}"
        self.metrics.set("voting_halted", 1)
        self.metrics.inc("store_write_failed_total", what="consensus")
        log.error(
            "stopped voting at height %d (%s): no vote that is not on disk is ever sent; still serving"
            " reads; free space in %s and restart the node",
            self.replica.height,
            self._voting_halted,
            self.data_dir,
        )

    async def _execute_actions(self, actions: list[Any]) -> None:
        decided = False
        for a in actions:
            if isinstance(a, PersistVote):
                await trio.to_thread.run_sync(self.store.append_vote, a.record)
                self.metrics.inc("votes_persisted_total")
            elif isinstance(a, Broadcast):
                self.transport.broadcast(CONSENSUS + encode(a.packet))
            elif isinstance(a, Send):
                self.transport.send(a.to, CONSENSUS + encode(a.packet))
            elif isinstance(a, Decide):
                await trio.to_thread.run_sync(self.store.put_decision, a.height, a.block, a.certificate)
                admitted, body = self.app.apply_decided(a.height, a.block)
                if self.app.state.is_epoch_start(a.height):  # the decided sets moved on
                    self._readmit()
                self._on_decided_for_evidence(a.height)
                if self.app.state.is_epoch_start(a.height):  # the epoch before last is settled
                    await trio.to_thread.run_sync(self.payloads.prune, self.app.state.epoch_of(a.height) - 1)
                    # the audit log's signed head: a small file, off the critical path
                    self._nursery.start_soon(trio.to_thread.run_sync, self.evaluator.refresh_audit_head)
                if self.dht is not None:
                    packet = DecisionPacket(block=a.block, certificate=a.certificate)
                    self._nursery.start_soon(
                        self._dht_publish, "block", self.dht.put_decision, self.cfg.netuid, a.height, packet
                    )
                    for item in body.registry:  # a decided module, fetchable by its hash from any node
                        if item.module is not None:
                            publish = (self._dht_publish, "module", self.dht.put_blob, item.module)
                            self._nursery.start_soon(*publish)
                await trio.to_thread.run_sync(self._after_decision, a.height, a.block, a.certificate)
                for sub in admitted:
                    self._nursery.start_soon(self._evaluate, sub)
                if body.weights is not None:
                    self._nursery.start_soon(self._submit_weights, body.weights)
                now = trio.current_time()
                if self._last_decide > 0:  # from when the height was due (paced) to its decision
                    due = self._last_decide + self.cfg.block_interval
                    self.metrics.observe("decision_latency_seconds", max(0.0, now - due))
                self._last_decide = now
                self.metrics.inc("heights_decided_total")
                self.metrics.set("height", a.height)
                log.info(
                    "decided height %d view %d block %s (%d signatures)",
                    a.height,
                    a.certificate.view,
                    a.certificate.block_hash.hex()[:12],
                    len(a.certificate.signatures),
                )
                decided = True
                if self.cfg.stop_at_height is not None and a.height >= self.cfg.stop_at_height:
                    self._done.set()
            elif isinstance(a, RequestProposal):
                self._proposal_due = max(trio.current_time(), self._last_decide + self.cfg.block_interval)
            elif isinstance(a, ReportEvidence):
                new = await trio.to_thread.run_sync(self.store.put_evidence, self.replica.height, a.evidence)
                if new:
                    self.metrics.inc("evidence_total")
                    log.warning("equivocation by %s recorded as evidence", a.evidence.first.signer.hex()[:12])
            elif isinstance(a, Rejected):
                self.metrics.inc("consensus_rejected_total", reason=a.reason)
                if a.reason == "height_too_far":
                    self._want_catch_up()  # far behind the network: the DHT may hold the blocks
                # a lagging node sees the live network's heights while it catches up: expected
                level = (
                    logging.DEBUG
                    if a.reason in ("height_too_far", "future_buffer_full", "send_budget")
                    else logging.WARNING
                )
                log.log(level, "refused consensus packet (%s): %s", a.reason, a.detail)
            elif isinstance(a, ViewChanged):
                self.metrics.inc("view_changes_total")
                log.info("height %d: moved to view %d", a.height, a.view)
        if decided:
            await self._execute(self.replica.on_timer(trio.current_time()))

    async def _evaluate(self, sub: Admitted) -> None:
        entry = self.app.state.registry.get(sub.challenge_id)
        if entry is None:
            return
        manifest = entry.manifest
        wasm = self.app.state.modules.get(manifest.wasm_sha256)
        if wasm is None:
            log.error("module for %s is missing; cannot evaluate", sub.challenge_id)
            return
        try:
            if self.aggregator.epoch_scored(manifest, wasm):
                self._attest_latency(sub)
                return
            payload = await self._payload_of(sub)  # a store error here is host-side too
            if payload is None:  # referenced, and nobody served the bytes in time
                ok, kind, score = False, "payload_unavailable", -1
            else:
                result = await self.evaluator.evaluate(manifest, wasm, replace(sub, payload=payload))
                ok, kind = result.ok and result.score is not None, result.error_kind
                score = result.score if ok else -1
        except Exception as exc:  # the sandbox contains guest faults; this is a host-side failure
            self.metrics.inc("evaluations_total", challenge=sub.challenge_id, result="host_error")
            log.error(
                "could not evaluate %s submission %s: %s", sub.challenge_id, sub.submission_id.hex()[:12], exc
            )
            ok, kind, score = False, "host_error", -1
        att = Attestation(
            epoch=self.app.state.epoch_of(sub.height),
            submission_id=sub.submission_id,
            score=score,
            error_kind=None if ok else (kind or "error")[:32],
        )
        env = seal(att, self.hotkey, self.cfg.netuid)
        self.app.offer(env)
        self._relay(env)
        log.info(
            "evaluated %s submission %s from uid %d: %s",
            sub.challenge_id,
            sub.submission_id.hex()[:12],
            sub.uid,
            score if ok else f"error {kind}",
        )

    async def _stop_on_signal(self) -> None:
        """SIGTERM (systemd, Docker) and SIGINT (Ctrl-C, pm2) stop the node the same clean way:
        weights being submitted may reach the chain first. A second Ctrl-C interrupts at once.
        SIGINT too when the process was started ignoring it (a background job of a shell script):
        an operator's `kill -INT` must not be lost (cli/run.py `take_sigint`)."""
        import signal

        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("%s: stopping", signal.Signals(signum).name)
                self._done.set()
                return
