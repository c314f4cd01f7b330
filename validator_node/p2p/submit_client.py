"""The submit protocol's client side (miners, the owner, the devnet): a throwaway libp2p host that
sends frames and collects one reply for each (`submit_server` is the other side)."""

from __future__ import annotations

import logging
import os

import multiaddr
import trio

from dht.localnet import close_connections
from validator_node.p2p.framing import FrameReader, write_frame
from validator_node.p2p.host import SUBMIT_PROTOCOL


async def submit_items(addr: str, items: list[bytes], timeout: float = 30.0) -> list[str]:
    """Client side of the submit protocol (miners, the owner): send frames, collect the replies.

    Opens a throwaway libp2p host with a fresh Ed25519 key; the items carry their own hotkey
    signatures, so the transport identity does not matter.
    """
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.custom_types import TProtocol
    from libp2p.peer.peerinfo import info_from_p2p_addr

    from dht import yamux_fixes

    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    yamux_fixes.install()
    host = new_host(key_pair=create_new_key_pair(os.urandom(32)), muxer_preference="YAMUX")
    info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
    replies: list[str] = []
    async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        with trio.fail_after(timeout):
            await host.connect(info)
            stream = await host.new_stream(info.peer_id, [TProtocol(SUBMIT_PROTOCOL)])
            reader = FrameReader(stream, 64 * 1024)
            for data in items:
                await write_frame(stream, data)
                reply = await reader.read_frame()
                replies.append("closed" if reply is None else reply.decode(errors="replace"))
            await stream.close()
            await close_connections(host)
    return replies
