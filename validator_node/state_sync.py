"""How a node's state is rebuilt, checkpointed, fetched from peers and mirrored to the DHT.

A mixin of `ValidatorNode`, kept apart from the node's event loop: on start the application state
comes from the checkpoint the node started from (if any) plus every decided block after it; an
empty node asks its peers for the newest checkpoint they can prove; every epoch's closing state is
checkpointed once the next block commits to it; decided blocks and checkpoints are published to
the Kademlia DHT in the background.
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
from validator_node.pipeline.snapshot import Checkpoint, snapshot, verify_checkpoint
from validator_node.store import NodeStore
from wire.codec import decode, encode
from wire.keys import Hotkey

log = logging.getLogger("validator_node")


class StateSync:
    # state owned by ValidatorNode (declared here for readers and type checkers)
    cfg: Any
    hotkey: Hotkey
    vset: ValidatorSet
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

    def _load_state(self) -> None:
        """Rebuild the application state: from the checkpoint this node started from (if any),
        then every decided block after it, each checked against the state root it commits to."""
        base = self.store.base_height()
        if base:
            data = self.store.checkpoint_at(base)
            if data is None:
                raise RuntimeError(f"{self.store.path}: the base checkpoint {base} is missing")
            cp = decode(data, Checkpoint)
            state = verify_checkpoint(cp, self.vset, self.cfg.netuid, self.cfg.epoch_blocks)
            self.app.install(state, base, decode(cp.next_block.block, Block).parent)
        committed = self.store.check_integrity()
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
            lambda h: self.vset,
            self._validate_block,
            ReplicaConfig(netuid=self.cfg.netuid, base_timeout=self.cfg.base_timeout),
            committed_height=committed,
            records=records,
            decisions=self.store.decision,
        )

    async def _bootstrap_from_checkpoint(self, patience: float = 20.0) -> None:
        """A node with an empty store starts from the newest checkpoint a peer can prove, instead
        of replaying every block since genesis (it still replays the blocks after it)."""
        with trio.move_on_after(patience):
            while not self.transport.book.links:
                await trio.sleep(0.2)
        best: tuple[int, bytes, Checkpoint] | None = None
        for hotkey, link in sorted(self.transport.book.links.items()):
            try:
                data = await self.transport.request_checkpoint(link.peer_id)
                if data is None:
                    continue
                cp = decode(data, Checkpoint)
                verify_checkpoint(cp, self.vset, self.cfg.netuid, self.cfg.epoch_blocks)
            except Exception as exc:  # a peer serving junk is refused; others may do better
                self.metrics.inc("checkpoints_refused_total")
                log.warning("checkpoint from %s refused: %s", hotkey.hex()[:12], exc)
                continue
            if best is None or cp.height > best[0]:
                best = (cp.height, data, cp)
        if best is None:
            log.info("no checkpoint available from peers; replaying from genesis")
            return
        height, data, cp = best
        state = verify_checkpoint(cp, self.vset, self.cfg.netuid, self.cfg.epoch_blocks)
        nb = cp.next_block
        await trio.to_thread.run_sync(self.store.install_checkpoint, height, data)
        await trio.to_thread.run_sync(self.store.put_decision, height + 1, nb.block, nb.certificate)
        self.app.install(state, height, decode(nb.block, Block).parent)
        self.app.apply_decided(height + 1, nb.block)
        self.replica = self._new_replica()
        self.metrics.inc("checkpoints_installed_total")
        log.info(
            "started from checkpoint at height %d (verified by the certificate of block %d)",
            height,
            height + 1,
        )

    def _after_decision(self, height: int, block: bytes, certificate: Any) -> None:
        """Checkpoint the state after each epoch's last block, once the next block commits to it."""
        pending = self._pending_checkpoint
        if pending is not None and pending[0] == height - 1:
            cp = Checkpoint(pending[0], pending[1], DecisionPacket(block=block, certificate=certificate))
            data = encode(cp)
            self.store.put_checkpoint(pending[0], data)
            self._pending_checkpoint = None
            if self.dht is not None:
                trio.from_thread.run_sync(
                    self._nursery.start_soon, self._dht_publish, "checkpoint", self.dht.put_blob, data
                )
            self.metrics.inc("checkpoints_written_total")
        if self.app.state.is_epoch_end(height):
            self._pending_checkpoint = (height, encode(snapshot(self.app.state)))

    async def _run_dht(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        from dht.kad import DhtNode

        node = DhtNode(
            self.transport.host,
            self.cfg.netuid,
            lambda height: self.vset,
            store_path=self.data_dir / "dht.sqlite",
            metrics=self.metrics,
        )
        async with node.running():
            self.dht = node
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
