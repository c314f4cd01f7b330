"""Decide rate under a flood from a non-validator: 4 validator processes on loopback.

Phase 1 measures the decided heights per second unloaded. Phase 2 repeats it while an outsider
(several throwaway libp2p hosts, i.e. several free peer ids) keeps pulling validator 0's
checkpoint on many concurrent streams and keeps many submit streams busy with 16 MiB junk
frames. Prints both rates, their ratio, what validator 0 served and refused, and its RSS
(validator 0 is the heaviest stake: no quorum forms without it).

Run alone: `.venv/bin/python -m bench.bench_adversary` (about two minutes).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from validator_node import devnet

PHASE_S = 20.0
HOSTS = 6  # outsider peer ids
PULLS_PER_HOST = 8  # concurrent checkpoint pull loops per host
HOGS_PER_HOST = 4  # concurrent submit streams per host, each sending 16 MiB frames
EPOCH_BLOCKS = 12  # a checkpoint at every epoch start, so there is one to pull


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def metric(root: Path, v: devnet.DevnetValidator, name: str, **labels: str) -> float:
    path = root / "data" / str(devnet.NETUID) / v.ss58 / "metrics.prom"
    total = 0.0
    for line in path.read_text().splitlines():
        ours = line.startswith(f"validator_{name}{{") or line.startswith(f"validator_{name} ")
        if ours and all(f'{k}="{val}"' in line for k, val in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def height(root: Path, v: devnet.DevnetValidator) -> int:
    return int((devnet.read_status(root, v) or {}).get("height", 0))


async def outsider(addr: str, seconds: float, counts: dict[str, int]) -> None:
    """One peer id: concurrent checkpoint pulls and submit streams of 16 MiB junk frames."""
    import multiaddr
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.custom_types import TProtocol
    from libp2p.peer.peerinfo import info_from_p2p_addr

    from validator_node.p2p.framing import FrameReader, write_frame
    from validator_node.p2p.host import CHECKPOINT_PROTOCOL, SUBMIT_PROTOCOL, close_connections

    host = new_host(key_pair=create_new_key_pair(os.urandom(32)), muxer_preference="YAMUX")
    info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
    junk = os.urandom(16 * 1024 * 1024)

    async def pull() -> None:
        while True:
            try:
                stream = await host.new_stream(info.peer_id, [TProtocol(CHECKPOINT_PROTOCOL)])
                await write_frame(stream, b"latest")
                data = await FrameReader(stream, 512 * 1024 * 1024).read_frame()
                kind = "refused" if data is None or data.startswith(b"refused: ") else "pulled"
                counts[f"checkpoint_{kind}"] = counts.get(f"checkpoint_{kind}", 0) + 1
                await stream.reset()
            except Exception:
                counts["checkpoint_reset"] = counts.get("checkpoint_reset", 0) + 1
                await trio.sleep(0.05)

    async def hog() -> None:
        while True:
            try:
                stream = await host.new_stream(info.peer_id, [TProtocol(SUBMIT_PROTOCOL)])
                reader = FrameReader(stream, 64 * 1024)
                while True:
                    await write_frame(stream, junk)
                    reply = await reader.read_frame()
                    kind = "busy" if reply is None or reply.startswith(b"refused: busy") else "answered"
                    counts[f"submit_{kind}"] = counts.get(f"submit_{kind}", 0) + 1
                    if kind == "busy":
                        break
                await stream.reset()
            except Exception:
                counts["submit_reset"] = counts.get("submit_reset", 0) + 1
                await trio.sleep(0.05)

    async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        await host.connect(info)
        with trio.move_on_after(seconds):
            async with trio.open_nursery() as nursery:
                for _ in range(PULLS_PER_HOST):
                    nursery.start_soon(pull)
                for _ in range(HOGS_PER_HOST):
                    nursery.start_soon(hog)
        with trio.CancelScope(shield=True):
            await close_connections(host)


async def flood(addr: str, seconds: float, counts: dict[str, int]) -> None:
    async with trio.open_nursery() as nursery:
        for _ in range(HOSTS):
            nursery.start_soon(outsider, addr, seconds, counts)


def measure(root: Path, v: devnet.DevnetValidator, seconds: float, load: Any = None) -> float:
    h0, t0 = height(root, v), time.monotonic()
    if load is None:
        time.sleep(seconds)
    else:
        load()
    h1, t1 = height(root, v), time.monotonic()
    return (h1 - h0) / (t1 - t0)


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-adversary-")) / "dn"
    vals, _ = devnet.create(root, 4, miners=0)
    target = vals[0]
    cluster = devnet.Processes(root, vals, epoch_blocks=EPOCH_BLOCKS, block_interval=0.5)
    with cluster.start_all():
        devnet.wait_until(lambda: height(root, target) >= EPOCH_BLOCKS + 2, 120, "a first checkpoint")
        pid = cluster.procs[target.index].pid
        rss0 = rss_mb(pid)
        unloaded = measure(root, target, PHASE_S)
        counts: dict[str, int] = {}
        peak = [rss0]

        def load() -> None:
            trio.run(flood, target.multiaddr(), PHASE_S, counts)

        loaded = measure(root, target, PHASE_S, load)
        peak.append(rss_mb(pid))
        time.sleep(1.0)  # metrics are written every half second
        refused = {
            p: metric(root, target, "p2p_over_budget_total", protocol=p) for p in ("checkpoint", "submit")
        }
        print(f"decided heights/s (0.5 s block interval): unloaded {unloaded:.2f}, flooded {loaded:.2f}")
        print(f"flooded / unloaded: {loaded / unloaded:.0%}" if unloaded else "no heights decided unloaded")
        shape = f"{HOSTS} peer ids, {PULLS_PER_HOST} pulls + {HOGS_PER_HOST} submit streams each"
        print(f"outsider ({shape}): {counts}")
        served = metric(root, target, "checkpoints_served_total")
        print(f"validator 0: {served:.0f} checkpoints served, refused over budget: {refused}")
        print(f"validator 0 RSS (MB): before {rss0:.0f}, after the flood {peak[-1]:.0f}")


if __name__ == "__main__":
    main()
