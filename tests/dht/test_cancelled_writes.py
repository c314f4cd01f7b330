"""A stream write cancelled mid-way must not break its connection (the root cause of the flaky
`test_the_newest_checkpoint_is_found_by_a_host_holding_nothing`; see dht/yamux_fixes.py).

Two real py-libp2p hosts (TCP + Noise + yamux) on loopback: eight streams at a time write frames
of 100 B to 200 KB to a sink, each writer cancelled at a (seeded) random moment, the way KadDHT
cancels the queries it no longer needs. Before the fix the peer soon failed to decrypt a message
("Failed authentication of message") and reset the connection, and every stream on it died.
"""

from __future__ import annotations

import random

import multiaddr
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr

from dht.localnet import close_connections, make_host

SINK = TProtocol("/bt-test/sink/1")


async def test_cancelled_writes_leave_the_connection_working() -> None:
    a, b = make_host("cancel-a"), make_host("cancel-b")
    received = 0

    async def sink(stream: object) -> None:
        nonlocal received
        try:
            while data := await stream.read(1 << 20):  # type: ignore[attr-defined]
                received += len(data)
        except Exception:  # the writer reset its stream: expected
            pass

    b.set_stream_handler(SINK, sink)
    rng = random.Random(1)
    failures: list[str] = []
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    async with a.run(listen), b.run(listen):
        await a.connect(info_from_p2p_addr(b.get_addrs()[0]))

        async def writer(deadline: float, sizes: list[int]) -> None:
            try:
                stream = await a.new_stream(b.get_id(), [SINK])
                with trio.move_on_after(deadline):
                    for size in sizes:
                        await stream.write(b"x" * size)
                await stream.reset()
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

        try:
            for _ in range(30):
                async with trio.open_nursery() as nursery:
                    for _ in range(8):
                        sizes = [rng.choice([100, 5_000, 70_000, 200_000]) for _ in range(20)]
                        nursery.start_soon(writer, rng.uniform(0, 0.02), sizes)
                assert failures == []
                assert a.get_network().connections.get(b.get_id()), "the connection was closed"
            with trio.fail_after(10):  # and it still carries a whole stream
                stream = await a.new_stream(b.get_id(), [SINK])
                await stream.write(b"still here")
                await stream.close()
        finally:
            await close_connections(a)  # addresses forgotten first: no redial
            await close_connections(b)
    assert received > 0
