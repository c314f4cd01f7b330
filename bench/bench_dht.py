"""DHT put/get latency over 3 real py-libp2p hosts on loopback (one trio process, TCP+Noise+yamux).

Each round: host 0 puts a fresh random blob (chunked above ~1 MiB), host 2 drops any replica it
received and fetches it over the network (manifest + every chunk verified), and we also time a
certified decided-block put/get. Figures are wall-clock per operation, median and max of N rounds.
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import trio

from consensus.certificates import build_certificate, vote_signing_bytes
from consensus.messages import PHASE_COMMIT, DecisionPacket
from consensus.validators import ValidatorSet
from dht import records
from dht.localnet import dht_network
from wire.hashing import sha256
from wire.keys import Hotkey

NETUID = 1
KEYS = [Hotkey.from_name(f"bench-dht-v{i}") for i in range(4)]
VSET = ValidatorSet.of((k.public_key, 100) for k in KEYS)
SIZES = (("1 KiB", 1024, 10), ("512 KiB", 512 * 1024, 5), ("2.5 MiB", 5 * 512 * 1024, 3))


def _decision(height: int) -> DecisionPacket:
    block = os.urandom(4096)
    bh = sha256(block)
    data = vote_signing_bytes(NETUID, PHASE_COMMIT, height, 0, bh)
    sigs = {k.public_key: k.sign(data) for k in KEYS}
    return DecisionPacket(block=block, certificate=build_certificate(PHASE_COMMIT, height, 0, bh, sigs))


def _ms(xs: list[float]) -> str:
    return f"median {statistics.median(xs) * 1000:7.1f} ms  max {max(xs) * 1000:7.1f} ms"


async def _run(store_dir: Path) -> None:
    async with dht_network(3, NETUID, lambda h: VSET, store_dir=store_dir) as net:
        src, dst = net.dhts[0], net.dhts[2]
        for label, size, rounds in SIZES:
            puts, gets = [], []
            for _ in range(rounds):
                value = os.urandom(size)
                t = time.perf_counter()
                key = await src.put_blob(value)
                puts.append(time.perf_counter() - t)
                parts = [key]
                if key.startswith("/bt-manifest/"):
                    manifest, _ = records.split(value)
                    parts += [records.content_key(h) for h in manifest.chunks]
                for k in parts:  # make host 2 fetch over the network, not from its replica
                    dst.kad.value_store.store.pop(k.encode(), None)
                    if dst.store is not None:
                        dst.store.delete(k)
                t = time.perf_counter()
                got = await dst.get_blob(key)
                gets.append(time.perf_counter() - t)
                assert got == value
            print(f"blob {label:>8}: put {_ms(puts)} | remote get {_ms(gets)}  ({rounds} rounds)", flush=True)
        puts, gets = [], []
        for height in range(5):
            pkt = _decision(height)
            t = time.perf_counter()
            key = await src.put_decision(NETUID, height, pkt)
            puts.append(time.perf_counter() - t)
            dst.kad.value_store.store.pop(key.encode(), None)
            t = time.perf_counter()
            assert await dst.get_decision(NETUID, height) == pkt
            gets.append(time.perf_counter() - t)
        print(f"decided block (4 KiB, 4 sigs): put {_ms(puts)} | remote get {_ms(gets)}", flush=True)


def main() -> None:
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        trio.run(_run, Path(d))
    print(f"(3 hosts, full mesh, SQLite stores; total {time.perf_counter() - t:.1f} s)")


if __name__ == "__main__":
    main()
