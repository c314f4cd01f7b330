"""py-libp2p 0.8.1's pubsub, adapted for `AppGossip` (gossip.py explains why each change).

Subclasses and wrappers, each for one thing the library does that a validator cannot live with:
a mesh and subscriptions open to non-validators, an equivocation map holding whole messages, a
validation cache keyed by message id alone, outbound and subscription queues that drop without a
trace, a malformed RPC or an interleaved write that takes the host down, and a signed peer record
built and verified on every RPC.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import trio
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.rpc_queue import RpcQueue

from validator_node.metrics import Metrics

log = logging.getLogger("validator_node.p2p.gossip")


class AdmittedRouter(GossipSub):
    """GossipSub with a bounded equivocation map and delivery log, and a mesh closed to
    non-validators."""

    def __init__(self, *, admitted: Callable[[str], bool], equivocation_cap: int, **kw: Any) -> None:
        super().__init__(**kw)
        self._admitted = admitted
        self._equivocation_cap = equivocation_cap
        self.grafts_ignored = 0

    def _check_equivocation(self, msg: rpc_pb2.Message) -> bool:
        # same semantics as the library's, but a digest per entry instead of the whole message,
        # and a hard cap (oldest first); the library's heartbeat trim also still applies
        key = msg.from_id + msg.seqno
        digest = hashlib.sha256(msg.data + b"\x00" + "\x00".join(msg.topicIDs).encode()).digest()
        seen = self.equivocation_detection.get(key)
        if seen is not None:
            if seen != digest:
                log.info("gossip: peer %s equivocated (same seqno, other content)", ID(msg.from_id))
                if self.scorer is not None:
                    self.scorer.penalize_equivocation(ID(msg.from_id), 100.0)
                return False
            return True
        table: dict[bytes, Any] = self.equivocation_detection
        table[key] = digest
        while len(table) > self._equivocation_cap:
            del table[next(iter(table))]
        return True

    def trim_delivery_log(self) -> None:
        """py-libp2p 0.8.1 appends a timestamp per relayed message per topic to
        `recent_message_deliveries` and prunes it only in its adaptive-gossip health update, which
        is off here (gossip.py): a float per message for ever (issue 12's memory growth). The log
        is read only by that update, so without it the log is kept empty."""
        if not self.adaptive_gossip_enabled:
            self.recent_message_deliveries.clear()

    def _get_peers_to_send(
        self, topic_ids: Iterable[str], msg_forwarder: ID, origin: ID, msg_id: bytes | None = None
    ) -> Iterator[ID]:
        # py-libp2p 0.8.1 sends a message we publish to our mesh peers only. After a peer
        # reconnects, it is back in the topic (stream open, subscription known) but out of our
        # mesh until the next heartbeat GRAFTs it, and that GRAFT does not resend: an item we
        # publish in that window never reaches it (the IHAVE gossip goes to non-mesh peers,
        # and a republish is a duplicate under content ids). With two validators that is every
        # item accepted in the second after a redial. As rust-libp2p (#5578) and
        # js-libp2p-gossipsub (#493) do, our own publishes go to at least `degree` admitted
        # topic peers: the mesh, topped up from the others. Relayed messages are unchanged.
        chosen = set(super()._get_peers_to_send(topic_ids, msg_forwarder, origin, msg_id))
        pubsub = self.pubsub
        if pubsub is not None and msg_forwarder == origin == pubsub.my_id:
            for topic in topic_ids:
                # the peers the library picked for the topic: its mesh, or (not subscribed) fanout
                picked = self.mesh[topic] if topic in self.mesh else self.fanout.get(topic, set())
                room = self.degree - len(picked)
                if room <= 0:
                    continue
                extra = [
                    p
                    for p in pubsub.peer_topics.get(topic, ())
                    if p not in chosen
                    and p in pubsub.peers
                    and p in self.peer_protocol
                    and self._admitted(p.to_string())
                ]
                chosen.update(random.sample(extra, min(room, len(extra))))
        yield from chosen

    async def handle_graft(self, graft_msg: rpc_pb2.ControlGraft, sender_peer_id: ID) -> None:
        # not pruned (a PRUNE imposes a 60 s backoff, and a validator whose handshake is still
        # under way would be shut out of our mesh for that long): ignored until it is admitted
        if not self._admitted(sender_peer_id.to_string()):
            self.grafts_ignored += 1
            return
        await super().handle_graft(graft_msg, sender_peer_id)


class NoValidationCache:
    """py-libp2p caches validation results by message id; ours depend on the forwarder too."""

    def get(self, msg_id: bytes) -> None:
        return None

    def put(self, msg_id: bytes, result: object) -> None:
        pass

    def clear_expired(self) -> None:
        pass


class CountingQueues(dict):  # type: ignore[type-arg]
    """Pubsub's per-peer outbound queues, sized by us and counting what they refuse."""

    def __init__(self, size: int, on_drop: Callable[[], None]) -> None:
        super().__init__()
        self.size = size
        self.on_drop = on_drop

    def __setitem__(self, peer: ID, queue: RpcQueue) -> None:
        queue._queue.max_size = self.size
        push = queue.push

        def counting_push(rpc: rpc_pb2.RPC, priority: bool = False) -> bool:
            ok = push(rpc, priority)
            if not ok and not queue.closed:
                self.on_drop()
            return ok

        queue.push = counting_push  # type: ignore[method-assign]
        super().__setitem__(peer, queue)


class CountingSend:
    """Wraps the subscription's send channel to count the messages it has no room for."""

    def __init__(self, inner: trio.MemorySendChannel[rpc_pb2.Message], on_drop: Callable[[], None]) -> None:
        self.inner = inner
        self.on_drop = on_drop

    def send_nowait(self, msg: rpc_pb2.Message) -> None:
        try:
            self.inner.send_nowait(msg)
        except trio.WouldBlock:
            self.on_drop()
            raise

    async def aclose(self) -> None:
        await self.inner.aclose()


class AdmittedPubsub(Pubsub):
    def __init__(
        self, *args: Any, topic: str, admitted: Callable[[str], bool], metrics: Metrics, **kw: Any
    ) -> None:
        super().__init__(*args, **kw)
        self.stopping = False
        self._topic = topic
        self._admitted = admitted
        self._metrics = metrics
        self.held: dict[ID, rpc_pb2.RPC.SubOpts] = {}  # subscriptions of not (yet) admitted peers
        self._write_locks: weakref.WeakKeyDictionary[Any, trio.Lock] = weakref.WeakKeyDictionary()

    async def stream_handler(self, stream: Any) -> None:
        peer = stream.muxed_conn.peer_id
        try:
            await super().stream_handler(stream)
        except RuntimeError as exc:
            # py-libp2p 0.8.1: a message arriving while pubsub stops spawns a task into a
            # closing nursery; that must not bring down the host's nursery with it
            if "closed to new arrivals" not in str(exc):
                raise
            with contextlib.suppress(Exception):
                await stream.reset()
        except Exception as exc:
            # py-libp2p 0.8.1 lets a protobuf DecodeError (any peer sending a malformed RPC)
            # escape its stream handler, which takes the whole host, and the node, down
            self._metrics.inc("gossip_refused_total", reason="bad_rpc")
            log.info("gossip: malformed RPC from peer %s: %r; stream reset", peer.to_string()[-12:], exc)
            with contextlib.suppress(Exception):
                await stream.reset()
            self._handle_dead_peer(peer)

    async def write_msg(self, stream: Any, rpc_msg: rpc_pb2.RPC) -> bool:
        # py-libp2p 0.8.1 writes to a peer's stream from its sending loop and, directly, from
        # the router (pending-message flush, replay of recent messages to a new subscriber);
        # yamux splits a write into 64 KiB frames, so two writers interleave the frames of
        # larger messages and the reader sees a corrupt RPC. One writer at a time per stream.
        lock = self._write_locks.get(stream)
        if lock is None:
            lock = self._write_locks[stream] = trio.Lock()
        async with lock:
            try:
                return await super().write_msg(stream, rpc_msg)
            except Exception:
                # a message cut off in the middle would corrupt everything after it
                with contextlib.suppress(Exception):
                    await stream.reset()
                raise

    async def push_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        # py-libp2p 0.8.1 verifies the Ed25519 signature (strict signing) before it runs the
        # topic validator, where our admission check lives: any connected stranger could make
        # us verify signatures at line rate. Refuse it first; our own publishes pass.
        if msg_forwarder != self.my_id:
            reason = self._not_admitted(msg_forwarder, msg)
            if reason is not None:
                self._metrics.inc("gossip_refused_total", reason="not_admitted")
                log.debug(
                    "gossip: dropped a message from peer %s before any signature work: %s",
                    msg_forwarder.to_string()[-12:],
                    reason,
                )
                return
        await super().push_msg(msg_forwarder, msg)

    def _not_admitted(self, forwarder: ID, msg: rpc_pb2.Message) -> str | None:
        if not self._admitted(forwarder.to_string()):
            return "the forwarding peer is not an admitted validator"
        if msg.from_id == forwarder.to_bytes():
            return None
        try:
            origin = ID(msg.from_id).to_string()
        except Exception:
            return "the message has no valid origin peer id"
        if not self._admitted(origin):
            return f"the origin {origin[-12:]} is not an admitted validator"
        return None

    # --- streams left over from a previous connection ---------------------------------------

    def _stale(self, peer_id: ID) -> bool:
        """Our outbound pubsub stream to `peer_id` rides a connection that is closed."""
        stream = self.peers.get(peer_id)
        if stream is None:
            return False
        muxed = getattr(stream, "muxed_conn", None)
        return muxed is None or bool(getattr(muxed, "is_closed", False))

    def _drop_stale(self, peer_id: ID) -> None:
        # Only our outbound side: the peer's subscriptions (learnt on its stream to us, which
        # may well be on the live connection) are kept; a fresh stream re-sends our hello.
        del self.peers[peer_id]
        queue = self.peer_queues.pop(peer_id, None)
        if queue is not None:
            queue.close()
        self._replayed_recent_topics.pop(peer_id, None)
        with contextlib.suppress(Exception):
            self.router.remove_peer(peer_id)
        self._metrics.inc("gossip_stale_streams_total")
        log.info(
            "gossip: replacing a pubsub stream to peer %s left from a closed connection",
            peer_id.to_string()[-12:],
        )

    async def _handle_new_peer(self, peer_id: ID) -> None:
        # py-libp2p 0.8.1 skips a peer that is still listed; after a hang-up and redial the
        # listing can be the stream of the old connection (the dead-peer handler keeps it when
        # the new connection is already up), so gossip to that peer stopped for good
        if self._stale(peer_id):
            self._drop_stale(peer_id)
        await super()._handle_new_peer(peer_id)

    def replace_stale_streams(self) -> None:
        """Once a second: a listed stream whose connection closed is dropped, and reopened
        while the peer is still connected on another connection."""
        for peer_id in [p for p in list(self.peers) if self._stale(p)]:
            if self._peer_is_connected(peer_id):
                self._drop_stale(peer_id)
                self._schedule_peer_stream_retry(peer_id)
            else:
                self._handle_dead_peer(peer_id)

    def handle_subscription(self, origin_id: ID, sub_message: rpc_pb2.RPC.SubOpts) -> None:
        if sub_message.topicid == self._topic:
            if sub_message.subscribe and not self._admitted(origin_id.to_string()):
                if origin_id not in self.held and len(self.held) >= 1024:
                    del self.held[next(iter(self.held))]
                self.held[origin_id] = sub_message
                return
            if not sub_message.subscribe:
                self.held.pop(origin_id, None)
        super().handle_subscription(origin_id, sub_message)

    def sync_admission(self) -> None:
        """Apply held subscriptions of peers admitted since, and hold again those of peers
        that lost admission (their permit was revoked)."""
        for peer, sub in list(self.held.items()):
            if peer not in self.peers and not self._peer_is_connected(peer):
                del self.held[peer]
            elif self._admitted(peer.to_string()):
                del self.held[peer]
                super().handle_subscription(peer, sub)
        for peer in list(self.peer_topics.get(self._topic, ())):
            if not self._admitted(peer.to_string()):
                self._forget_subscription(peer, self._topic)
                router = self.router
                for table in (getattr(router, "mesh", {}), getattr(router, "fanout", {})):
                    table.get(self._topic, set()).discard(peer)
                self.held[peer] = rpc_pb2.RPC.SubOpts(subscribe=True, topicid=self._topic)


_RECORD_TTL = 5.0
_record_caches_installed = False


def install_record_caches() -> None:
    """Cache py-libp2p's signed peer record on both ends of every pubsub RPC (process-wide,
    same results). Every RPC carries the sender's signed peer record: building it calls
    `host.get_addrs()` (0.8 ms, measured) and receiving it verifies an Ed25519 signature and
    rewrites the peerstore (0.5 ms), per RPC, so on a 4-validator full mesh, where each item
    reaches each node three times, these two made up about half of gossip's CPU. Our record is
    rebuilt at most every 5 s; an identical record from the same peer is verified once every
    10 minutes."""
    global _record_caches_installed
    if _record_caches_installed:
        return
    import libp2p.pubsub.gossipsub as gossipsub_module
    import libp2p.pubsub.pubsub as pubsub_module

    build = pubsub_module.env_to_send_in_RPC
    consume = pubsub_module.maybe_consume_signed_record
    built: weakref.WeakKeyDictionary[Any, tuple[float, bytes]] = weakref.WeakKeyDictionary()
    consumed: dict[tuple[bytes, bytes], float] = {}

    def cached_build(host: Any) -> tuple[bytes, bool]:
        now = time.monotonic()
        hit = built.get(host)
        if hit is not None and now - hit[0] < _RECORD_TTL:
            return hit[1], False
        envelope, fresh = build(host)
        built[host] = (now, envelope)
        return envelope, fresh

    def cached_consume(msg: rpc_pb2.RPC, host: Any, peer_id: ID) -> bool:
        if not msg.HasField("senderRecord"):
            return True
        key = (peer_id.to_bytes(), msg.senderRecord)
        now = time.monotonic()
        at = consumed.get(key)
        if at is not None and now - at < 600:  # re-consumed every 10 min: the peerstore TTL is 2 h
            return True
        ok: bool = consume(msg, host, peer_id)
        if ok:
            consumed.pop(key, None)
            consumed[key] = now
            while len(consumed) > 4096:
                del consumed[next(iter(consumed))]
        return ok

    for module in (pubsub_module, gossipsub_module):
        module.env_to_send_in_RPC = cached_build  # type: ignore[attr-defined]
        module.maybe_consume_signed_record = cached_consume  # type: ignore[attr-defined]
    _record_caches_installed = True
