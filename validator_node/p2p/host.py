"""The libp2p host and the direct-stream protocol that carries consensus packets.

Consensus does not ride on gossip: every pair of validators keeps one direct stream of protocol
`/bt-platform/consensus/1.0.0` (TCP + Noise + yamux), so miner traffic on gossip topics can never
starve or rate-limit votes. A stream starts with a handshake in which each side sends a
hotkey-signed `PeerAttestation` and checks the other's against the metagraph, and that no other
node speaks for the same hotkey (one signer per hotkey: `_refuse_second_signer`); after that it
carries length-prefixed consensus packets both ways.

Per-link outbound queues are bounded in frames and in bytes; a full queue drops the packet and
counts it (PBFT recovers from loss with view changes and decision transfer, whereas an unbounded
queue would let one slow peer exhaust our memory). Inbound, each validator's frames pass a
frames/s and bytes/s budget before anything decodes them, and the checkpoint and submit
protocols, open to any peer, have global and per-peer caps (p2p/budgets.py has the figures and
the honest traffic they are sized against).

Application items between validators (submissions, attestations, registry items, evidence) go
over GossipSub on the same host (gossip.py); the peers admitted by the handshake here are the
only ones whose gossip is accepted and relayed.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import multiaddr
import trio

from validator_node.metrics import Metrics
from validator_node.p2p.attestation import AttestationRefused, DuplicateHotkey, attest, check_attestation
from validator_node.p2p.budgets import ConcurrencyLimit, P2PLimits, PeerBudgets, RateLimitedLog
from validator_node.p2p.checkpoint_server import (  # noqa: F401 - the protocol's names, re-exported
    CHECKPOINT_PROTOCOL,
    MAX_CHECKPOINT_FRAME,
    CheckpointRefused,
    CheckpointServing,
)
from validator_node.p2p.framing import FrameError, FrameReader, reset_stream, write_frame
from validator_node.p2p.submit_server import SubmitServer
from validator_node.p2p.swarm_fixes import gate_inbound_streams, release_inbound_handlers
from wire.codec import decode, encode
from wire.envelope import SignedEnvelope
from wire.errors import WireError
from wire.keys import Hotkey, ss58_of

if TYPE_CHECKING:
    from validator_node.p2p.gossip import AppGossip

log = logging.getLogger("validator_node.p2p")

CONSENSUS_PROTOCOL = "/bt-platform/consensus/1.0.0"
SUBMIT_PROTOCOL = "/bt-platform/submit/1.0.0"
MAX_FRAME = 8 * 1024 * 1024
HANDSHAKE_TIMEOUT = 10.0
OUTBOUND_QUEUE = 4096


def load_or_create_peer_seed(data_dir: Path) -> bytes:
    """The node's Ed25519 peer identity seed, created once and kept (0600) in the data dir."""
    path = data_dir / "peer_key.ed25519"
    if path.exists():
        seed = path.read_bytes()
        if len(seed) != 32:
            raise ValueError(f"{path} is corrupt: expected a 32-byte seed")
        return seed
    data_dir.mkdir(parents=True, exist_ok=True)
    seed = os.urandom(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(seed)
    return seed


@dataclass
class Link:
    hotkey: bytes
    peer_id: str
    send: trio.MemorySendChannel[bytes]
    serial: int
    cancel: trio.CancelScope = field(default_factory=trio.CancelScope)
    queued: int = 0  # bytes in the outbound queue and being written


@dataclass
class PeerBook:
    """Admitted validators we have a live link with, by hotkey (newest link wins)."""

    links: dict[bytes, Link] = field(default_factory=dict)

    def hotkeys(self) -> list[bytes]:
        return sorted(self.links)


class ConsensusTransport(CheckpointServing):
    def __init__(
        self,
        *,
        hotkey: Hotkey,
        netuid: int,
        peer_seed: bytes,
        listen_host: str,
        listen_port: int,
        permitted: Callable[[], frozenset[bytes]],
        current_block: Callable[[], int],
        metrics: Metrics,
        inbound: trio.MemorySendChannel[tuple[bytes, bytes]],
        on_submit: Callable[[object], str | None] | None = None,
        checkpoint: Callable[[], bytes | None] | None = None,
        on_link: Callable[[bytes, str], None] | None = None,
        on_app_item: Callable[[bytes], None] | None = None,
        genesis: Callable[[], bytes | None] | None = None,
        limits: P2PLimits | None = None,
    ) -> None:
        from libp2p import new_host
        from libp2p.crypto.ed25519 import create_new_key_pair
        from libp2p.crypto.x25519 import create_new_key_pair as create_x25519
        from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
        from libp2p.security.noise.transport import Transport as NoiseTransport

        from dht import yamux_fixes

        # importing libp2p resets its logger to WARNING; it logs failed dials at ERROR and whole
        # DHT values in hex, all of which our metrics count, so silence it after the import
        logging.getLogger("libp2p").setLevel(logging.CRITICAL)
        yamux_fixes.install()  # before any connection: its reader must never wait on a writer
        self.hotkey = hotkey
        self.netuid = netuid
        self.key_pair = create_new_key_pair(peer_seed)
        noise_key = create_x25519().private_key  # per-run Noise static key; identity is the Ed25519 key
        self.host = new_host(
            key_pair=self.key_pair,
            sec_opt={NOISE_ID: NoiseTransport(self.key_pair, noise_privkey=noise_key)},
            muxer_preference="YAMUX",
        )
        release_inbound_handlers(self.host.get_network())  # else each inbound connection leaks
        gate_inbound_streams(self.host.get_network(), self._admit_stream)
        self.listen = multiaddr.Multiaddr(f"/ip4/{listen_host}/tcp/{listen_port}")
        self.permitted = permitted
        self.current_block = current_block
        self.metrics = metrics
        self.inbound = inbound
        self.on_submit = on_submit
        self.checkpoint = checkpoint
        self.genesis = genesis  # the `genesis` request on the checkpoint protocol (node.genesis)
        self.on_link = on_link
        self.book = PeerBook()
        self._dial_addrs: dict[str, str] = {}  # peer id -> newest address to dial it at
        self._init_budgets(limits or P2PLimits())
        # peer id -> hotkey of every peer that passed the attestation handshake and still holds
        # a permit (kept across reconnects; newest peer id per hotkey): who may gossip to us
        self.admitted: dict[str, bytes] = {}
        self._serial = 0
        self._nursery: trio.Nursery | None = None
        self.gossip: AppGossip | None = None
        if on_app_item is not None:
            from validator_node.p2p.gossip import AppGossip

            self.gossip = AppGossip(
                self.host, netuid=netuid, metrics=metrics, admitted=self.is_admitted, on_item=on_app_item
            )

    def _init_budgets(self, lim: P2PLimits) -> None:
        clock = trio.current_time
        self.limits = lim
        self._link_budgets: PeerBudgets[bytes] = PeerBudgets(
            {"frames": lim.link_frames, "bytes": lim.link_bytes}, clock, lim.max_peers
        )
        self._checkpoint_rate: PeerBudgets[str] = PeerBudgets(
            {"requests": lim.checkpoint_per_peer}, clock, lim.max_peers
        )
        self._checkpoint_streams: ConcurrencyLimit[str] = ConcurrencyLimit(lim.checkpoint_streams, 1)
        self._stream_opens: PeerBudgets[str] = PeerBudgets(
            {"streams": lim.stream_opens_per_peer}, clock, lim.max_peers
        )
        self._stream_opens_total: PeerBudgets[str] = PeerBudgets({"streams": lim.stream_opens}, clock, 1)
        self._checkpoint_cache: tuple[float, bytes | None] | None = None
        self._checkpoint_lock = trio.Lock()
        self.submit_server = SubmitServer(self.on_submit, self.metrics, lim, self._refuse)
        self._budget_log = RateLimitedLog(clock)

    def _admit_stream(self, peer_id: object) -> bool:
        """May this peer open one more stream? Validators always; anyone else within the
        stream-open budgets (`P2PLimits`), per peer id and over all of them."""
        peer = peer_id.to_string()  # type: ignore[attr-defined]
        if peer in self.admitted:
            return True
        if not self._stream_opens.allow(peer, streams=1):
            self._over_budget("streams", "stream opens per peer", peer)
            return False
        if not self._stream_opens_total.allow("all", streams=1):
            self._over_budget("streams", "stream opens in total", peer)
            return False
        return True

    def _over_budget(self, protocol: str, reason: str, peer: str) -> None:
        """Count a refusal; log it once per peer and reason per 10 s (a flood logs one line)."""
        self.metrics.inc("p2p_over_budget_total", protocol=protocol, reason=reason)
        n = self._budget_log.due((protocol, reason, peer))
        if n:
            log.warning("%s: peer %s over budget (%s): %d refused", protocol, peer[-16:], reason, n)

    async def _refuse(self, stream: object, protocol: str, reason: str, peer: str) -> None:
        """Refuse a request on an open-to-all protocol with a clear one-frame reply and close our
        side (a reset right after the reply could overtake it); reset if the reply cannot go."""
        self._over_budget(protocol, reason, peer)
        with trio.move_on_after(2):
            try:
                await write_frame(stream, f"refused: {reason}".encode())  # type: ignore[arg-type]
                await stream.close()  # type: ignore[attr-defined]
                return
            except Exception:
                pass
        await reset_stream(stream)

    def is_admitted(self, peer_id: str) -> bool:
        return peer_id in self.admitted

    def publish_item(self, data: bytes) -> None:
        """Gossip an app item this node accepted to the other validators."""
        if self.gossip is not None:
            self.gossip.publish(data)

    @property
    def peer_id(self) -> str:
        return self.host.get_id().to_string()

    def addrs(self) -> list[str]:
        return [str(a) for a in self.host.get_addrs()]

    def _my_attestation(self) -> bytes:
        addrs = tuple(a.split("/p2p/")[0] for a in self.addrs())[:8]
        expires = self.current_block() + 10_000
        env = attest(self.hotkey, self.netuid, self.host.get_id().to_bytes(), addrs, expires)
        return encode(env)

    # --- lifecycle ------------------------------------------------------------------------

    async def run(
        self, bootstrap: list[str], *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        from libp2p.custom_types import TProtocol

        async with trio.open_nursery() as nursery, self.host.run([self.listen]):
            self._nursery = nursery
            if not self.host.get_addrs():  # py-libp2p logs a failed listen and carries on
                self._listen_failed()
            self.host.set_stream_handler(TProtocol(CONSENSUS_PROTOCOL), self._on_inbound_stream)
            if self.on_submit is not None:
                self.host.set_stream_handler(TProtocol(SUBMIT_PROTOCOL), self.submit_server.handle)
            if self.checkpoint is not None:
                self.host.set_stream_handler(TProtocol(CHECKPOINT_PROTOCOL), self._on_checkpoint_stream)
            log.info("p2p listening on %s as %s", ", ".join(self.addrs()), self.peer_id)
            # services on the host run in a nursery nested inside `host.run`, so that on the way
            # out pubsub and gossipsub stop before the host does
            try:
                async with trio.open_nursery() as services:
                    if self.gossip is not None:
                        await services.start(self.gossip.run)
                    task_status.started()
                    for addr in bootstrap:
                        self.dial(addr)
                    await trio.sleep_forever()
            finally:
                await self._close_connections()

    def _listen_failed(self) -> None:
        from validator_node.startup import StartupError, bind_failure

        host, port = self.listen.value_for_protocol("ip4"), int(self.listen.value_for_protocol("tcp"))
        why = bind_failure(host, port) or "libp2p could not listen there"
        raise StartupError(f"cannot listen for p2p on {host}:{port} (--p2p.host/--p2p.port): {why}")

    async def _close_connections(self) -> None:
        """py-libp2p 0.8.1 leaks sockets when a host stops under cancellation: a connection's
        close can be cancelled after it marked itself closed, so later closes (the swarm's
        included) return at once and the socket stays open. Close the muxed connections
        ourselves, shielded, while the host still runs."""
        network = self.host.get_network()
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            for peer, conns in list(network.connections.items()):
                for conn in list(conns):
                    with contextlib.suppress(Exception):
                        await conn.close()
                    with contextlib.suppress(Exception):
                        if not conn.muxed_conn.is_closed:
                            await conn.muxed_conn.close()
                with contextlib.suppress(Exception):
                    await self.host.disconnect(peer)

    # --- sending --------------------------------------------------------------------------

    def send(self, hotkey: bytes, data: bytes) -> None:
        link = self.book.links.get(hotkey)
        if link is None:
            self.metrics.inc("p2p_dropped_total", reason="no_link")
            return
        if link.queued + len(data) > self.limits.outbound_bytes:
            self.metrics.inc("p2p_dropped_total", reason="send_queue_bytes")
            return
        try:
            link.send.send_nowait(data)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            self.metrics.inc("p2p_dropped_total", reason="send_queue_full")
        else:
            link.queued += len(data)

    def broadcast(self, data: bytes) -> None:
        for hk in self.book.hotkeys():
            self.send(hk, data)

    # --- links ----------------------------------------------------------------------------

    def dial(self, addr: str) -> bool:
        """Keep a link to the peer at `addr` (a bootstrap address or one found on the chain):
        one dial loop per peer id, which uses the newest address given for it on its next try.
        True when a new loop started. Call while `run` runs."""
        from libp2p.peer.peerinfo import info_from_p2p_addr

        peer = info_from_p2p_addr(multiaddr.Multiaddr(addr)).peer_id.to_string()
        if peer == self.peer_id:
            log.info("skipping address %s: it is this node", addr)
            return False
        fresh = peer not in self._dial_addrs
        self._dial_addrs[peer] = addr
        if fresh:
            assert self._nursery is not None, "dial() before run()"
            self._nursery.start_soon(self._dial_forever, addr)
        return fresh

    async def _dial_forever(self, addr: str) -> None:
        from libp2p.custom_types import TProtocol
        from libp2p.peer.peerinfo import info_from_p2p_addr

        info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        peer = info.peer_id.to_string()
        backoff = 0.5
        if info.peer_id.to_string() < self.peer_id:
            # Both sides dial each other from their bootstrap lists; let the smaller peer id
            # dial first so that a pair usually ends up with one link, not two.
            await trio.sleep(2.0)
        while True:
            if any(link.peer_id == peer for link in self.book.links.values()):
                await trio.sleep(1.0)  # already linked (maybe they dialled us)
                continue
            if self._dial_addrs.get(peer, addr) != addr:  # the peer moved: dial where it is now
                addr = self._dial_addrs[peer]
                info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
            try:
                with trio.fail_after(HANDSHAKE_TIMEOUT):
                    await self.host.connect(info)
                    stream = await self.host.new_stream(info.peer_id, [TProtocol(CONSENSUS_PROTOCOL)])
                    reader = FrameReader(stream, MAX_FRAME)
                    await write_frame(stream, self._my_attestation())
                    hotkey = await self._receive_attestation(reader, info.peer_id.to_bytes())
                backoff = 0.5
                await self._run_link(stream, reader, hotkey, info.peer_id.to_string())
            except (AttestationRefused, FrameError, WireError) as exc:
                if not isinstance(exc, DuplicateHotkey):  # logged where it was found, rate-limited
                    log.warning("peer %s refused: %s", addr, exc)
                self.metrics.inc("p2p_peers_refused_total", reason=getattr(exc, "reason", "bad_frame"))
            except trio.Cancelled:
                raise
            except Exception as exc:  # connection errors of every kind: retry with backoff
                self.metrics.inc("p2p_dial_failures_total")
                log.debug("dial %s failed: %s", addr, exc)
            await trio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _on_inbound_stream(self, stream: object) -> None:
        remote = stream.muxed_conn.peer_id  # type: ignore[attr-defined]
        reader = FrameReader(stream, MAX_FRAME)  # type: ignore[arg-type]
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                hotkey = await self._receive_attestation(reader, remote.to_bytes())
                await write_frame(stream, self._my_attestation())  # type: ignore[arg-type]
            await self._run_link(stream, reader, hotkey, remote.to_string())
        except (AttestationRefused, FrameError, WireError) as exc:
            if not isinstance(exc, DuplicateHotkey):  # logged where it was found, rate-limited
                log.warning("inbound peer %s refused: %s", remote.to_string()[:16], exc)
            self.metrics.inc("p2p_peers_refused_total", reason=getattr(exc, "reason", "bad_frame"))
            await reset_stream(stream)
        except Exception as exc:
            log.debug("inbound stream from %s ended: %s", remote, exc)
            await reset_stream(stream)

    async def _receive_attestation(self, reader: FrameReader, remote_peer_id: bytes) -> bytes:
        data = await reader.read_frame()
        if data is None:
            raise FrameError("stream closed during the handshake")
        env = decode(data, SignedEnvelope)
        try:
            check_attestation(
                env,
                netuid=self.netuid,
                remote_peer_id=remote_peer_id,
                current_block=self.current_block(),
                permitted=self.permitted(),
            )
            self._refuse_second_signer(env.signer, _peer_id_string(remote_peer_id))
        except AttestationRefused:
            # on the dialling side too: the peer has linked by now, and would keep a link that
            # nobody reads if the stream stayed open
            await reset_stream(reader.stream)
            raise
        return env.signer

    def _refuse_second_signer(self, hotkey: bytes, peer_id: str) -> None:
        """One signer per hotkey (issue 13). Refuse a peer attesting our own hotkey (another node
        runs our key), and a peer id attesting a validator we hold a live link with under another
        peer id (two nodes run that key): the first link stays. A node keeps its peer id in its
        data directory (peer_key.ed25519), so a restart, or a failover that moved the directory,
        comes back under the same peer id and is accepted; a new peer id is accepted once the old
        link has closed. Counted in duplicate_hotkey_total{kind="self"|"peer"}, logged at ERROR
        once per hotkey and kind per 10 s (a redialling duplicate does not flood the log)."""
        if hotkey == self.hotkey.public_key:
            kind, detail = "self", f"peer {peer_id} attests this node's own hotkey {self.hotkey.ss58}"
        else:
            link = self.book.links.get(hotkey)
            if link is None or link.peer_id == peer_id:
                return
            kind = "peer"
            detail = f"peer {peer_id} attests validator {ss58_of(hotkey)}, linked as peer {link.peer_id}"
        self.metrics.inc("duplicate_hotkey_total", kind=kind)
        n = self._budget_log.due(("duplicate_hotkey", kind, hotkey))
        if n:
            log.error(
                "duplicate hotkey: %s: two nodes are running one hotkey and may double-sign; refused the"
                " second link (%d refused since this was last logged)",
                detail,
                n,
            )
        raise DuplicateHotkey(kind, detail)

    async def _run_link(self, stream: object, reader: FrameReader, hotkey: bytes, peer_id: str) -> None:
        try:  # again, with no await until the link is in the book: another may have come meanwhile
            self._refuse_second_signer(hotkey, peer_id)
        except DuplicateHotkey:
            await reset_stream(stream)
            raise
        send, recv = trio.open_memory_channel[bytes](OUTBOUND_QUEUE)
        self._serial += 1
        link = Link(hotkey, peer_id, send, self._serial)
        self.book.links[hotkey] = link
        for old in [p for p, hk in self.admitted.items() if hk == hotkey and p != peer_id]:
            del self.admitted[old]
        self.admitted[peer_id] = hotkey
        self.metrics.set("p2p_peers", len(self.book.links))
        log.info("linked with validator %s (peer %s)", hotkey.hex()[:12], peer_id[-12:])
        if self.on_link is not None:
            self.on_link(hotkey, peer_id)
        try:
            with link.cancel:
                await self._pump(stream, reader, recv, link)
        finally:
            if self.book.links.get(hotkey) is link:
                del self.book.links[hotkey]
            self.metrics.set("p2p_peers", len(self.book.links))
            send.close()
            log.info("link with validator %s closed", hotkey.hex()[:12])
        if link.cancel.cancelled_caught:
            await reset_stream(stream)

    async def _pump(
        self, stream: object, reader: FrameReader, recv: trio.MemoryReceiveChannel[bytes], link: Link
    ) -> None:
        hotkey = link.hotkey
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._writer, stream, recv, link)
            while True:
                data = await reader.read_frame()
                if data is None:
                    break
                # the budget is checked before anything decodes or verifies the frame
                if not self._link_budgets.allow(hotkey, frames=1, bytes=len(data)):
                    self._over_budget("consensus", "rate", hotkey.hex())
                    continue
                self.metrics.inc("p2p_received_total")
                await self.inbound.send((hotkey, data))
            nursery.cancel_scope.cancel()

    def readmit(self, permitted: frozenset[bytes]) -> None:
        """After a metagraph refresh: close links to validators that lost their permit."""
        for peer_id, hotkey in list(self.admitted.items()):
            if hotkey not in permitted:
                del self.admitted[peer_id]
        for hotkey, link in list(self.book.links.items()):
            if hotkey not in permitted:
                log.warning("validator %s lost its permit; closing its link", hotkey.hex()[:12])
                self.metrics.inc("p2p_peers_refused_total", reason="permit_revoked")
                link.cancel.cancel()

    async def _writer(self, stream: object, recv: trio.MemoryReceiveChannel[bytes], link: Link) -> None:
        async for data in recv:
            try:
                await write_frame(stream, data)  # type: ignore[arg-type]
            finally:
                link.queued -= len(data)
            self.metrics.inc("p2p_sent_total")


def _peer_id_string(peer_id: bytes) -> str:
    from libp2p.peer.id import ID

    return ID(peer_id).to_string()
