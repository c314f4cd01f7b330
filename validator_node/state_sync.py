"""How a node's state is rebuilt, checkpointed, fetched from peers and the DHT, and mirrored there.

A mixin of `ValidatorNode`, kept apart from the node's event loop: on start the application state
comes from the checkpoint the node started from (if any) plus every decided block after it; an
empty node asks its peers and the DHT (at once) for the newest checkpoint they can prove, and
installs the newest one that verifies; every epoch's closing state is checkpointed once the next
block commits to it; decided blocks and checkpoints (snapshot blob + the subnet's checkpoint index,
`dht.records.CheckpointIndex`) are published to the Kademlia DHT in the background; and a node that
is behind fetches the decided blocks it lacks from the DHT, a window at a time, handing each to the
replica exactly as a peer's decision transfer arrives (so the replica verifies its certificate).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from consensus.messages import DecisionPacket
from consensus.replica import Replica, ReplicaConfig
from consensus.validators import ValidatorSet
from validator_node.app import Application
from validator_node.block import Block
from validator_node.metrics import Metrics
from validator_node.p2p.channels import CONSENSUS
from validator_node.pipeline.snapshot import (
    AppSnapshot,
    Checkpoint,
    CheckpointInvalid,
    restore,
    snapshot,
    verify_checkpoint,
    verify_stranger_checkpoint,
)
from validator_node.pipeline.state import AppState
from validator_node.pipeline.validator_sets import consensus_set
from validator_node.store import NodeStore
from wire.codec import decode, encode
from wire.errors import WireError
from wire.keys import Hotkey

log = logging.getLogger("validator_node")

#: decided blocks asked of the DHT at once when catching up (the replica buffers at most
#: `ReplicaConfig.future_heights` = 32 heights ahead, so a window must stay below that)
DHT_CATCH_UP_WINDOW = 16
#: one DHT lookup (a missing height costs a full lookup, so keep it short)
DHT_GET_TIMEOUT = 5.0
#: the first element of an inbound tuple for decisions fetched from the DHT (peers: their hotkey)
DHT_SENDER = b"dht"


def block_header(data: bytes) -> tuple[int, bytes]:
    """(height, state_root) of a decided block: how the DHT checks a checkpoint index."""
    b = decode(data, Block)
    return b.height, b.state_root


def refusal_reason(exc: BaseException) -> str:
    """A short metrics label for why a checkpoint candidate was refused."""
    from dht.kad import BlobNotFound
    from dht.records import RecordRefused

    if isinstance(exc, CheckpointInvalid):
        msg = str(exc)
        for prefix, reason in (
            ("certificate", "bad_certificate"),
            ("undecodable", "undecodable"),
            ("snapshot does not match", "state_root_mismatch"),
            ("snapshot is for another", "wrong_subnet"),
            ("genesis of its network", "wrong_genesis"),
        ):
            if msg.startswith(prefix):
                return reason
        return "wrong_height" if "does not follow" in msg else "invalid"
    if isinstance(exc, WireError):
        return "malformed"
    if isinstance(exc, BlobNotFound):
        return "snapshot_unavailable"
    if isinstance(exc, RecordRefused):
        return exc.reason
    if isinstance(exc, trio.TooSlowError):
        return "timeout"
    return "error"


class StateSync:
    # state owned by ValidatorNode (declared here for readers and type checkers)
    cfg: Any
    hotkey: Hotkey
    vset: ValidatorSet
    chain_vset: ValidatorSet
    store: NodeStore
    app: Application
    metrics: Metrics
    transport: Any
    replica: Replica
    dht: Any
    data_dir: Any
    _nursery: trio.Nursery
    _pending_checkpoint: tuple[int, bytes] | None
    _dht_backlog: int
    _validate_block: Callable[[int, bytes], str | None]
    _inbound_send: trio.MemorySendChannel[tuple[bytes, bytes]]
    _catch_up_wanted: trio.Event | None = None

    def _load_state(self) -> None:
        """Rebuild the application state: from the newest checkpoint this node holds (if any),
        then every decided block after it, each checked against the state root it commits to."""
        base, data = self.store.restart_point()
        if base:
            if data is None:
                raise RuntimeError(f"{self.store.path}: the base checkpoint {base} is missing")
            cp = decode(data, Checkpoint)
            # our own file: checked against the set it names for the block that certifies it
            named = consensus_set(
                restore(decode(cp.snapshot, AppSnapshot)), base, base + 1, self.app.genesis_vset
            )
            assert named is not None  # the height after a state is in its epoch or the next
            state = verify_checkpoint(
                cp,
                named,
                self.cfg.netuid,
                self.cfg.epoch_blocks,
                validators_as_miners=self.app.genesis.validators_as_miners,
            )
            self.app.install(state, base, decode(cp.next_block.block, Block).parent)
        committed = self.store.check_integrity(base)
        self.metrics.set("blocks_replayed_at_start", committed - base)
        for h in range(base + 1, committed + 1):
            decision = self.store.decision(h)
            assert decision is not None
            self.app.apply_decided(h, decision.block)

    def _new_replica(self) -> Replica:
        committed = self.store.tip()[0]
        records = self.store.votes_from(committed + 1)
        if committed or records:
            log.info("resuming at height %d with %d recorded votes", committed + 1, len(records))
        return Replica(
            self.hotkey,
            self.app.vset_for,
            self._validate_block,
            ReplicaConfig(netuid=self.cfg.netuid, base_timeout=self.cfg.base_timeout),
            committed_height=committed,
            records=records,
            decisions=self.store.decision,
        )

    async def _bootstrap_from_checkpoint(self, patience: float = 20.0, deadline: float = 90.0) -> None:
        """A node with an empty store starts from the newest checkpoint it can verify, instead of
        replaying every block since genesis (it still replays the blocks after it). Its linked
        peers (over the checkpoint protocol) and the DHT (the subnet's checkpoint index) are asked
        at once; every candidate is checked with `verify_checkpoint` against this node's
        validator set alone, and the highest one that verifies is installed."""
        with trio.move_on_after(patience):  # validators holding a quorum of stake, or what we have
            while not self.chain_vset.is_quorum(
                self.chain_vset.stake_of_all(set(self.transport.book.links) | {self.hotkey.public_key})
            ):
                await trio.sleep(0.2)
        found: list[tuple[str, bytes, Checkpoint, AppState]] = []
        with trio.move_on_after(deadline):
            async with trio.open_nursery() as nursery:
                for hotkey, link in sorted(self.transport.book.links.items()):
                    nursery.start_soon(self._checkpoint_from_peer, hotkey, link.peer_id, found)
                if self.dht is not None:
                    nursery.start_soon(self._checkpoint_from_dht, found)
        if not found:
            log.info("no checkpoint available from peers or the DHT; replaying from genesis")
            return
        await self._install_checkpoint(*found[0])

    @staticmethod
    def _keep_best(found: list[tuple[str, bytes, Checkpoint, AppState]], candidate: tuple) -> None:  # type: ignore[type-arg]
        """Keep only the highest verified checkpoint (each can hold a large state)."""
        if not found or candidate[2].height > found[0][2].height:
            found[:] = [candidate]

    async def _verified_checkpoint(self, data: bytes) -> tuple[Checkpoint, AppState]:
        """Decode and verify (certificate, state root, subnet) in a worker thread: restoring a
        large snapshot takes long enough to stall consensus if done on the event loop."""

        def check() -> tuple[Checkpoint, AppState]:
            cp = decode(data, Checkpoint)
            named = decode(cp.next_block.block, Block).genesis
            if named != self.app.genesis_hash:  # before any signature or snapshot work
                raise CheckpointInvalid(
                    f"genesis of its network is {named.hex()[:16]}..., not ours"
                    f" {self.app.genesis_hash.hex()[:16]}..."
                )
            # a stranger's checkpoint, checked against the chain's validators of today
            return cp, verify_stranger_checkpoint(
                cp,
                self.chain_vset,
                self.cfg.netuid,
                self.cfg.epoch_blocks,
                validators_as_miners=self.app.genesis.validators_as_miners,
            )

        return await trio.to_thread.run_sync(check)

    async def _checkpoint_from_peer(
        self, hotkey: bytes, peer_id: str, found: list[tuple[str, bytes, Checkpoint, AppState]]
    ) -> None:
        try:
            data = await self.transport.request_checkpoint(peer_id)
            if data is None:
                return
            cp, state = await self._verified_checkpoint(data)
        except Exception as exc:  # a peer serving junk is refused; others may do better
            self.metrics.inc("checkpoints_refused_total", source="peer", reason=refusal_reason(exc))
            log.warning("checkpoint from %s refused: %s", hotkey.hex()[:12], str(exc))
            return
        self._keep_best(found, ("peer", data, cp, state))

    async def _checkpoint_from_dht(self, found: list[tuple[str, bytes, Checkpoint, AppState]]) -> None:
        """The subnet's checkpoint index, then the snapshot it names. The DHT already refused any
        index whose certificate or state root does not check out (counted as
        dht_records_refused_total{ns="bt-checkpoint"}); what it returns is verified again here
        exactly as a peer's checkpoint is."""
        with trio.move_on_after(5):  # identify and add_peer run after each link comes up
            while self.dht.routing_table_size() < len(self.transport.book.links):
                await trio.sleep(0.1)
        try:
            got = await self.dht.get_checkpoint(self.cfg.netuid)
            if got is None:
                log.info("the DHT holds no checkpoint index for netuid %d", self.cfg.netuid)
                return
            height, snap, next_block = got
            data = encode(Checkpoint(height, snap, next_block))
            cp, state = await self._verified_checkpoint(data)
        except Exception as exc:
            self.metrics.inc("checkpoints_refused_total", source="dht", reason=refusal_reason(exc))
            log.warning("checkpoint from the DHT refused: %s", str(exc))
            return
        self._keep_best(found, ("dht", data, cp, state))

    async def _install_checkpoint(self, source: str, data: bytes, cp: Checkpoint, state: AppState) -> None:
        height, nb = cp.height, cp.next_block
        await trio.to_thread.run_sync(self.store.install_checkpoint, height, data)
        await trio.to_thread.run_sync(self.store.put_decision, height + 1, nb.block, nb.certificate)
        self.app.install(state, height, decode(nb.block, Block).parent)
        self.app.apply_decided(height + 1, nb.block)
        self.replica = self._new_replica()
        self.metrics.inc("checkpoints_installed_total", source=source)
        log.info(
            "started from checkpoint at height %d from %s (verified by the certificate of block %d)",
            height,
            "the DHT" if source == "dht" else "a peer",
            height + 1,
        )
        self._want_catch_up()

    def _after_decision(self, height: int, block: bytes, certificate: Any) -> None:
        """Checkpoint the state after each epoch's last block, once the next block commits to it."""
        pending = self._pending_checkpoint
        if pending is not None and pending[0] == height - 1:
            packet = DecisionPacket(block=block, certificate=certificate)
            cp = Checkpoint(pending[0], pending[1], packet)
            data = encode(cp)
            self.store.put_checkpoint(pending[0], data)
            self._pending_checkpoint = None
            if self.dht is not None:  # the snapshot blob, then the index that proves and names it
                args = (self.cfg.netuid, pending[0], pending[1], packet)
                trio.from_thread.run_sync(
                    self._nursery.start_soon, self._dht_publish, "checkpoint", self.dht.put_checkpoint, *args
                )
            self.metrics.inc("checkpoints_written_total")
        if self.app.state.is_epoch_end(height):
            self._pending_checkpoint = (height, encode(snapshot(self.app.state)))

    async def _run_dht(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        from dht.kad import DhtNode

        node = DhtNode(
            self.transport.host,
            self.cfg.netuid,
            self.app.known_vset,
            # heights this node has no set for (a new node's checkpoint): today's chain
            trust_for=lambda height: self.chain_vset,
            store_path=self.data_dir / "dht.sqlite",
            metrics=self.metrics,
            block_header=block_header,
        )
        async with node.running():
            self.dht = node
            # the genesis record, content-addressed (/bt-content/<genesis hash>), for joiners and
            # auditors holding the hash
            self._nursery.start_soon(self._dht_publish, "genesis", node.put_blob, encode(self.app.genesis))
            self._catch_up_wanted = trio.Event()
            for link in list(self.transport.book.links.values()):
                self._nursery.start_soon(self._dht_add_peer, link.peer_id)
            task_status.started()
            await trio.sleep_forever()

    def _on_link(self, hotkey: bytes, peer_id: str) -> None:
        if self.dht is not None:
            self._nursery.start_soon(self._dht_add_peer, peer_id)

    async def _dht_add_peer(self, peer_id: str) -> None:
        """The routing table is not filled by connecting; identify must run first, so retry."""
        from libp2p.peer.id import ID

        for _ in range(10):
            try:
                if await self.dht.add_peer(ID.from_base58(peer_id)):
                    return
            except Exception as exc:
                log.debug("dht add_peer %s: %s", peer_id[-12:], exc)
            await trio.sleep(0.5)

    async def _dht_publish(self, what: str, fn: Any, *args: Any) -> None:
        """Publish in the background, bounded: the DHT is a replica of what the store holds, so
        when it falls behind we skip (and count) rather than queue without limit."""
        if self.dht is None:
            return
        if self._dht_backlog >= 8:
            self.metrics.inc("dht_publish_skipped_total", what=what)
            return
        self._dht_backlog += 1
        try:
            await fn(*args)
        except Exception as exc:
            self.metrics.inc("dht_publish_failed_total", what=what)
            log.debug("dht publish of %s failed: %s", what, exc)
        finally:
            self._dht_backlog -= 1

    # --- catching up from the DHT -----------------------------------------------------------

    def _want_catch_up(self) -> None:
        """Ask the DHT catch-up task for a round (after a checkpoint install, on start, and when
        peers' statements show the network far ahead). Cheap; rounds are rate-limited."""
        if self._catch_up_wanted is not None:
            self._catch_up_wanted.set()

    async def _run_dht_catch_up(self, min_interval: float = 1.0) -> None:
        """Run catch-up rounds when asked, at most one per `min_interval` seconds, and keep going
        while rounds make progress. The first round runs at once (a restarted node is behind by
        however long it was down); and when consensus has decided nothing for a while (a stall:
        peers gone quiet or unreachable), the DHT is probed anyway, as a backstop."""
        self._want_catch_up()
        stalled_after = max(5.0, 2.0 * self.cfg.base_timeout, 3.0 * self.cfg.block_interval)
        while self._catch_up_wanted is not None:
            with trio.move_on_after(stalled_after):
                await self._catch_up_wanted.wait()
            if not self._catch_up_wanted.is_set():
                last = getattr(self, "_last_decide", 0.0)
                if trio.current_time() - last < stalled_after:
                    continue  # deciding normally: nothing to ask the DHT for
            self._catch_up_wanted = trio.Event()
            try:
                n = await self._catch_up_from_dht()
            except Exception as exc:  # the DHT is a best-effort source; peers still catch us up
                self.metrics.inc("dht_catch_up_errors_total")
                log.warning("catch-up from the DHT failed: %s", str(exc))
            else:
                if n:
                    log.info(
                        "caught up %d decided blocks from the DHT (now at %d)", n, self.replica.height - 1
                    )
                    self._want_catch_up()  # there may be more than one round's worth
            await trio.sleep(min_interval)

    async def _catch_up_from_dht(
        self, window: int = DHT_CATCH_UP_WINDOW, get_timeout: float = DHT_GET_TIMEOUT
    ) -> int:
        """Fetch the decided blocks from the replica's height on, a window at a time, until the
        DHT has no more; each goes into the consensus inbox as a `DecisionPacket`, where the
        replica verifies its certificate against the validator set and decides it (or refuses
        it: consensus_rejected_total) exactly as for a peer's decision transfer. Returns how many
        heights the replica advanced."""
        advanced = 0
        while True:
            start = self.replica.height
            batch = await self._dht_window(start, window, get_timeout)
            if not batch:
                return advanced
            for pkt in batch:
                await self._inbound_send.send((DHT_SENDER, CONSENSUS + encode(pkt)))
            self.metrics.inc("decisions_fetched_total", len(batch), source="dht")
            target = start + len(batch)
            with trio.move_on_after(max(30.0, 2.0 * len(batch))):
                while self.replica.height < target:
                    await trio.sleep(0.02)
            if self.replica.height <= start:
                return advanced  # refused (counted by the replica) or stuck: leave it to peers
            advanced += self.replica.height - start
            if len(batch) < window:
                return advanced

    async def _dht_window(self, start: int, window: int, timeout: float) -> list[DecisionPacket]:
        """The decided blocks start, start+1, ... that the DHT has without a gap (at most
        `window`): one lookup first (the common case is that there is nothing new), then the
        rest of the window concurrently."""
        first = await self._dht_decision(start, timeout)
        if first is None:
            return []
        rest: list[DecisionPacket | None] = [None] * (window - 1)
        limit = trio.CapacityLimiter(8)

        async def fetch(i: int) -> None:
            async with limit:
                rest[i] = await self._dht_decision(start + 1 + i, timeout)

        async with trio.open_nursery() as nursery:
            for i in range(window - 1):
                nursery.start_soon(fetch, i)
        batch = [first]
        for pkt in rest:
            if pkt is None:
                break
            batch.append(pkt)
        return batch

    async def _dht_decision(self, height: int, timeout: float) -> DecisionPacket | None:
        """The certified block at `height` from the DHT, or None (not there, refused or slow;
        refusals are counted by the DHT layer as dht_records_refused_total / dht_ops_total)."""
        with trio.move_on_after(timeout):
            try:
                return await self.dht.get_decision(self.cfg.netuid, height)  # type: ignore[no-any-return]
            except Exception as exc:
                log.debug("dht get_decision %d: %s", height, str(exc))
        return None
