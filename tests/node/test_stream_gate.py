"""A stream a peer opens can be refused before its protocol is negotiated
(validator_node/p2p/swarm_fixes.py `gate_inbound_streams`), and validator nodes use that to bound
how many streams non-validators open (`P2PLimits.stream_opens*`).

Two real hosts on loopback: the receiver's gate admits the first `ADMITTED` streams; the rest
must be reset without reaching the handler (py-libp2p would negotiate each and start a task).
"""

from __future__ import annotations

import multiaddr
import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr

from dht import yamux_fixes
from dht.localnet import make_host
from validator_node.p2p.swarm_fixes import gate_inbound_streams

ECHO = TProtocol("/bt-test/gated/1")
ADMITTED = 3
OPENED = 8


async def test_streams_over_the_gate_are_reset_before_negotiation() -> None:
    yamux_fixes.install()
    a, b = make_host("gate-a"), make_host("gate-b")
    asked: list[str] = []
    handled = 0
    armed = False  # the connection's own streams (identify) pass before the test starts

    def admit(peer_id: object) -> bool:
        if not armed:
            return True
        asked.append(peer_id.to_string())  # type: ignore[attr-defined]
        return len(asked) <= ADMITTED

    async def handler(stream: object) -> None:
        nonlocal handled
        handled += 1
        await stream.write(b"ok")  # type: ignore[attr-defined]
        await stream.close()  # type: ignore[attr-defined]

    b.set_stream_handler(ECHO, handler)
    gate_inbound_streams(b.get_network(), admit)
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    opened = refused = 0
    async with a.run(listen), b.run(listen):
        await a.connect(info_from_p2p_addr(b.get_addrs()[0]))
        await trio.sleep(0.5)
        armed = True
        for _ in range(OPENED):
            try:
                with trio.fail_after(5):
                    stream = await a.new_stream(b.get_id(), [ECHO])
                    assert await stream.read(2) == b"ok"
                opened += 1
            except trio.TooSlowError:
                pytest.fail("a refused stream must fail fast, not hang")
            except Exception:
                refused += 1
        connected = b.get_network().connections.get(a.get_id())
        for pid in list(a.get_network().connections):
            await a.disconnect(pid)
    assert asked == [a.get_id().to_string()] * OPENED  # every stream was asked about
    assert (opened, refused, handled) == (ADMITTED, OPENED - ADMITTED, ADMITTED)
    assert connected, "refusing streams keeps the connection"
