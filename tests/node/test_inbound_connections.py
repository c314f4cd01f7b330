"""Every inbound connection's handler ends with the connection (validator_node/p2p/swarm_fixes.py).

Issue 12: py-libp2p 0.8.1 keeps each inbound connection's handler task, and with it the whole
connection (socket wrapper, Noise session, yamux buffers) and a slot of the swarm's inbound
limiter, until the node stops. Each miner submission leaked one; with the limiter's slots gone the
node would refuse every inbound connection.
"""

from __future__ import annotations

import hashlib

import trio

from validator_node.metrics import Metrics
from validator_node.p2p.host import ConsensusTransport
from validator_node.p2p.submit_client import submit_items
from validator_node.pipeline.messages import Submission
from wire.codec import encode
from wire.envelope import seal
from wire.keys import Hotkey

NETUID = 7
MINER = Hotkey.from_name("inbound-miner")
CLIENTS = 12


async def test_a_miners_connection_leaves_nothing_behind_once_closed() -> None:
    hk = Hotkey.from_name("inbound-validator")
    send, _recv = trio.open_memory_channel[tuple[bytes, bytes]](16)
    t = ConsensusTransport(
        hotkey=hk,
        netuid=NETUID,
        peer_seed=hashlib.sha256(b"inbound-validator").digest(),
        listen_host="127.0.0.1",
        listen_port=0,
        permitted=lambda: {hk.public_key},
        current_block=lambda: 1,
        metrics=Metrics(),
        inbound=send,
        on_submit=lambda item: None,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(t.run, [])
        swarm = t.host.get_network()
        addr = f"{t.addrs()[0]}/p2p/{t.peer_id}"
        for n in range(CLIENTS):  # each a fresh host, as the devnet's miners and any stranger
            item = encode(seal(Submission("maxsat", 0, n, b"answer"), MINER, NETUID))
            assert await submit_items(addr, [item]) == ["ok"]
        with trio.move_on_after(10):
            while swarm._inbound_limiter.borrowed_tokens or swarm.connections:
                await trio.sleep(0.05)
        assert swarm._inbound_limiter.borrowed_tokens == 0  # every handler has ended
        assert not swarm.connections
        nursery.cancel_scope.cancel()
