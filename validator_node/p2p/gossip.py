"""GossipSub v1.1 for application items between validators.

Miner submissions, evaluation attestations, evidence votes and bundles, and sudo registry items
(`APP_GOSSIP_TYPES`) travel between validators on one GossipSub topic per subnet,
`/bt-platform/<netuid>/items/1`, on the node's existing libp2p host (TCP + Noise + yamux).
Consensus packets do not: they keep their direct stream (`/bt-platform/consensus/1.0.0`, see
host.py), with its own queues, so a burst of miner traffic can never delay a vote.

Protocol, for other implementations to match (interop over tcp+noise+yamux+gossipsub):

* router protocol `/meshsub/1.1.0` only;
* **strict signing**: every message carries `from`, `seqno`, `key` and a signature (Ed25519 peer
  key over `"libp2p-pubsub:" + Message`); unsigned or badly signed messages are dropped;
* **message id = SHA-256 of the message data** (the raw 32-byte digest, not hex or multibase).
  The id is by content, so the same message published by two validators (a miner may hand the
  same item to both) is one message, seen once;
* message data, at most `MAX_GOSSIP_DATA` bytes (RPC frames up to the usual 1 MiB), is the
  canonical cbor encoding of either one `APP_GOSSIP_TYPES` item or a `p2p.itembatch` v1:
  `["p2p.itembatch", 1, [item, ...]]`, 2 to 1024 byte strings, each the encoding of one item
  (no nesting). A receiver must accept both.

Refused before relaying (topic validator, counted in `gossip_refused_total{reason}`):
`not_admitted` (the forwarding peer or the signed origin is not a validator that passed the
attestation handshake, see host.py), `oversize`, `rate_limited` (our own per-peer accounting,
below), `malformed` (does not decode as an app item). Subscriptions from peers that are not
admitted are held back (not entered in the topic's peer table) until they are, and their GRAFTs
are ignored, so a non-validator can neither inject items nor take a slot in our mesh.

Settings, and why (py-libp2p 0.8.1 facts measured in research/deps.md §2, or read in its source):

* `spam_protection_enabled=False`. Its limit is 10 msgs/s per peer per topic, own publishes
  included, and it applies *after* validation, so over the limit a message is delivered but
  silently not relayed (10 of 1000 arrived in the measurement). A single mesh peer can
  legitimately be the first to deliver every item on the topic (about 50 x (1 + validators)
  msgs/s at 50 submissions/s: the submission plus one attestation per validator), so the
  replacement is our own per-forwarder accounting in the topic validator: token buckets of
  1000 msgs/s (burst 4000) and 16 MiB/s (burst 64 MiB), several times the honest peak, which
  only a runaway or hostile validator reaches; each refusal is counted.
* Outbound queue 4096 RPCs per peer (default 32, overflow dropped at DEBUG: 32 of 1000
  arrived) and subscription channel 4096 (default 32, overflow dropped with a warning). A pure
  Python receiver drains 100-250 msgs/s with 4 nodes on 2 cores, so 4096 rides out a burst of
  roughly 15 s at the honest peak; beyond that the peer is hopelessly behind and the drop is
  counted (`gossip_dropped_total{reason="outbound_queue_full"|"subscription_full"}`).
* Degree D=6, D_lo=5, D_hi=12, heartbeat 1 s, gossip window 3 / history 5 heartbeats, seen
  TTL 120 s: the go-libp2p-pubsub defaults, except that py-libp2p's default heartbeat is 120 s
  (mesh repair and IHAVE gossip once every two minutes). With up to 7 validators the mesh is
  every validator; with 64 it is about three hops. A duplicate is dropped by the seen cache
  before the signature check, but it has already cost its transport (yamux, Noise, protobuf):
  on a full mesh of 4 each message reaches each node 3 times, where the old direct 0x01 frames
  reached it once.
* Batching: the publisher waits `batch_linger` = 50 ms after an item, then sends what has
  gathered (up to 256 items, within the size cap) as one `p2p.itembatch`; a lone item goes
  alone. Per-message cost in py-libp2p is fixed and high (about 1.5 ms of CPU per transmission
  on this machine), and items come in bursts (a decided block's attestations), so this cut the
  messages about 4x in the devnet benchmark, where one message per item had slowed blocks from
  0.86/s to 0.6/s (8-12 view changes instead of 1-2) and tripled submission latency. 50 ms is
  small against the 1 s block interval. The cost: an item relayed in two different batches is
  deduplicated by the node (`duplicate`), not by the message id.
* Signed peer record cached (`install_record_caches`): py-libp2p builds one for every RPC it
  sends (0.8 ms, `host.get_addrs()`) and verifies the one in every RPC it receives (0.5 ms).
* `adaptive_gossip_enabled=False`: its "network health" score (which counts zero-score peers as
  unhealthy) moves the heartbeat to 60 s whenever health < 0.7, on our 1 s base.
* `eclipse_protection_enabled=False`: it wants 3 distinct IPs in the mesh and grafts past D_hi
  every heartbeat when it does not find them (always, on loopback or behind one provider). Our
  eclipse protection is admission: only attested validators enter the mesh.
* Validation cache off: py-libp2p caches a refusal by message id for 300 s; with content ids a
  copy of an item sent first by a non-validator would make us refuse the same item from a
  validator. Our validator is cheap (a cbor decode).
* Bounded memory. Seen cache: TTL 120 s, swept every 10 s, and trimmed to `max_seen` entries
  (oldest expiry first) if a burst outruns the TTL. `equivocation_detection` (same from+seqno
  with different content) stored each whole message and was only trimmed above 1000 entries at
  a heartbeat; we store a 32-byte digest per entry and cap it at `equivocation_cap`.
* Two py-libp2p 0.8.1 bugs that take a node down, worked around here: a malformed RPC from any
  peer raised a protobuf DecodeError out of the pubsub stream handler and through `host.run`
  (now: stream reset, counted as `gossip_refused_total{reason="bad_rpc"}`); and the router
  wrote to a peer's stream from several tasks at once, interleaving the 64 KiB yamux frames of
  larger messages (an 80 KB evidence bundle did it in the devnet benchmark), so the receiver
  hit that DecodeError (now: one writer at a time per stream).
* Shutdown: pubsub and the router stop before the host (run() is nested inside `host.run`),
  and a `Nursery is closed to new arrivals` raised by a pubsub stream handler while stopping is
  absorbed instead of escaping `host.run`. The seen cache's sweeper thread is stopped.
* Reconnects (a hang-up and redial between two validators, 20 times in
  tests/node/test_gossip_reconnect.py): a pubsub stream left on the closed connection is
  replaced (py-libp2p skipped a peer still listed, so gossip to it stopped for good), and our
  own publishes go to at least `degree` admitted topic peers, topping the mesh up from the
  others, as rust-libp2p and js-libp2p-gossipsub do: a reconnected peer is out of the mesh until
  the next heartbeat GRAFTs it, and an item published in that second never reached it (the
  GRAFT does not resend; a republish is a duplicate under content ids). With up to `degree`
  validators that sends each own message to all of them, as the mesh already did.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import trio
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.rpc_queue import DefaultMaxMessageSize
from libp2p.tools.anyio_service import background_trio_service

from validator_node.metrics import Metrics
from validator_node.p2p.pubsub_fixes import (
    AdmittedPubsub,
    AdmittedRouter,
    CountingQueues,
    CountingSend,
    NoValidationCache,
    install_record_caches,
)
from validator_node.pipeline.messages import APP_GOSSIP_TYPES
from wire.codec import Len, decode_any, encode, wire_message
from wire.errors import WireError

log = logging.getLogger("validator_node.p2p.gossip")

# Headroom under the 1 MiB RPC frame for the topic, from, seqno, key and signature fields. An
# item this large could not be decided anyway: a block body is capped at 1 MiB.
MAX_GOSSIP_DATA = DefaultMaxMessageSize - 16 * 1024


def topic_for(netuid: int) -> str:
    return f"/bt-platform/{netuid}/items/1"


def message_id(msg: rpc_pb2.Message) -> bytes:
    """The message id: SHA-256 of the data (content id; part of the protocol)."""
    return hashlib.sha256(msg.data).digest()


MAX_BATCH_ITEMS = 1024
_BATCH_OVERHEAD = 64  # cbor tag, version and array header of a batch, generously
_ITEM_OVERHEAD = 8  # cbor byte-string header of one item


@wire_message("p2p.itembatch", version=1, max_size=MAX_GOSSIP_DATA)
class ItemBatch:
    """Several app items in one gossip message (each the canonical encoding of one item)."""

    items: Annotated[tuple[bytes, ...], Len(2, MAX_BATCH_ITEMS)]


_TOPIC_TYPES: tuple[type, ...] = (*APP_GOSSIP_TYPES, ItemBatch)


def split_items(data: bytes) -> list[bytes]:
    """The app items a topic message carries: itself, or the items of an `ItemBatch`. Each
    item is checked to decode as one of `APP_GOSSIP_TYPES`; raises WireError otherwise."""
    value = decode_any(data, _TOPIC_TYPES)
    items = list(value.items) if isinstance(value, ItemBatch) else [data]
    if isinstance(value, ItemBatch):
        for item in items:
            decode_any(item, APP_GOSSIP_TYPES)
    return items


@dataclass(frozen=True)
class GossipSettings:
    degree: int = 6
    degree_low: int = 5
    degree_high: int = 12
    heartbeat_interval: int = 1
    gossip_window: int = 3
    gossip_history: int = 5
    seen_ttl: int = 120
    seen_sweep: int = 10
    max_seen: int = 65_536
    equivocation_cap: int = 4096
    outbound_queue: int = 4096
    subscription_queue: int = 4096
    publish_queue: int = 4096
    max_data: int = MAX_GOSSIP_DATA
    peer_msgs_per_s: float = 1000.0
    peer_msgs_burst: float = 4000.0
    peer_bytes_per_s: float = 16 * 1024 * 1024
    peer_bytes_burst: float = 64 * 1024 * 1024
    maintenance_interval: float = 1.0
    batch_linger: float = 0.05
    max_batch_items: int = 256


class _Bucket:
    __slots__ = ("at", "bytes", "msgs")

    def __init__(self, now: float, msgs: float, nbytes: float) -> None:
        self.at, self.msgs, self.bytes = now, msgs, nbytes


class TopicValidator:
    """Decides, before a message is relayed, whether it may travel on our topic.

    `admitted(peer_id)` says whether a base58 peer id belongs to a validator that passed the
    attestation handshake. Our own publishes (`self_id`) pass: the node only publishes items it
    accepted, and `AppGossip.publish` checks the size. Pure apart from the clock, so it is
    tested without a network.
    """

    def __init__(
        self,
        *,
        admitted: Callable[[str], bool],
        metrics: Metrics,
        settings: GossipSettings = GossipSettings(),
        clock: Callable[[], float] = time.monotonic,
        self_id: str | None = None,
    ) -> None:
        self.admitted = admitted
        self.self_id = self_id
        self.metrics = metrics
        self.settings = settings
        self.clock = clock
        self.accepted_by_peer: dict[str, int] = {}  # per-forwarder accounting (admitted peers only)
        self._buckets: dict[str, _Bucket] = {}
        self._logged: set[tuple[str, str]] = set()

    def __call__(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        reason = self.check(forwarder.to_string(), msg)
        if reason is None:
            return True
        self.metrics.inc("gossip_refused_total", reason=reason)
        return False

    def check(self, forwarder: str, msg: rpc_pb2.Message) -> str | None:
        """None if the message may be relayed, else the reason (also logged, once per peer)."""
        reason, detail = self._check(forwarder, msg)
        if reason is not None:
            key = (forwarder, reason)
            first = key not in self._logged
            if first and len(self._logged) < 4096:
                self._logged.add(key)
            log.log(
                logging.INFO if first else logging.DEBUG,
                "gossip: refused a message from peer %s (%s): %s",
                forwarder[-12:],
                reason,
                detail,
            )
        return reason

    def _check(self, forwarder: str, msg: rpc_pb2.Message) -> tuple[str | None, str]:
        if forwarder == self.self_id:
            return None, ""
        if not self.admitted(forwarder):
            return "not_admitted", "the forwarding peer is not an admitted validator"
        try:
            origin = ID(msg.from_id).to_string()
        except Exception:
            return "not_admitted", "the message has no valid origin peer id"
        if origin != forwarder and not self.admitted(origin):
            return "not_admitted", f"the origin {origin[-12:]} is not an admitted validator"
        size = len(msg.data)
        if size > self.settings.max_data:
            return "oversize", f"{size} bytes, over the cap of {self.settings.max_data}"
        if not self._take(forwarder, size):
            return "rate_limited", "over the per-peer message or byte rate"
        try:
            split_items(msg.data)
        except WireError as exc:
            return "malformed", str(exc)[:200]
        self.accepted_by_peer[forwarder] = self.accepted_by_peer.get(forwarder, 0) + 1
        return None, ""

    def _take(self, peer: str, size: int) -> bool:
        s = self.settings
        now = self.clock()
        b = self._buckets.get(peer)
        if b is None:
            b = self._buckets[peer] = _Bucket(now, s.peer_msgs_burst, s.peer_bytes_burst)
        elapsed = max(0.0, now - b.at)
        b.at = now
        b.msgs = min(s.peer_msgs_burst, b.msgs + elapsed * s.peer_msgs_per_s)
        b.bytes = min(s.peer_bytes_burst, b.bytes + elapsed * s.peer_bytes_per_s)
        if b.msgs < 1 or b.bytes < size:
            return False
        b.msgs -= 1
        b.bytes -= size
        return True

    def forget(self, keep: Callable[[str], bool]) -> None:
        """Drop the accounting of peers that are no longer admitted (keeps it bounded)."""
        for table in (self._buckets, self.accepted_by_peer):
            for peer in [p for p in table if not keep(p)]:
                del table[peer]
        if len(self._logged) >= 4096:
            self._logged.clear()


class AppGossip:
    """Pubsub + GossipSub on the node's host, for the subnet's app-item topic."""

    def __init__(
        self,
        host: Any,
        *,
        netuid: int,
        metrics: Metrics,
        admitted: Callable[[str], bool],
        on_item: Callable[[bytes], None],
        settings: GossipSettings = GossipSettings(),
    ) -> None:
        install_record_caches()
        self.host = host
        self.topic = topic_for(netuid)
        self.metrics = metrics
        self.on_item = on_item
        self.settings = s = settings
        self.my_id = host.get_id()
        self._my_id_bytes = self.my_id.to_bytes()
        self._my_id_str = self.my_id.to_string()
        self._admitted = admitted
        self.validator = TopicValidator(
            admitted=self.is_admitted, metrics=metrics, settings=s, self_id=self._my_id_str
        )
        self.router = AdmittedRouter(
            admitted=self.is_admitted,
            equivocation_cap=s.equivocation_cap,
            protocols=[PROTOCOL_ID_V11],
            degree=s.degree,
            degree_low=s.degree_low,
            degree_high=s.degree_high,
            gossip_window=s.gossip_window,
            gossip_history=s.gossip_history,
            heartbeat_interval=s.heartbeat_interval,
            adaptive_gossip_enabled=False,
            spam_protection_enabled=False,
            eclipse_protection_enabled=False,
            do_px=False,
        )
        self.pubsub = AdmittedPubsub(
            host,
            self.router,
            topic=self.topic,
            admitted=self.is_admitted,
            metrics=metrics,
            strict_signing=True,
            msg_id_constructor=message_id,
            seen_ttl=s.seen_ttl,
            sweep_interval=s.seen_sweep,
        )
        self.pubsub.validation_cache = NoValidationCache()  # type: ignore[assignment]
        self.pubsub.peer_queues = CountingQueues(s.outbound_queue, lambda: self._drop("outbound_queue_full"))
        self.pubsub.set_topic_validator(self.topic, self.validator, False)
        self._outbox_send, self._outbox_recv = trio.open_memory_channel[bytes](s.publish_queue)
        self.running = False

    def is_admitted(self, peer_id: str) -> bool:
        return peer_id == self._my_id_str or self._admitted(peer_id)

    def _drop(self, reason: str) -> None:
        self.metrics.inc("gossip_dropped_total", reason=reason)

    # --- publishing ---------------------------------------------------------------------------

    def publish(self, data: bytes) -> bool:
        """Queue an item this node accepted for the topic (never blocks; drops are counted)."""
        if len(data) > self.settings.max_data:
            self._drop("oversize")
            log.warning(
                "gossip: not publishing a %d-byte item (cap %d); it reaches the others in a block",
                len(data),
                self.settings.max_data,
            )
            return False
        try:
            self._outbox_send.send_nowait(data)
        except trio.WouldBlock:
            self._drop("publish_queue_full")
            return False
        return True

    async def _publisher(self) -> None:
        s = self.settings
        pending: bytes | None = None
        while True:
            first = pending if pending is not None else await self._outbox_recv.receive()
            pending = None
            if s.batch_linger > 0:
                await trio.sleep(s.batch_linger)  # let a burst (a block's attestations) gather
            batch, size = [first], len(first) + _BATCH_OVERHEAD
            while len(batch) < s.max_batch_items:
                try:
                    data = self._outbox_recv.receive_nowait()
                except trio.WouldBlock:
                    break
                if size + len(data) + _ITEM_OVERHEAD > s.max_data:
                    pending = data
                    break
                batch.append(data)
                size += len(data) + _ITEM_OVERHEAD
            message = batch[0] if len(batch) == 1 else encode(ItemBatch(tuple(batch)))
            await self.pubsub.publish(self.topic, message)
            self.metrics.inc("gossip_published_total")
            self.metrics.inc("gossip_published_items_total", len(batch))

    # --- running ------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run pubsub and the router until cancelled; must be called inside `host.run` so
        that both stop before the host does."""
        try:
            async with background_trio_service(self.pubsub), background_trio_service(self.router):
                try:
                    await self.pubsub.wait_until_ready()
                    sub = await self._subscribe()
                    self.running = True
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._reader, sub)
                        nursery.start_soon(self._publisher)
                        nursery.start_soon(self._maintenance)
                        task_status.started()
                finally:
                    self.running = False
                    self.pubsub.stopping = True
        finally:
            self.close()

    def close(self) -> None:
        """Stop the seen cache's sweeper thread (py-libp2p never does)."""
        self.pubsub.seen_messages.stop()

    async def _subscribe(self) -> Any:
        import libp2p.pubsub.pubsub as pubsub_module

        # the channel is created from this module constant, before subscribe's first await
        default = pubsub_module.SUBSCRIPTION_CHANNEL_SIZE
        pubsub_module.SUBSCRIPTION_CHANNEL_SIZE = self.settings.subscription_queue
        try:
            sub = await self.pubsub.subscribe(self.topic)
        finally:
            pubsub_module.SUBSCRIPTION_CHANNEL_SIZE = default
        sends = self.pubsub.subscribed_topics_send
        sends[self.topic] = CountingSend(sends[self.topic], lambda: self._drop("subscription_full"))  # type: ignore[assignment]
        return sub

    async def _reader(self, sub: Any) -> None:
        async for msg in sub:
            if msg.from_id == self._my_id_bytes:
                continue  # our own publish, delivered locally too
            self.metrics.inc("gossip_received_total")
            try:
                items = split_items(msg.data)
            except WireError:  # cannot happen: the topic validator decoded it
                self._drop("handler_error")
                continue
            self.metrics.inc("gossip_received_items_total", len(items))
            for data in items:
                try:
                    self.on_item(data)
                except Exception as exc:  # a bug in the handler must not stop gossip
                    self._drop("handler_error")
                    log.error("gossip: handling an item failed: %r", exc)

    async def _maintenance(self) -> None:
        while True:
            await trio.sleep(self.settings.maintenance_interval)
            self.maintain()

    def maintain(self) -> None:
        """Admission sync, cache bounds, gauges: once a second."""
        self.pubsub.sync_admission()
        self.pubsub.replace_stale_streams()
        self.validator.forget(self.is_admitted)
        self.trim_seen()
        table = self.router.equivocation_detection
        while len(table) > self.settings.equivocation_cap:
            del table[next(iter(table))]
        self.router.trim_delivery_log()
        m = self.metrics
        m.set("gossip_mesh_peers", len(self.router.mesh.get(self.topic, ())))
        m.set("gossip_topic_peers", len(self.pubsub.peer_topics.get(self.topic, ())))
        m.set("gossip_held_subscriptions", len(self.pubsub.held))
        m.set("gossip_seen_cache", self.pubsub.seen_messages.length())
        m.set("gossip_equivocation_cache", len(table))
        m.set("gossip_grafts_ignored", self.router.grafts_ignored)

    def trim_seen(self) -> None:
        seen = self.pubsub.seen_messages
        cap = self.settings.max_seen
        if seen.length() <= cap:
            return
        seen._sweep()
        with seen.lock:
            excess = len(seen.cache) - cap
            if excess > 0:
                for key, _ in sorted(seen.cache.items(), key=lambda kv: kv[1])[:excess]:
                    del seen.cache[key]
