"""Per-peer and global budgets on the p2p protocols, over real libp2p on loopback (one process).

A real `ConsensusTransport` serves; the attackers are real libp2p hosts that speak the protocols
by hand (a validator that floods its consensus link, a validator that never reads, many peers
pulling checkpoints, many submit streams announcing 16 MiB frames). Each case must be bounded,
refused or dropped with a count, and leave the node serving honest requests.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import multiaddr
import trio

from dht.localnet import close_connections
from validator_node.metrics import Metrics
from validator_node.p2p.attestation import attest
from validator_node.p2p.budgets import P2PLimits
from validator_node.p2p.framing import FrameReader, write_frame
from validator_node.p2p.host import (
    CHECKPOINT_PROTOCOL,
    CONSENSUS_PROTOCOL,
    SUBMIT_PROTOCOL,
    ConsensusTransport,
)
from validator_node.p2p.submit_client import submit_items
from wire.codec import encode
from wire.keys import Hotkey

NETUID = 7
SERVER = Hotkey.from_name("budgets-server")
PEER = Hotkey.from_name("budgets-peer")
PERMITTED = frozenset({SERVER.public_key, PEER.public_key})
CHECKPOINT = os.urandom(4 * 1024 * 1024)
LIMITS = P2PLimits()  # the defaults a node runs with


def server(**kw: Any) -> tuple[ConsensusTransport, trio.MemoryReceiveChannel[tuple[bytes, bytes]]]:
    send, recv = trio.open_memory_channel[tuple[bytes, bytes]](8192)
    t = ConsensusTransport(
        hotkey=SERVER,
        netuid=NETUID,
        peer_seed=hashlib.sha256(b"budgets-server").digest(),
        listen_host="127.0.0.1",
        listen_port=0,
        permitted=lambda: PERMITTED,
        current_block=lambda: 1,
        metrics=Metrics(),
        inbound=send,
        **kw,
    )
    return t, recv


@asynccontextmanager
async def client(addr: str) -> AsyncIterator[tuple[Any, Any]]:
    """A throwaway libp2p host connected to `addr`: (host, the server's peer id)."""
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.peerinfo import info_from_p2p_addr

    host = new_host(key_pair=create_new_key_pair(os.urandom(32)), muxer_preference="YAMUX")
    info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
    async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        await host.connect(info)
        try:
            yield host, info.peer_id
        finally:
            with trio.CancelScope(shield=True):
                await close_connections(host)


async def open_link(host: Any, server_id: Any) -> Any:
    """The consensus protocol as validator PEER: handshake, then the stream is ours."""
    from libp2p.custom_types import TProtocol

    stream = await host.new_stream(server_id, [TProtocol(CONSENSUS_PROTOCOL)])
    await write_frame(stream, encode(attest(PEER, NETUID, host.get_id().to_bytes(), (), 10**9)))
    assert await FrameReader(stream, 1 << 20).read_frame() is not None  # the server's attestation
    return stream


async def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    with trio.move_on_after(timeout):
        while not pred():
            await trio.sleep(0.02)
        return
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_validator_flooding_its_consensus_link_is_held_to_its_frame_budget() -> None:
    t, inbound = server()
    received = 0

    async def drain() -> None:
        nonlocal received
        async for sender, _ in inbound:
            assert sender == PEER.public_key
            received += 1

    async with trio.open_nursery() as nursery:
        await nursery.start(t.run, [])
        nursery.start_soon(drain)
        async with client(t.addrs()[0]) as (host, server_id):
            stream = await open_link(host, server_id)
            started = trio.current_time()
            sent = 0
            for _ in range(4000):  # small frames, as fast as the link takes them
                await write_frame(stream, b"\x01" + os.urandom(15))
                sent += 1
            await wait_for(lambda: received + t.metrics.total("p2p_over_budget_total") >= sent, 30, "frames")
            elapsed = trio.current_time() - started
            lim = LIMITS.link_frames
            assert received <= lim.burst + lim.per_s * elapsed + 1, (received, elapsed)
            assert (
                t.metrics.get("p2p_over_budget_total", protocol="consensus", reason="rate") == sent - received
            )
            assert t.book.links, "the link stays up: frames over budget are dropped, not fatal"
            # the budget refills: after a pause the same validator is heard again
            await trio.sleep(1.0)
            before = received
            for _ in range(10):
                await write_frame(stream, b"\x01hello")
            await wait_for(lambda: received == before + 10, 10, "frames after the pause")
        nursery.cancel_scope.cancel()


async def test_the_outbound_queue_to_a_validator_that_never_reads_is_bounded_in_bytes() -> None:
    t, _ = server()
    async with trio.open_nursery() as nursery:
        await nursery.start(t.run, [])
        async with client(t.addrs()[0]) as (host, server_id):
            await open_link(host, server_id)  # and never read from it
            await wait_for(lambda: PEER.public_key in t.book.links, 10, "the link")
            block = os.urandom(1024 * 1024)
            for _ in range(200):  # 200 MiB offered; far under the 4096-frame queue
                t.send(PEER.public_key, block)
                await trio.sleep(0)
            await trio.sleep(0.5)
            # at most 48 MiB queued, plus what the writer handed to yamux before the window closed
            assert t.metrics.get("p2p_dropped_total", reason="send_queue_bytes") >= 200 - 48 - 20
            assert t.book.links[PEER.public_key].queued <= LIMITS.outbound_bytes
        nursery.cancel_scope.cancel()


async def pull_checkpoint(host: Any, server_id: Any) -> bytes | str:
    from libp2p.custom_types import TProtocol

    try:
        stream = await host.new_stream(server_id, [TProtocol(CHECKPOINT_PROTOCOL)])
        await write_frame(stream, b"latest")
        data = await FrameReader(stream, 64 * 1024 * 1024).read_frame()
    except Exception as exc:  # a reset
        return f"reset: {type(exc).__name__}"
    return data if data is not None else "closed"


async def test_fifty_concurrent_checkpoint_pulls_are_capped_and_share_one_read() -> None:
    reads = 0

    def read() -> bytes:
        nonlocal reads
        reads += 1
        return CHECKPOINT

    t, _ = server(checkpoint=read)
    replies: list[bytes | str] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(t.run, [])
        async with client(t.addrs()[0]) as c1, client(t.addrs()[0]) as c2:
            started = trio.current_time()

            async def pull(c: tuple[Any, Any]) -> None:
                replies.append(await pull_checkpoint(*c))

            async with trio.open_nursery() as pulls:
                for i in range(50):
                    pulls.start_soon(pull, (c1, c2)[i % 2])
            elapsed = trio.current_time() - started
        served = [r for r in replies if r == CHECKPOINT]
        refused = [r for r in replies if isinstance(r, bytes) and r.startswith(b"refused: ")]
        assert len(replies) == 50 and len(served) + len(refused) == 50, [r[:40] for r in replies]
        # one stream per peer at a time and a per-peer rate: two peers get at most a few each
        rate = LIMITS.checkpoint_per_peer
        assert 1 <= len(served) <= 2 * (rate.burst + rate.per_s * elapsed), (len(served), elapsed)
        assert reads <= 1 + elapsed / LIMITS.checkpoint_cache_s + 1, reads  # not one per request
        assert t.metrics.total("p2p_over_budget_total") == len(refused)
        assert t._checkpoint_streams.peak <= LIMITS.checkpoint_streams
        nursery.cancel_scope.cancel()


async def test_many_submit_streams_with_huge_frames_are_capped() -> None:
    from libp2p.custom_types import TProtocol

    t, _ = server(on_submit=lambda item: None)
    async with trio.open_nursery() as nursery:
        await nursery.start(t.run, [])
        replies: list[str] = []
        async with client(t.addrs()[0]) as (host, server_id):

            async def hog() -> None:
                """Announce a 16 MiB frame, send a little of it, then wait for a reply."""
                stream = await host.new_stream(server_id, [TProtocol(SUBMIT_PROTOCOL)])
                await stream.write((16 * 1024 * 1024).to_bytes(4, "big") + b"x" * 1000)
                try:
                    reply = await FrameReader(stream, 1024).read_frame()
                except Exception as exc:
                    reply = None
                    replies.append(f"reset: {type(exc).__name__}")
                else:
                    replies.append("closed" if reply is None else reply.decode())

            async with trio.open_nursery() as hogs:
                for _ in range(12):
                    hogs.start_soon(hog)
                # 4 streams per peer; of those, 2 frames of 16 MiB fit the peer's bytes in flight
                await wait_for(lambda: len(replies) >= 10, 10, "refusals")
                refused = [r for r in replies if r.startswith("refused: busy")]
                assert len(refused) == 10, replies
                assert t.submit_server.streams.held <= LIMITS.submit_streams_per_peer
                assert t.submit_server.bytes.held <= LIMITS.submit_inflight_bytes_per_peer
                # another peer is still served meanwhile
                got = await submit_items(t.addrs()[0], [b"\x9f\xff garbage"], timeout=10)
                assert got[0].startswith("refused: malformed"), got
                hogs.cancel_scope.cancel()
        assert t.metrics.total("p2p_over_budget_total") >= 10
        nursery.cancel_scope.cancel()
