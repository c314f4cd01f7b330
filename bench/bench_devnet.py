"""Devnet figures: 4 validator processes on loopback, real libp2p, 1 s block interval.

Measures, per offered load (10 and 50 submissions/s spread over all validators):
submission -> decided-and-scored latency (the submission's stake-weighted median is decided,
seen through validator 0's HTTP API), submissions lost (accepted but never scored in their epoch),
decided blocks per second, and each node's RSS at the end.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import trio

from validator_node import devnet
from validator_node.pipeline.messages import Submission
from validator_node.pipeline.state import submission_id
from wire.codec import encode
from wire.envelope import seal

EPOCH_BLOCKS = 60
MINERS = 64
LOADS = ((10, 20.0), (50, 10.0))  # (submissions per second, seconds)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def api(v: devnet.DevnetValidator, path: str) -> object:
    with urllib.request.urlopen(f"http://127.0.0.1:{v.api_port}{path}", timeout=10) as r:
        return json.loads(r.read())


async def offer(
    vals: list[devnet.DevnetValidator], items: list[bytes], rate: float
) -> tuple[list[float], int]:
    """Send items at `rate` per second over one persistent submit stream per validator."""
    import multiaddr
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.custom_types import TProtocol
    from libp2p.peer.peerinfo import info_from_p2p_addr

    from dht.localnet import close_connections
    from validator_node.p2p.framing import FrameReader, write_frame
    from validator_node.p2p.host import SUBMIT_PROTOCOL

    host = new_host(key_pair=create_new_key_pair(os.urandom(32)), muxer_preference="YAMUX")
    sent_at: list[float] = []
    refused = 0
    async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        streams = []
        for v in vals:
            info = info_from_p2p_addr(multiaddr.Multiaddr(v.multiaddr()))
            await host.connect(info)
            stream = await host.new_stream(info.peer_id, [TProtocol(SUBMIT_PROTOCOL)])
            streams.append((stream, FrameReader(stream, 4096)))

        async def reader(r: FrameReader, n: int) -> None:
            nonlocal refused
            for _ in range(n):
                reply = await r.read_frame()
                if reply != b"ok":
                    refused += 1

        async with trio.open_nursery() as nursery:
            counts = [len(items[i :: len(streams)]) for i in range(len(streams))]
            for (_, r), n in zip(streams, counts, strict=True):
                nursery.start_soon(reader, r, n)
            start = trio.current_time()
            for k, data in enumerate(items):
                await trio.sleep_until(start + k / rate)
                sent_at.append(time.monotonic())
                await write_frame(streams[k % len(streams)][0], data)
        await close_connections(host)
    return sent_at, refused


def main() -> None:
    from wire.keys import Hotkey

    root = Path(tempfile.mkdtemp(prefix="bench-devnet-")) / "dn"
    vals, _ = devnet.create(root, 4, miners=MINERS)
    cluster = devnet.Processes(root, vals, epoch_blocks=EPOCH_BLOCKS, block_interval=1.0)
    with cluster.start_all():
        devnet.wait_until(lambda: (devnet.read_status(root, vals[0]) or {}).get("height", 0) >= 1, 60)
        devnet.publish_registry(root, vals[0])
        devnet.wait_until(lambda: all(len(devnet.read_status(root, v)["challenges"]) == 5 for v in vals), 30)
        miners = [Hotkey.from_wallet(f"miner{i}", "default", root / "wallets") for i in range(MINERS)]
        challenges = devnet.example_challenges()
        h0, t0 = devnet.read_status(root, vals[0])["height"], time.monotonic()
        nonce = 0
        for rate, seconds in LOADS:
            # start each load right after an epoch opens: submissions are scored within their epoch
            devnet.wait_until(
                lambda: {devnet.read_status(root, v)["height"] % EPOCH_BLOCKS for v in vals} <= {1, 2}, 150
            )
            epoch = devnet.read_status(root, vals[0])["next_epoch"]
            items, ids = [], []
            for k in range(int(rate * seconds)):
                m, c = miners[k % MINERS], challenges[(k // MINERS) % len(challenges)]
                nonce += 1
                env_ = seal(Submission(c.challenge_id, epoch, nonce, c.payloads[k % len(c.payloads)]), m, 7)
                items.append(encode(env_))
                ids.append(submission_id(env_).hex())
            # watch validator 0's API from the first submission on, in a thread beside the sender
            scored: dict[str, float] = {}
            stop = threading.Event()

            def watch(scored: dict[str, float] = scored, stop: threading.Event = stop) -> None:
                while not stop.is_set():
                    try:
                        for s in api(vals[0], "/api/submissions"):  # type: ignore[union-attr]
                            if s["aggregate"] is not None and s["id"] not in scored:
                                scored[s["id"]] = time.monotonic()
                    except OSError:
                        pass
                    time.sleep(0.25)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            sent_at, refused = trio.run(offer, vals, items, float(rate))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(scored) < len(ids) - refused:
                time.sleep(0.25)
            stop.set()
            watcher.join()
            lat = sorted(scored[i] - t for i, t in zip(ids, sent_at, strict=True) if i in scored)
            p50 = statistics.median(lat) if lat else float("nan")
            p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan")
            lost = len(ids) - refused - len(lat)
            print(
                f"{rate:>3}/s for {seconds:.0f}s: {len(ids)} offered, {refused} refused, "
                f"{len(lat)} decided-and-scored, {lost} lost; latency p50 {p50:.2f}s p99 {p99:.2f}s"
            )
        h1, t1 = devnet.read_status(root, vals[0])["height"], time.monotonic()
        print(f"decided blocks/s with a 1 s block interval: {(h1 - h0) / (t1 - t0):.2f}")
        print("RSS per node (MB): " + ", ".join(f"{rss_mb(p.pid):.0f}" for p in cluster.procs.values()))


if __name__ == "__main__":
    main()
