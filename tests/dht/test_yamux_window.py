"""A peer that ignores the yamux receive window loses its connection instead of parking memory
(dht/yamux_fixes.py, fix 3).

py-libp2p 0.8.1 appends a DATA frame past the granted window to the stream's buffer and only
logs a warning: before the fix, 30 MB sent at an idle stream (one the handler never reads) were
all kept, past even the 16 MiB most it ever grants a stream. Two real hosts (TCP + Noise +
yamux) on loopback; the sender writes raw DATA frames with the muxer's own frame writer,
ignoring its send window.
"""

from __future__ import annotations

import struct

import multiaddr
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr

from dht import yamux_fixes
from dht.localnet import make_host

IDLE = TProtocol("/bt-test/idle/1")
MAX_WINDOW = 16 * 1024 * 1024  # the most py-libp2p ever grants one stream (it auto-tunes up to it)
CHUNK = 60_000
FRAMES = 500  # 30 MB


async def test_a_peer_overrunning_the_receive_window_is_disconnected_and_parks_nothing() -> None:
    yamux_fixes.install()
    a, b = make_host("window-a"), make_host("window-b")
    held: list[object] = []
    peak = 0

    async def idle(stream: object) -> None:
        held.append(stream)
        await trio.sleep(60)

    b.set_stream_handler(IDLE, idle)
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    async with a.run(listen), b.run(listen):
        await a.connect(info_from_p2p_addr(b.get_addrs()[0]))
        stream = await a.new_stream(b.get_id(), [IDLE])
        await stream.write(b"hi")
        with trio.fail_after(10):
            while not held:
                await trio.sleep(0.05)
        b_conn = b.get_network().connections[a.get_id()][0].muxed_conn
        ymux = stream.muxed_conn  # type: ignore[attr-defined]
        sid = stream.muxed_stream.stream_id  # type: ignore[attr-defined]
        frame = struct.pack("!BBHII", 0, 0, 0, sid, CHUNK) + b"z" * CHUNK
        sent = 0
        with trio.move_on_after(20):
            for _ in range(FRAMES):
                try:
                    await ymux._write_frame(frame)
                except Exception:
                    break  # the receiver hung up: what we wanted
                sent += CHUNK
                peak = max(peak, max((len(v) for v in b_conn.stream_buffers.values()), default=0))
        with trio.fail_after(10):
            while not b_conn.event_closed.is_set():
                peak = max(peak, max((len(v) for v in b_conn.stream_buffers.values()), default=0))
                await trio.sleep(0.05)
        reason = yamux_fixes.end_reason(b_conn)
        for pid in list(a.get_network().connections):
            await a.disconnect(pid)
    assert "overran stream" in reason, reason
    # what the receiver ever held for the stream: the window it granted (measured: ~4 MB for a
    # stream never read, as py-libp2p grows windows) and at most one frame past it
    assert peak <= MAX_WINDOW + CHUNK + 2, (peak, sent)
