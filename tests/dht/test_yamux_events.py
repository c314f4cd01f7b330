"""A stream finalized while its reader waits leaves no event behind (dht/yamux_fixes.py, fix 6).

Found in the one-hour memory soak (issue 12): tracemalloc on a validator showed ~2,600 trio
Events and their stream-id ints a quarter hour piling up in yamux's `stream_events`. py-libp2p
0.8.1's readers do `await stream_events[sid].wait(); stream_events[sid] = trio.Event()`: when the
stream is finalized meanwhile (a reset, or a close that drains it), the finalizer pops `sid` and
sets the event, and the woken reader puts a fresh Event back under an id no stream has any more,
for ever. Two real hosts (TCP + Noise + yamux) on loopback; the opener resets every stream while
the handler waits in `read`.
"""

from __future__ import annotations

import multiaddr
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr

from dht import yamux_fixes
from dht.localnet import close_connections, make_host

WAIT = TProtocol("/bt-test/wait/1")
STREAMS = 40


async def test_streams_reset_under_a_waiting_reader_leave_no_events() -> None:
    yamux_fixes.install()
    a, b = make_host("events-a"), make_host("events-b")
    waiting = 0
    ended = 0

    async def reader(stream: object) -> None:
        nonlocal waiting, ended
        waiting += 1
        try:
            while await stream.read(1024):  # type: ignore[attr-defined]
                pass
        except Exception:
            pass  # the reset: what we wanted
        ended += 1

    b.set_stream_handler(WAIT, reader)
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    async with a.run(listen), b.run(listen):
        await a.connect(info_from_p2p_addr(b.get_addrs()[0]))
        try:
            for _ in range(STREAMS):
                stream = await a.new_stream(b.get_id(), [WAIT])
                await stream.write(b"x")
                with trio.fail_after(10):
                    while waiting < ended + 1:
                        await trio.sleep(0.01)
                await trio.sleep(0.02)  # the handler is now parked in read
                await stream.reset()
            with trio.fail_after(10):
                while ended < STREAMS:
                    await trio.sleep(0.02)
            await trio.sleep(0.2)
            b_conn = b.get_network().connections[a.get_id()][0].muxed_conn
            orphans = set(b_conn.stream_events) - set(b_conn.streams)
            assert not orphans, f"{len(orphans)} events for streams that no longer exist"
        finally:  # a host stopped with live connections leaves their sockets open
            await close_connections(a)
            await close_connections(b)
