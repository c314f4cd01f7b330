"""A loopback network of real py-libp2p hosts (TCP + Noise + yamux), a DhtNode each, in one trio
process: for tests and `bench/bench_dht.py`, not for the node (which owns its host).

Teardown disconnects every peer before the hosts stop: py-libp2p leaves TCP sockets open
otherwise, and the resulting ResourceWarnings fail tests.

No connection may be lost before teardown: each loss is recorded with its cause (`Net.lost`) and
the network's exit raises if any was. Losses used to be redialed here and waited out by a 45 s
lookup, which hid the two yamux bugs fixed in dht/yamux_fixes.py.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
from libp2p.security.noise.transport import Transport as NoiseTransport

from dht import yamux_fixes
from dht.kad import DhtNode
from dht.records import BlockHeader, VsetFor

logging.getLogger("libp2p").setLevel(logging.CRITICAL)  # it logs whole refused values as hex
log = logging.getLogger(__name__)


async def close_connections(host: IHost) -> None:
    """Close every connection of a short-lived client host before `host.run` exits (py-libp2p
    leaves their TCP sockets open otherwise). Addresses are forgotten first: py-libp2p's
    auto-connector redials known peers whenever one disconnects, which left a socket open in a
    CI-like run."""
    peerstore = host.get_peerstore()
    for peer in list(peerstore.peer_ids()):
        if peer != host.get_id():
            peerstore.clear_addrs(peer)
    for peer in list(host.get_connected_peers()):
        await host.disconnect(peer)


def make_host(seed: str) -> IHost:
    yamux_fixes.install()  # dht.kad installs it on import too; a host made first must not miss it
    kp = create_new_key_pair(hashlib.sha256(f"dht-localnet:{seed}".encode()).digest())
    return new_host(
        key_pair=kp,
        sec_opt={NOISE_ID: NoiseTransport(kp, noise_privkey=create_x25519().private_key)},
        muxer_preference="YAMUX",
    )


@dataclass
class Net:
    hosts: list[IHost]
    dhts: list[DhtNode]
    #: "host i lost its connection to host j: <why>", for every loss before teardown
    lost: list[str] = field(default_factory=list)


class _LossRecorder(INotifee):
    """Records a host's lost connections (to a peer it then holds no connection to), with the
    reason its yamux reader saw. Disabled for teardown."""

    def __init__(self, me: int, names: dict[str, int], lost: list[str]) -> None:
        self.me, self.names, self.lost, self.armed = me, names, lost, True

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        peer = conn.muxed_conn.peer_id
        if self.armed and not network.connections.get(peer):
            who = self.names.get(str(peer), str(peer))
            entry = (
                f"host {self.me} lost its connection to host {who}: {yamux_fixes.end_reason(conn.muxed_conn)}"
            )
            log.warning("%s", entry)
            self.lost.append(entry)

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        pass

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        pass

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        pass


@asynccontextmanager
async def dht_network(
    n: int,
    netuid: int,
    vset_for: VsetFor,
    *,
    store_dir: Path | None = None,
    topology: str = "full",
    metrics_for: Callable[[int], object] | None = None,
    block_header: BlockHeader | None = None,
) -> AsyncIterator[Net]:
    """Start `n` hosts, connect them (full mesh or a line), fill every routing table."""
    hosts = [make_host(f"{netuid}-{i}") for i in range(n)]
    dhts = [
        DhtNode(
            h,
            netuid,
            vset_for,
            store_path=store_dir / f"dht-{i}.sqlite" if store_dir is not None else None,
            timeout=15.0,
            metrics=metrics_for(i) if metrics_for else None,  # type: ignore[arg-type]
            block_header=block_header,
        )
        for i, h in enumerate(hosts)
    ]
    pairs = (
        [(i, i + 1) for i in range(n - 1)]
        if topology == "line"
        else [(i, j) for i in range(n) for j in range(i + 1, n)]
    )
    lost: list[str] = []
    names = {str(h.get_id()): i for i, h in enumerate(hosts)}
    recorders = [_LossRecorder(i, names, lost) for i in range(n)]
    for h, r in zip(hosts, recorders, strict=True):
        h.get_network().register_notifee(r)
    async with AsyncExitStack() as stack:
        for h in hosts:
            await stack.enter_async_context(h.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]))
        for d in dhts:
            await stack.enter_async_context(d.running())
        async with trio.open_nursery() as nursery:  # connect() waits ~250 ms each: overlap them
            for i, j in pairs:
                nursery.start_soon(hosts[i].connect, info_from_p2p_addr(hosts[j].get_addrs()[0]))
        with trio.fail_after(20):
            for i, j in pairs:  # identify must have run before add_peer accepts the peer
                for a, b in ((i, j), (j, i)):
                    while not await dhts[a].add_peer(hosts[b].get_id()):
                        if lost:
                            raise AssertionError(f"connections lost while peers were added: {lost}")
                        await trio.sleep(0.05)
        try:
            yield Net(hosts, dhts, lost)
            if lost:
                raise AssertionError(f"connections lost during the test: {lost}")
        finally:
            for r in recorders:
                r.armed = False
            for h in hosts:
                await close_connections(h)
