"""A Byzantine validator flooding its consensus link, against real validator processes.

Five validators hold permits; four run. The fifth (the smallest stake, so the four still hold a
quorum) links to the heaviest validator with its real hotkey and replays one signed view change
as fast as the link takes it. The frames over its budget must be dropped before decoding and
counted, and the honest validators must keep deciding meanwhile.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import multiaddr
import trio

from consensus.crypto import seal
from consensus.messages import ViewChange, ViewChangePacket
from dht.localnet import close_connections
from validator_node import devnet
from validator_node.p2p.attestation import attest
from validator_node.p2p.framing import FrameReader, write_frame
from validator_node.p2p.host import CONSENSUS_PROTOCOL
from wire.codec import encode
from wire.keys import Hotkey

CONSENSUS = b"\x00"  # node.py's channel byte for consensus packets


def metric(root: Path, v: devnet.DevnetValidator, name: str, **labels: str) -> float:
    path = root / "data" / str(devnet.NETUID) / v.ss58 / "metrics.prom"
    total = 0.0
    for line in path.read_text().splitlines():
        ours = line.startswith(f"validator_{name}{{") or line.startswith(f"validator_{name} ")
        if ours and all(f'{k}="{val}"' in line for k, val in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def flood(addr: str, hotkey: Hotkey, frame: bytes, seconds: float, settled: Callable[[], bool]) -> int:
    """Link as `hotkey` and send `frame` until `seconds` have passed; return how many were sent.
    The link stays open until `settled()` (the node has read what was sent)."""
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.custom_types import TProtocol
    from libp2p.peer.peerinfo import info_from_p2p_addr

    host = new_host(key_pair=create_new_key_pair(os.urandom(32)), muxer_preference="YAMUX")
    info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
    sent = 0
    async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        await host.connect(info)
        stream = await host.new_stream(info.peer_id, [TProtocol(CONSENSUS_PROTOCOL)])
        await write_frame(stream, encode(attest(hotkey, devnet.NETUID, host.get_id().to_bytes(), (), 10**9)))
        assert await FrameReader(stream, 1 << 20).read_frame() is not None, "the handshake was refused"
        end = trio.current_time() + seconds
        while trio.current_time() < end:
            await write_frame(stream, frame)
            sent += 1
        with trio.move_on_after(30):
            while not settled():
                await trio.sleep(0.5)
        await close_connections(host)
    return sent


def test_a_validator_flooding_its_link_is_dropped_over_budget_while_the_others_decide(tmp_path: Path) -> None:
    root = tmp_path / "dn"
    vals, _ = devnet.create(root, 5, miners=0)
    honest, byzantine = vals[:4], vals[4]
    target = honest[0]
    key = Hotkey.from_wallet(byzantine.wallet_name, "default", root / "wallets")
    with devnet.Processes(root, vals).start_all(honest) as cluster:
        devnet.wait_until(lambda: (devnet.read_status(root, target) or {}).get("height", 0) >= 3, 90)
        h0 = devnet.read_status(root, target)["height"]
        # a view change it really signed, for the height the network is at, replayed over and over
        env = seal(ViewChange(height=h0, view=1, prepared_view=None, prepared_hash=None), key, devnet.NETUID)
        frame = CONSENSUS + encode(ViewChangePacket(view_change=env, prepared=None, block=None))
        last = [-1.0]

        def settled() -> bool:  # the drop count stopped moving (metrics are written every 0.5 s)
            now = metric(root, target, "p2p_over_budget_total", protocol="consensus")
            done, last[0] = now == last[0], now
            return done

        sent = trio.run(flood, target.multiaddr(), key, frame, 15.0, settled)
        h1 = devnet.read_status(root, target)["height"]
        dropped = metric(root, target, "p2p_over_budget_total", protocol="consensus")
        print(f"flood: {sent} frames in 15 s, {dropped:.0f} dropped over budget; heights {h0} -> {h1}")
        assert sent > 3000, "the flood should outrun the budget of 128 frames/s"
        assert dropped >= sent - (512 + 128 * 50), (sent, dropped)  # at most 50 s of budget passed
        assert h1 >= h0 + 5, "the honest validators kept deciding"
        for v in honest[1:]:  # honest traffic never meets a budget
            assert metric(root, v, "p2p_over_budget_total") == 0, v.index
        assert all(p.poll() is None for p in cluster.procs.values()), "a validator died"
