"""Hostile input over real libp2p against running validator processes.

Each case must be refused with a clear reason, counted in the node's metrics, and must not stop
the validators from deciding.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import trio

from dht.localnet import close_connections
from validator_node import devnet
from validator_node.p2p.attestation import attest
from validator_node.p2p.framing import FrameReader, write_frame
from validator_node.p2p.host import (
    CHECKPOINT_PROTOCOL,
    CONSENSUS_PROTOCOL,
    SUBMIT_PROTOCOL,
)
from validator_node.p2p.submit_client import submit_items
from validator_node.p2p.submit_replies import accepted
from validator_node.pipeline.messages import Submission
from wire.codec import encode
from wire.envelope import seal
from wire.keys import Hotkey

ENV = dict(os.environ, PYTHONWARNINGS="ignore::DeprecationWarning")


def metric(root: Path, v: devnet.DevnetValidator, name: str) -> float:
    path = root / "data" / str(devnet.NETUID) / v.ss58 / "metrics.prom"
    total = 0.0
    for line in path.read_text().splitlines():
        if line.startswith("validator_" + name):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def impostor_handshake(addr: str, hotkey: Hotkey) -> bytes | None:
    """Open the consensus protocol with an attestation from a hotkey that has no permit."""
    import multiaddr
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.custom_types import TProtocol
    from libp2p.peer.peerinfo import info_from_p2p_addr

    host = new_host(key_pair=create_new_key_pair(os.urandom(32)), muxer_preference="YAMUX")
    info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
    async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        await host.connect(info)
        stream = await host.new_stream(info.peer_id, [TProtocol(CONSENSUS_PROTOCOL)])
        env = attest(hotkey, devnet.NETUID, host.get_id().to_bytes(), (), 10**9)
        await write_frame(stream, encode(env))
        reply = None
        try:
            with trio.fail_after(5):
                reply = await FrameReader(stream, 1 << 20).read_frame()
        except Exception:
            reply = None
        await close_connections(host)
        return reply


async def raw_protocol(addr: str, protocol: str, data: bytes) -> None:
    """Send raw bytes (not necessarily a valid frame) on one of the node's protocols."""
    import multiaddr
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.custom_types import TProtocol
    from libp2p.peer.peerinfo import info_from_p2p_addr

    host = new_host(key_pair=create_new_key_pair(os.urandom(32)), muxer_preference="YAMUX")
    info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
    async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        await host.connect(info)
        stream = await host.new_stream(info.peer_id, [TProtocol(protocol)])
        await stream.write(data)
        await trio.sleep(0.5)
        await host.disconnect(info.peer_id)


def test_hostile_peers_and_items_are_refused_and_counted(tmp_path: Path) -> None:
    root = tmp_path / "dn"
    vals, _ = devnet.create(root, 4, miners=2)
    target = vals[0]
    with devnet.Processes(root, vals).start_all() as cluster:
        devnet.wait_until(lambda: devnet.read_status(root, target)["height"] >= 2, 60)
        owner = Hotkey.from_wallet("owner", "default", root / "wallets")
        miner = Hotkey.from_wallet("miner0", "default", root / "wallets")
        stranger = Hotkey.from_name("stranger")

        # 1. a peer that attests a hotkey without a validator permit is refused at the handshake
        assert trio.run(impostor_handshake, target.multiaddr(), owner) is None
        # 2. items on the submit protocol: each refused with its reason
        forged = seal(Submission("maxsat", 0, 0, b"x"), miner, devnet.NETUID)
        forged = type(forged)(forged.netuid, forged.signer, forged.body, bytes(64))
        replies = trio.run(
            submit_items,
            target.multiaddr(),
            [
                b"\x9f\xff garbage",
                encode(seal(Submission("maxsat", 0, 0, b"x"), stranger, devnet.NETUID)),
                encode(forged),
                encode(seal(Submission("maxsat", 0, 0, b"x"), miner, devnet.NETUID + 1)),
                encode(seal(Submission("no-such-challenge", 0, 0, b"x"), miner, devnet.NETUID)),
            ],
        )
        assert replies[0].startswith("refused: malformed")
        assert "not registered" in replies[1]
        assert "not active" in replies[2]  # cheap checks come before the signature check
        assert "netuid" in replies[3]
        assert "not active" in replies[4]
        # 3. with the challenges active: a replayed submission and a flood from one miner
        assert all(map(accepted, devnet.publish_registry(root, target)))
        devnet.wait_until(lambda: len(devnet.read_status(root, target)["challenges"]) == 5, 30, "activation")
        epoch = devnet.read_status(root, target)["next_epoch"]
        payload = devnet.example_challenges()[0].payloads[0]
        flood = [
            encode(seal(Submission("maxsat", epoch, n, payload), miner, devnet.NETUID)) for n in range(40)
        ]
        bad = seal(Submission("maxsat", epoch, 99, payload), miner, devnet.NETUID)
        bad = type(bad)(bad.netuid, bad.signer, bad.body, bytes(64))
        assert "bad signature" in trio.run(submit_items, target.multiaddr(), [encode(bad)])[0]
        replies = trio.run(submit_items, target.multiaddr(), [flood[0], flood[0], *flood[1:]])
        assert replies[0] == "ok" and replies[1] == "refused: duplicate"
        assert any("rate limited" in r for r in replies[2:]), replies
        assert sum(r == "ok" for r in replies) <= 20  # 16 pending per miner, plus what a block took meanwhile
        # 4. an oversized frame announcement is refused before anything is buffered, and garbage
        #    on every protocol is refused without harm
        trio.run(raw_protocol, target.multiaddr(), SUBMIT_PROTOCOL, (2**31).to_bytes(4, "big") + b"x" * 100)
        for protocol in (CONSENSUS_PROTOCOL, SUBMIT_PROTOCOL, CHECKPOINT_PROTOCOL):
            trio.run(raw_protocol, target.multiaddr(), protocol, b"\x00\x00\x00\x05junk!" + os.urandom(64))
        # the validators keep deciding
        h = devnet.read_status(root, target)["height"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and devnet.read_status(root, target)["height"] < h + 3:
            time.sleep(0.3)
        assert devnet.read_status(root, target)["height"] >= h + 3
        time.sleep(1.0)  # metrics are written every half second
        assert metric(root, target, "p2p_peers_refused_total") >= 1
        assert metric(root, target, "items_refused_total") >= 10
        assert all(p.poll() is None for p in cluster.procs.values()), "a validator died"


def test_validator_losing_its_permit_is_dropped_from_links(tmp_path: Path) -> None:
    from validator_node.chain.local import LocalChain

    root = tmp_path / "dn"
    vals, _ = devnet.create(root, 4, miners=1)
    with devnet.Processes(root, vals).start_all():
        devnet.wait_until(lambda: devnet.read_status(root, vals[0])["peers"] == 3, 60)
        chain = LocalChain(root / "chain.sqlite")
        try:
            chain.set_neuron(chain.metagraph().uid_of(vals[3].ss58), validator_permit=False)
        finally:
            chain.close()
        revoked_at = devnet.read_status(root, vals[0])["height"]
        devnet.wait_until(
            lambda: devnet.read_status(root, vals[0])["peers"] == 2, 90, "the link to be dropped"
        )
        # not at once: its stake counts for quorums until the decided sets leave it out, i.e. from
        # the second epoch start after the refresh that saw the revocation (12-block epochs)
        assert devnet.read_status(root, vals[0])["height"] > revoked_at + 12
        time.sleep(1.0)
        assert metric(root, vals[0], 'p2p_peers_refused_total{reason="permit_revoked"}') >= 1
        h = devnet.read_status(root, vals[0])["height"]
        # 9000 of 10000 TAO still decide
        devnet.wait_until(lambda: devnet.read_status(root, vals[0])["height"] >= h + 3, 20, "more decisions")
