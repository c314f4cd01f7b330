"""Time for a new node to sync from a checkpoint holding 10,000 submissions (issue 5's figure).

Setup (not timed): a local chain registering 4 validators and 834 miners (sr25519 hotkeys); the
node's own Application decides one epoch of real blocks: the owner's registry items adding and
activating the three example challenges (their WASM modules are part of the state), 10,000
miner-signed submissions (4 per miner per challenge), 30,000 validator-signed attestations (3
validators per submission), the epoch's weights; every block is certified by a quorum of the
validators' keys. The checkpoint is the state after the epoch's last block plus the next block
and its certificate, exactly as a node stores and serves it. N further blocks carry 500 new
submissions each, for the replay figure.

Timed: snapshot + encode (what a node does at every epoch end), checkpoint size,
`verify_checkpoint` (certificate, state root, decode + restore); then, over real libp2p on
loopback (TCP + Noise + yamux), a fresh `ValidatorNode` (empty store) fetching the checkpoint
(a) from a peer over /bt-platform/checkpoint/1.0.0 and (b) from the DHT (index + chunked
snapshot), each followed by verification and install into its store and application; then
fetching the N following blocks from the DHT and replaying them (certificate check, store,
apply). Figures are wall-clock, one run each (the setup dominates the bench's own runtime).
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import trio

from bench.certified_chain import World, make_world, registry_body, serving_peers
from consensus.certificates import verify_certificate
from validator_node.block import Block
from validator_node.devnet import example_challenges
from validator_node.pipeline.messages import BlockBody
from validator_node.pipeline.snapshot import Checkpoint, snapshot, verify_checkpoint
from validator_node.pipeline.state import submission_id
from wire.codec import decode, encode

NETUID = 5
EPOCH_BLOCKS = 32
SUBMISSIONS = 10_000
PER_BLOCK = 500  # submissions per block (a block holds at most 512 and 1 MiB)
ATTESTATIONS_PER_BLOCK = 4096
REPLAY_BLOCKS = 8


def _s(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms" if seconds < 10 else f"{seconds:8.2f} s "


def _chunks(xs: list, n: int) -> list[list]:  # type: ignore[type-arg]
    return [xs[i : i + n] for i in range(0, len(xs), n)]


def build(root: Path) -> tuple[World, int]:
    """Decide epoch 0 with SUBMISSIONS submissions and their attestations, the first block of
    epoch 1 (which certifies the checkpoint), then REPLAY_BLOCKS blocks of new submissions.
    Returns the world and the checkpoint height."""
    challenges = example_challenges()
    miners = -(-SUBMISSIONS // (4 * len(challenges)))
    w = make_world(root, netuid=NETUID, epoch_blocks=EPOCH_BLOCKS, miners=miners, tag="bench-sync")
    info = replace(w.app.chain_view, epoch=0)
    w.decide(BlockBody(info, tuple(registry_body(w, challenges)), (), (), None))
    wanted = [(m, c, nonce) for nonce in range(4) for c in challenges for m in w.miners][:SUBMISSIONS]
    subs = sorted(
        (w.submission(m, c.challenge_id, n, c.payloads[(i + n) % len(c.payloads)]) for i, (m, c, n) in
         enumerate(wanted)),
        key=submission_id,
    )  # fmt: skip
    for part in _chunks(subs, PER_BLOCK):
        w.decide(BlockBody(None, (), tuple(part), (), None))
    atts = w.attestations([submission_id(e) for e in subs])
    for part in _chunks(atts, ATTESTATIONS_PER_BLOCK):
        w.decide(BlockBody(None, (), (), tuple(part), None))
    w.decide_until(EPOCH_BLOCKS + 1)  # empty blocks, the weights block, then epoch 1's first
    more = [
        w.submission(m, c.challenge_id, nonce, c.payloads[nonce % len(c.payloads)])
        for nonce in range(4)
        for m in w.miners
        for c in challenges
    ][: REPLAY_BLOCKS * PER_BLOCK]  # fmt: skip
    for part in _chunks(sorted(more, key=submission_id), PER_BLOCK):
        w.decide(BlockBody(None, (), tuple(part), (), None))
    return w, EPOCH_BLOCKS


def fresh_node(world: World, data_dir: Path, peers: list) -> object:  # type: ignore[type-arg]
    """A ValidatorNode with an empty store, its transport linked to `peers` and its DHT running,
    but no consensus: what a new node has when it starts looking for a checkpoint."""
    from validator_node.node import NodeConfig, ValidatorNode

    cfg = NodeConfig(
        netuid=NETUID, data_dir=data_dir, bootstrap=[p.addr for p in peers], epoch_blocks=EPOCH_BLOCKS
    )
    return ValidatorNode(cfg, world.validators[3], world.chain)


async def measure_network(world: World, cp_height: int, cp_bytes: bytes, tmp: Path) -> None:
    async with serving_peers(world, [lambda: cp_bytes] * 3, mesh=True) as peers:
        src = peers[0].dht
        t = time.perf_counter()
        await src.put_checkpoint(
            NETUID, cp_height, world.snapshots[cp_height], world.decisions[cp_height + 1]
        )  # type: ignore[attr-defined]
        t_publish = time.perf_counter() - t
        for h in range(cp_height + 2, world.height + 1):
            await src.put_decision(NETUID, h, world.decisions[h])  # type: ignore[attr-defined]
        print(f"publish to the DHT (snapshot chunks + index, 3 hosts) {_s(t_publish)}", flush=True)

        for source in ("peer", "dht"):
            node = fresh_node(world, tmp / f"node-{source}", peers)
            async with trio.open_nursery() as nursery:
                node._nursery = nursery  # type: ignore[attr-defined]
                await nursery.start(node.transport.run, [p.addr for p in peers])  # type: ignore[attr-defined]
                await nursery.start(node._run_dht)  # type: ignore[attr-defined]
                with trio.fail_after(30):
                    while len(node.transport.book.links) < len(peers) or node.dht.routing_table_size() < len(
                        peers
                    ):  # type: ignore[attr-defined]
                        await trio.sleep(0.05)
                t0 = time.perf_counter()
                if source == "peer":
                    data = await node.transport.request_checkpoint(peers[0].transport.peer_id)  # type: ignore[attr-defined]
                else:
                    height, snap, nb = await node.dht.get_checkpoint(NETUID)  # type: ignore[attr-defined]
                    data = encode(Checkpoint(height, snap, nb))
                t1 = time.perf_counter()
                cp, state = await node._verified_checkpoint(data)  # type: ignore[attr-defined]
                t2 = time.perf_counter()
                await node._install_checkpoint(source, data, cp, state)  # type: ignore[attr-defined]
                t3 = time.perf_counter()
                after = decode(world.decisions[cp_height + 2].block, Block).state_root
                assert node.app.tip_height == cp_height + 1 and node.app.root == after  # type: ignore[attr-defined]
                label = "a peer, checkpoint protocol" if source == "peer" else "the DHT, index + snapshot"
                print(
                    f"new node from {label:28}: fetch {_s(t1 - t0)} + verify {_s(t2 - t1)}"
                    f" + install {_s(t3 - t2)} = {_s(t3 - t0)}",
                    flush=True,
                )
                if source == "dht":
                    await replay(world, node, cp_height)
                nursery.cancel_scope.cancel()


async def replay(world: World, node: object, cp_height: int) -> None:
    """Fetch the blocks after the checkpoint from the DHT and apply them as a decision transfer
    would: certificate check, store, apply (evaluation of their submissions not included)."""
    start, end = cp_height + 2, world.height
    t = time.perf_counter()
    batch = await node._dht_window(start, end - start + 1, 10.0)  # type: ignore[attr-defined]
    t_fetch = time.perf_counter() - t
    assert len(batch) == end - start + 1, (len(batch), end - start + 1)
    per_block = []
    for pkt in batch:
        h = pkt.certificate.height
        t = time.perf_counter()
        verify_certificate(
            pkt.certificate, node.vset, NETUID, height=h, block_hash=pkt.certificate.block_hash
        )  # type: ignore[attr-defined]
        await trio.to_thread.run_sync(node.store.put_decision, h, pkt.block, pkt.certificate)  # type: ignore[attr-defined]
        node.app.apply_decided(h, pkt.block)  # type: ignore[attr-defined]
        per_block.append(time.perf_counter() - t)
    assert node.app.root == world.app.root  # type: ignore[attr-defined]
    n = len(batch)
    print(
        f"then {n} blocks x {PER_BLOCK} submissions: fetch from the DHT {_s(t_fetch)},"
        f" replay {_s(sum(per_block))} (median {statistics.median(per_block) * 1000:.1f} ms/block)",
        flush=True,
    )


def main() -> None:
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        t = time.perf_counter()
        world, cp_height = build(tmp / "world")
        t_build = time.perf_counter() - t
        state_after = world.checkpoint(cp_height)
        # what a node does at every epoch end: snapshot the state and encode it
        st = _state_at(world, cp_height)
        t = time.perf_counter()
        snap_bytes = encode(snapshot(st))
        t_encode = time.perf_counter() - t
        assert snap_bytes == world.snapshots[cp_height]
        t = time.perf_counter()
        cp_bytes = encode(state_after)
        t_cp = time.perf_counter() - t
        cp = decode(cp_bytes, Checkpoint)
        t = time.perf_counter()
        restored = verify_checkpoint(cp, world.vset, NETUID, EPOCH_BLOCKS)
        t_verify = time.perf_counter() - t
        assert len(restored.submissions) == SUBMISSIONS
        print(
            f"checkpoint at height {cp_height}: {len(restored.submissions):,} submissions,"
            f" {sum(len(v) for v in restored.attestations.values()):,} attestations,"
            f" {len(restored.modules)} modules (setup {t_build:.1f} s)",
            flush=True,
        )
        print(
            f"checkpoint size {len(cp_bytes):,} bytes (snapshot {len(snap_bytes):,});"
            f" snapshot+encode {_s(t_encode)}; checkpoint encode {_s(t_cp)}",
            flush=True,
        )
        print(f"verify_checkpoint (certificate, root, decode, restore) {_s(t_verify)}", flush=True)
        trio.run(measure_network, world, cp_height, cp_bytes, tmp)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"(total {time.perf_counter() - t_all:.1f} s; {os.cpu_count()} cores, load average {load})")


def _state_at(world: World, height: int) -> object:
    """The application state after `height`, restored from the recorded snapshot (the world's
    application has moved on)."""
    from validator_node.pipeline.snapshot import AppSnapshot, restore

    return restore(decode(world.snapshots[height], AppSnapshot))


if __name__ == "__main__":
    sys.exit(main())
