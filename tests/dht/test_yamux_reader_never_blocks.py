"""Two hosts writing hard to each other while both open streams must not deadlock (the second
cause of the flaky `test_the_newest_checkpoint_is_found_by_a_host_holding_nothing`; see
dht/yamux_fixes.py, fix 2).

Two real py-libp2p hosts (TCP + Noise + yamux) on loopback; on each, 16 tasks open stream after
stream to the other and write 200 KB into it, so both socket buffers fill while each host's
yamux reader must ACK the streams the other opens. Before the fix each reader waited for the
write lock its own blocked writer held, neither host read, and the connection stalled after
~2 MB (closed by the 10 s write deadline; on main at 1be342a, stuck for ever).
"""

from __future__ import annotations

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.peerinfo import info_from_p2p_addr

from dht import yamux_fixes
from dht.localnet import close_connections, make_host

SINK = TProtocol("/bt-test/sink/1")
WRITERS, ROUNDS, SIZE = 16, 5, 200_000
STREAMS = WRITERS * ROUNDS  # per direction


async def test_both_hosts_flooding_new_streams_do_not_deadlock() -> None:
    yamux_fixes.install()
    a, b = make_host("flood-a"), make_host("flood-b")
    received = {"a": 0, "b": 0}
    finished = {"a": 0, "b": 0}
    all_in = trio.Event()
    failures: list[str] = []

    def sink(name: str) -> object:
        async def handler(stream: object) -> None:
            try:
                while True:
                    try:
                        data = await stream.read(1 << 20)  # type: ignore[attr-defined]
                    except StreamEOF:
                        break
                    received[name] += len(data)
                await stream.close()  # type: ignore[attr-defined]
            except Exception as exc:  # recorded, not raised: that would end the whole connection
                failures.append(f"sink {type(exc).__name__}: {exc}")
            finally:
                finished[name] += 1
                if finished == {"a": STREAMS, "b": STREAMS}:
                    all_in.set()

        return handler

    a.set_stream_handler(SINK, sink("a"))  # type: ignore[arg-type]
    b.set_stream_handler(SINK, sink("b"))  # type: ignore[arg-type]

    async def flood(src: IHost, dst: IHost) -> None:
        try:
            for _ in range(ROUNDS):
                stream = await src.new_stream(dst.get_id(), [SINK])
                await stream.write(b"x" * SIZE)
                await stream.close()
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc}")

    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    async with a.run(listen), b.run(listen):
        await a.connect(info_from_p2p_addr(b.get_addrs()[0]))
        try:
            # A deadlock detector, not a speed check: the flood takes a few seconds; before the
            # fix it never ended on main's yamux, and failed after 10 s with this branch's.
            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    for _ in range(WRITERS):
                        nursery.start_soon(flood, a, b)
                        nursery.start_soon(flood, b, a)
                assert failures == []  # a stalled connection fails its writers
                await all_in.wait()
            assert failures == []
            assert received == {"a": STREAMS * SIZE, "b": STREAMS * SIZE}
            assert a.get_network().connections.get(b.get_id()), "the connection was closed"
        finally:
            await close_connections(a)  # addresses forgotten first: no redial
            await close_connections(b)
