"""App-item gossip between two validators survives repeated hang-ups and redials.

A review saw a validator stop opening a pubsub stream to a peer after about 20 hang-up/redial
cycles. Two real `ConsensusTransport`s (libp2p hosts with gossip, one process), each dialling the
other as validators do from their bootstrap lists: one side hangs up (alternately a clean
disconnect and an abrupt close of the socket), both redial, and after every cycle an item
published on either side must reach the other.

The cause, in py-libp2p 0.8.1: when the old connection's "disconnected" event is handled after
the new connection is up, pubsub keeps the peer's entry, whose stream rides the dead connection,
and `_handle_new_peer` skips a peer that is still listed; nothing is written on that stream
until the peer is lost for gossip for good. `AdmittedPubsub` replaces such stale streams.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import trio

from validator_node.metrics import Metrics
from validator_node.p2p.gossip import topic_for
from validator_node.p2p.host import ConsensusTransport
from validator_node.pipeline.messages import Submission
from wire.codec import encode
from wire.envelope import seal
from wire.keys import Hotkey

NETUID = 7
TOPIC = topic_for(NETUID)
MINER = Hotkey.from_name("reconnect-miner")
CYCLES = 20


def item(nonce: int) -> bytes:
    return encode(seal(Submission("maxsat", 0, nonce, b"answer"), MINER, NETUID))


async def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    with trio.move_on_after(timeout):
        while not pred():
            await trio.sleep(0.02)
        return
    raise AssertionError(f"timed out waiting for {what}")


def transport(i: int, permitted: frozenset[bytes], hk: Hotkey, got: list[bytes]) -> ConsensusTransport:
    inbound, _ = trio.open_memory_channel[tuple[bytes, bytes]](64)
    return ConsensusTransport(
        hotkey=hk,
        netuid=NETUID,
        peer_seed=hashlib.sha256(f"reconnect-peer-{i}".encode()).digest(),
        listen_host="127.0.0.1",
        listen_port=0,
        permitted=lambda: permitted,
        current_block=lambda: 1,
        metrics=Metrics(),
        inbound=inbound,
        on_app_item=got.append,
    )


async def test_app_gossip_recovers_after_every_hang_up_and_redial() -> None:
    keys = [Hotkey.from_name(f"reconnect-v{i}") for i in range(2)]
    permitted = frozenset(k.public_key for k in keys)
    got: list[list[bytes]] = [[], []]
    ts = [transport(i, permitted, k, got[i]) for i, k in enumerate(keys)]
    dialler, other = sorted(range(2), key=lambda i: ts[i].peer_id)
    a, b = ts[dialler], ts[other]
    async with trio.open_nursery() as nursery:
        for t in ts:
            await nursery.start(t.run, [])
        nursery.start_soon(a._dial_forever, b.addrs()[0])
        nursery.start_soon(b._dial_forever, a.addrs()[0])
        nonce = 0
        for cycle in range(CYCLES + 1):
            await wait_for(lambda: all(len(t.book.links) == 1 for t in ts), 20, f"the link (cycle {cycle})")
            for src, dst in ((a, b), (b, a)):
                nonce += 1
                data = item(nonce)
                sink = got[ts.index(dst)]

                async def published(src: ConsensusTransport = src, data: bytes = data) -> None:
                    # until the other side's subscription is known again, a publish goes nowhere
                    # (pubsub does not queue for absent peers): publish until it arrives
                    while True:
                        src.publish_item(data)
                        await trio.sleep(0.5)

                async with trio.open_nursery() as pub:
                    pub.start_soon(published)
                    await wait_for(
                        lambda data=data, sink=sink: data in sink, 15, f"gossip after {cycle} reconnects"
                    )
                    pub.cancel_scope.cancel()
            if cycle == CYCLES:
                break
            # hang up: alternate which side drops the connection, and how
            closer, peer = (a, b) if cycle % 2 else (b, a)
            if cycle % 4 < 2:
                for conn in list(closer.host.get_network().connections.get(peer.host.get_id(), [])):
                    await conn.muxed_conn.secured_conn.close()  # the socket, no yamux goodbye
            else:
                await closer.host.disconnect(peer.host.get_id())
            await wait_for(lambda c=closer: not c.book.links, 10, "the link to close")
        nursery.cancel_scope.cancel()
