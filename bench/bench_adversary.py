"""Decide rate under attack: 3 honest validator processes and one Byzantine one on loopback.

Phase 1 measures the honest validators' decided heights per second unloaded (the Byzantine
validator, validator 3 with 10% of the stake, is simply absent). Phase 2 repeats it under every
attack issue 12 names at once:

* an outsider (several throwaway libp2p hosts, i.e. several free peer ids) keeps pulling
  validator 0's checkpoint on many concurrent streams, keeps submit streams busy with 16 MiB junk
  frames, and sends ~900 KiB registry items that name the owner's key but are signed by itself;
* validator 3's keys run `bench/byzantine.py`: linked over the real consensus protocol, it never
  votes and replays one signed sync request for height 1, one view change for the current height
  and fresh view changes for old heights to every honest validator, 100 rounds a second.

Prints both rates, their ratio, what validator 0 served and refused, and every honest
validator's RSS before and after (validator 0 has the most stake: no quorum forms without it).
`tests/node/test_adversary.py` runs the same attack and asserts the behaviour.

Run alone: `.venv/bin/python -m bench.bench_adversary` (about two minutes).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from registry.manifest import OP_ADD, ChallengeManifest, ModulePolicy, RegistryAction
from validator_node import devnet
from validator_node.pipeline.messages import RegistryItem
from wire.codec import encode
from wire.envelope import SignedEnvelope, seal
from wire.keys import Hotkey

PHASE_S = 20.0
HOSTS = 6  # outsider peer ids
PULLS_PER_HOST = 8  # concurrent checkpoint pull loops per host
HOGS_PER_HOST = 4  # concurrent submit streams per host, each sending 16 MiB frames
FORGERS_PER_HOST = 1  # submit streams per host sending forged ~900 KiB registry items
EPOCH_BLOCKS = 12  # a checkpoint at every epoch start, so there is one to pull
BYZANTINE = 3  # validator 3: 1000 of 10000 TAO, under a third, so the others decide without it
BYZANTINE_RATE = 100.0  # replay rounds a second: 3 frames to each honest validator per round, 300 a second
FORGED_MODULE = bytes(range(256)) * (900 * 4)  # 900 KiB, the issue's measurement


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


def forged_items(root: Path, count: int) -> list[bytes]:
    """Registry adds whose envelope names the owner's key, signed by someone else, each with a
    900 KiB module; nonces spread over the owner's next-nonce window and far beyond it."""
    owner = Hotkey.from_wallet("owner", "default", root / "wallets")
    attacker = Hotkey.from_name("bench-adversary-forger")
    digest = hashlib.sha256(FORGED_MODULE).digest()
    items = []
    for i in range(count):
        nonce = 1 + i % 8 if i % 2 else 2**63 - 1 - i
        m = ChallengeManifest(
            f"forged{i}", f"forged{i}", 1, digest, len(FORGED_MODULE), 1, ModulePolicy(),
            100_000_000, 0, b"", 0, nonce,
        )  # fmt: skip
        env = seal(m, attacker, devnet.NETUID)
        forged = SignedEnvelope(devnet.NETUID, owner.public_key, env.body, env.signature)
        items.append(encode(RegistryItem(RegistryAction(OP_ADD, forged), FORGED_MODULE)))
    return items


def bump(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1


async def outsider(
    addr: str,
    seconds: float,
    counts: dict[str, int],
    forged: list[bytes],
    *,
    pulls: int = PULLS_PER_HOST,
    hogs: int = HOGS_PER_HOST,
) -> None:
    """One peer id: concurrent checkpoint pulls, submit streams of 16 MiB junk frames, and a
    submit stream of forged registry items."""
    import multiaddr
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.custom_types import TProtocol
    from libp2p.peer.peerinfo import info_from_p2p_addr

    from dht import yamux_fixes
    from dht.localnet import close_connections
    from validator_node.p2p.framing import FrameReader, write_frame
    from validator_node.p2p.host import CHECKPOINT_PROTOCOL, SUBMIT_PROTOCOL

    yamux_fixes.install()
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
                bump(counts, f"checkpoint_{kind}")
                await stream.reset()
            except Exception:
                bump(counts, "checkpoint_reset")
                await trio.sleep(0.05)

    async def send_all(frames: Iterator[bytes], kind: str) -> None:
        while True:
            try:
                stream = await host.new_stream(info.peer_id, [TProtocol(SUBMIT_PROTOCOL)])
                reader = FrameReader(stream, 64 * 1024)
                while True:
                    reply = await exchange(stream, reader, next(frames))
                    if reply is None or reply.startswith(b"refused: busy"):
                        bump(counts, f"{kind}_busy")
                        break
                    bump(counts, f"{kind}_{'accepted' if reply == b'ok' else 'refused'}")
                await stream.reset()
            except Exception:
                bump(counts, f"{kind}_reset")
                await trio.sleep(0.05)

    async def exchange(stream: Any, reader: FrameReader, data: bytes) -> bytes | None:
        """Write a frame while reading the reply, as a real client must: a server that refuses
        a frame from its header replies before reading the body (and the stream's window then
        stops the write)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write_frame, stream, data)
            reply = await reader.read_frame()
            nursery.cancel_scope.cancel()
        return reply

    def junk_frames() -> Iterator[bytes]:
        while True:
            yield junk

    def forged_frames() -> Iterator[bytes]:
        while True:
            yield from forged

    async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        await host.connect(info)
        with trio.move_on_after(seconds):
            async with trio.open_nursery() as nursery:
                for _ in range(pulls):
                    nursery.start_soon(pull)
                for _ in range(hogs):
                    nursery.start_soon(send_all, junk_frames(), "junk")
                for _ in range(FORGERS_PER_HOST):
                    nursery.start_soon(send_all, forged_frames(), "forged")
        with trio.CancelScope(shield=True):
            await close_connections(host)


async def flood(addr: str, seconds: float, counts: dict[str, int], forged: list[bytes]) -> None:
    async with trio.open_nursery() as nursery:
        for _ in range(HOSTS):
            nursery.start_soon(outsider, addr, seconds, counts, forged)
        # and a peer id that only forges: a flooding host's own junk streams fill its per-peer
        # submit slots, so its forger gets one only when a junk stream happens to end (under CPU
        # load, never: a CI run saw 385 `busy` and no forged item read); this one always gets
        # its forgeries read, and refused on their signature
        nursery.start_soon(functools.partial(outsider, pulls=0, hogs=0), addr, seconds, counts, forged)


@dataclass
class Attacked:
    """The honest processes' side of an attack run."""

    counts: dict[str, int]  # the outsider's view: what it was answered
    byzantine_output: str


class Network:
    """A devnet of 4 validators of which `BYZANTINE` never runs as a node: its keys are the
    Byzantine replayer's. Honest processes stop when the context exits."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.vals, _ = devnet.create(root, 4, miners=0)
        self.honest = [v for v in self.vals if v.index != BYZANTINE]
        self.target = self.vals[0]  # the outsider's target: the largest stake
        self.cluster = devnet.Processes(root, self.vals, epoch_blocks=EPOCH_BLOCKS, block_interval=0.5)

    @contextmanager
    def running(self) -> Iterator[Network]:
        with self.cluster.start_all(self.honest):
            yield self

    def pid(self, v: devnet.DevnetValidator) -> int:
        return self.cluster.procs[v.index].pid

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.cluster.procs.values())

    def attack(self, seconds: float, *, forged: int = 16) -> Attacked:
        """Run the outsider flood against the target and the Byzantine replayer against every
        honest validator, both for `seconds`."""
        bad = self.vals[BYZANTINE]
        cmd = [
            sys.executable, "-m", "bench.byzantine", "--root", str(self.root), "--wallet",
            bad.wallet_name, "--port", str(bad.port), "--bootstrap",
            ",".join(v.multiaddr() for v in self.honest), "--rate", str(BYZANTINE_RATE),
            "--seconds", str(seconds),
        ]  # fmt: skip
        env = dict(os.environ, PYTHONWARNINGS="ignore::DeprecationWarning")
        cwd = Path(__file__).resolve().parent.parent
        byzantine = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd, text=True
        )
        outsider_cmd = [
            sys.executable, "-m", "bench.outsider", "--root", str(self.root),
            "--addr", self.target.multiaddr(), "--seconds", str(seconds), "--forged", str(forged),
        ]  # fmt: skip
        outsider = subprocess.Popen(
            outsider_cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd, text=True
        )
        try:
            flooded, _ = outsider.communicate(timeout=seconds + 90)
            out, _ = byzantine.communicate(timeout=seconds + 60)
        finally:
            for proc in (outsider, byzantine):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        lines = flooded.strip().splitlines()
        try:
            counts: dict[str, int] = json.loads(lines[-1])
        except (IndexError, ValueError):
            raise RuntimeError(f"the outsider process failed: {flooded[-2000:]}") from None
        return Attacked(counts, out)


def measure(root: Path, vals: list[devnet.DevnetValidator], seconds: float, load: Any = None) -> float:
    """The slowest honest validator's decided heights per second over the window."""
    h0, t0 = [height(root, v) for v in vals], time.monotonic()
    if load is None:
        time.sleep(seconds)
    else:
        load()
    h1, t1 = [height(root, v) for v in vals], time.monotonic()
    return min(b - a for a, b in zip(h0, h1, strict=True)) / (t1 - t0)


def main() -> None:
    net = Network(Path(tempfile.mkdtemp(prefix="bench-adversary-")) / "dn")
    root, target = net.root, net.target
    with net.running():
        devnet.wait_until(lambda: height(root, target) >= EPOCH_BLOCKS + 2, 120, "a first checkpoint")
        rss0 = {v.index: rss_mb(net.pid(v)) for v in net.honest}
        unloaded = measure(root, net.honest, PHASE_S)
        result: list[Attacked] = []
        loaded = measure(root, net.honest, PHASE_S, lambda: result.append(net.attack(PHASE_S)))
        rss1 = {v.index: rss_mb(net.pid(v)) for v in net.honest}
        time.sleep(1.0)  # metrics are written every half second
        refused = {
            p: metric(root, target, "p2p_over_budget_total", protocol=p)
            for p in ("streams", "checkpoint", "submit")
        }
        link = {v.index: metric(root, v, "p2p_over_budget_total", protocol="consensus") for v in net.honest}
        sends = {
            v.index: metric(root, v, "consensus_rejected_total", reason="send_budget") for v in net.honest
        }
        served = metric(root, target, "checkpoints_served_total")
        forged = metric(root, target, "items_refused_total")
        alive = net.alive()
    attacked = result[0]
    print(
        "decided heights/s, slowest honest validator (0.5 s interval):"
        f" unloaded {unloaded:.2f}, attacked {loaded:.2f}"
    )
    print(f"attacked / unloaded: {loaded / unloaded:.0%}" if unloaded else "no heights decided unloaded")
    shape = f"{HOSTS} peer ids, {PULLS_PER_HOST} pulls + {HOGS_PER_HOST} junk"
    shape += f" + {FORGERS_PER_HOST} forged streams each"
    print(f"outsider ({shape}): {attacked.counts}")
    print(
        f"validator 0: {served:.0f} checkpoints served, over budget: {refused}, items refused: {forged:.0f}"
    )
    print("byzantine validator 3: " + " | ".join(attacked.byzantine_output.strip().splitlines()[-2:]))
    print(f"link budget refusals of its frames by validator: {link}; sync sends over budget: {sends}")
    print("RSS (MB) before -> after: " + ", ".join(f"v{i} {rss0[i]:.0f} -> {rss1[i]:.0f}" for i in rss0))
    print(f"every honest validator still running: {alive}")


if __name__ == "__main__":
    main()
