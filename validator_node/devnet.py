"""A local devnet: keys, genesis and the embedded chain in one folder, N validator processes.

Each validator is a separate OS process (`validator-node run`) talking real libp2p over loopback;
they share only the local chain's SQLite file, exactly as separate machines would share a real
chain. The devnet watches their status files, prints progress, stops them, and then checks from
their own stores that every validator decided the identical chain of blocks.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NETUID = 7
DEFAULT_STAKES_TAO = (4000, 3000, 2000, 1000, 800, 600, 500, 400)


@dataclass
class DevnetValidator:
    index: int
    wallet_name: str
    ss58: str
    port: int
    peer_id: str

    def multiaddr(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.port}/p2p/{self.peer_id}"


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _peer_id_for(seed: bytes) -> str:
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.id import ID

    return ID.from_pubkey(create_new_key_pair(seed).public_key).to_string()


def create(
    root: Path, validators: int, *, block_time_ms: int = 1000, tempo: int = 20
) -> tuple[list[DevnetValidator], Path]:
    """Write wallets, peer keys and a genesis into `root`; return the validators and the genesis path."""
    from bittensor import Wallet

    from validator_node.chain.local import Genesis

    root.mkdir(parents=True, exist_ok=True)
    wallets = root / "wallets"
    ports = free_ports(validators)
    vals: list[DevnetValidator] = []
    neurons: list[dict[str, Any]] = []
    owner = Wallet(name="owner", hotkey="default", path=str(wallets))
    owner.create_new_hotkey(use_password=False, suppress=True, overwrite=True)
    neurons.append({"hotkey": owner.hotkey.ss58_address, "stake": 0, "validator_permit": False})
    for i in range(validators):
        w = Wallet(name=f"validator{i}", hotkey="default", path=str(wallets))
        w.create_new_hotkey(use_password=False, suppress=True, overwrite=True)
        ss58 = w.hotkey.ss58_address
        stake = DEFAULT_STAKES_TAO[i % len(DEFAULT_STAKES_TAO)] * 10**9
        neurons.append({"hotkey": ss58, "stake": stake, "validator_permit": True})
        node_dir = root / "data" / str(NETUID) / ss58
        node_dir.mkdir(parents=True, exist_ok=True)
        seed_path = node_dir / "peer_key.ed25519"
        if not seed_path.exists():
            fd = os.open(seed_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(32))
        vals.append(DevnetValidator(i, f"validator{i}", ss58, ports[i], _peer_id_for(seed_path.read_bytes())))
    genesis = {
        "netuid": NETUID,
        "owner": owner.hotkey.ss58_address,
        "neurons": neurons,
        "hyperparameters": {"tempo": tempo, "weights_rate_limit": 0},
        "block_time_ms": block_time_ms,
    }
    Genesis.from_dict(genesis)  # validate before writing
    path = root / "genesis.json"
    path.write_text(json.dumps(genesis, indent=2))
    return vals, path


def node_command(
    root: Path, v: DevnetValidator, peers: list[DevnetValidator], stop_at: int | None
) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "validator_node.cli",
        "run",
        "--netuid",
        str(NETUID),
        "--wallet.name",
        v.wallet_name,
        "--wallet.hotkey",
        "default",
        "--wallet.path",
        str(root / "wallets"),
        "--chain.path",
        str(root / "chain.sqlite"),
        "--chain.genesis",
        str(root / "genesis.json"),
        "--data-dir",
        str(root / "data"),
        "--p2p.port",
        str(v.port),
        "--p2p.bootstrap",
        ",".join(p.multiaddr() for p in peers if p.index != v.index),
        "--block-interval",
        "0.5",
        "--consensus.timeout",
        "3",
    ]
    if stop_at is not None:
        cmd += ["--stop-at-height", str(stop_at)]
    return cmd


def read_status(root: Path, v: DevnetValidator) -> dict[str, Any] | None:
    path = root / "data" / str(NETUID) / v.ss58 / "status.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def decided_chain(root: Path, v: DevnetValidator) -> list[tuple[int, str]]:
    path = root / "data" / str(NETUID) / v.ss58 / "node.sqlite"
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT height, block FROM decided ORDER BY height").fetchall()
    finally:
        db.close()
    return [(int(h), hashlib.sha256(bytes(b)).hexdigest()) for h, b in rows]


def stop_all(procs: list[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run(
    root: Path,
    validators: int = 4,
    heights: int = 10,
    timeout: float = 180.0,
    quiet: bool = False,
) -> dict[str, Any]:
    """Create and run a devnet until every validator decided `heights` blocks; return a summary."""
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty; choose a new --dir")
    vals, _ = create(root, validators)
    logs_dir = root / "logs"
    logs_dir.mkdir(exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    started = time.monotonic()
    env = dict(os.environ, PYTHONWARNINGS="ignore::DeprecationWarning")
    try:
        for v in vals:
            log = open(logs_dir / f"validator{v.index}.log", "wb")  # noqa: SIM115 - owned by the process
            procs.append(
                subprocess.Popen(
                    node_command(root, v, vals, heights), stdout=log, stderr=subprocess.STDOUT, env=env
                )
            )
        last_line = ""
        while time.monotonic() - started < timeout:
            statuses = [read_status(root, v) for v in vals]
            line = "  ".join(
                f"v{v.index}: h={s['height']} view={s['view']} peers={s['peers']}"
                if s
                else f"v{v.index}: starting"
                for v, s in zip(vals, statuses, strict=True)
            )
            if line != last_line and not quiet:
                print(f"[{time.monotonic() - started:6.1f}s] {line}", flush=True)
                last_line = line
            if all(p.poll() is not None for p in procs):
                break
            time.sleep(0.5)
    finally:
        stop_all(procs)
    chains = {v.index: decided_chain(root, v) for v in vals}
    common = min((len(c) for c in chains.values()), default=0)
    identical = common >= heights and all(c[:common] == chains[0][:common] for c in chains.values())
    return {
        "validators": [
            {
                "index": v.index,
                "hotkey": v.ss58,
                "peer_id": v.peer_id,
                "port": v.port,
                "decided": len(chains[v.index]),
            }
            for v in vals
        ],
        "heights": heights,
        "decided_heights": common,
        "identical": identical,
        "tip": chains[0][common - 1][1] if common else None,
        "exit_codes": [p.returncode for p in procs],
        "elapsed_s": round(time.monotonic() - started, 1),
        "dir": str(root),
        "logs": str(logs_dir),
    }
