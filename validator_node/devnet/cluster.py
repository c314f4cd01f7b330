"""The processes of a devnet: wallets and genesis in a folder, validator commands, status files.

Shared by `validator-node devnet`, the multi-process tests and the devnet benchmark, so that all
three start, watch and stop validators the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
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
    api_port: int = 0

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
    root: Path,
    validators: int,
    *,
    miners: int = 6,
    block_time_ms: int = 1000,
    tempo: int = 20,
    owner_ss58: str | None = None,
) -> tuple[list[DevnetValidator], Path]:
    """Write wallets, peer keys and a genesis into `root`; return the validators and the genesis path.

    The subnet owner is a new wallet `owner` in the folder, or `owner_ss58` (a key of the user's,
    e.g. from `registry keygen`, whose secret never enters the folder)."""
    from bittensor import Wallet

    from validator_node.chain.local import Genesis, LocalChain

    root.mkdir(parents=True, exist_ok=True)
    wallets = root / "wallets"
    ports = free_ports(2 * validators)
    vals: list[DevnetValidator] = []
    neurons: list[dict[str, Any]] = []
    if owner_ss58 is None:
        owner = Wallet(name="owner", hotkey="default", path=str(wallets))
        owner.create_new_hotkey(use_password=False, suppress=True, overwrite=True)
        owner_ss58 = owner.hotkey.ss58_address
    neurons.append({"hotkey": owner_ss58, "stake": 0, "validator_permit": False})
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
        peer_id = _peer_id_for(seed_path.read_bytes())
        vals.append(DevnetValidator(i, f"validator{i}", ss58, ports[i], peer_id, ports[validators + i]))
    for i in range(miners):
        w = Wallet(name=f"miner{i}", hotkey="default", path=str(wallets))
        w.create_new_hotkey(use_password=False, suppress=True, overwrite=True)
        neurons.append({"hotkey": w.hotkey.ss58_address, "stake": 0, "validator_permit": False})
    genesis = {
        "netuid": NETUID,
        "owner": owner_ss58,
        "neurons": neurons,
        "hyperparameters": {"tempo": tempo, "weights_rate_limit": 0},
        "block_time_ms": block_time_ms,
    }
    Genesis.from_dict(genesis)  # validate before writing
    path = root / "genesis.json"
    path.write_text(json.dumps(genesis, indent=2))
    # create the chain file once, before the validators start: four processes creating it at
    # the same moment race for SQLite's exclusive lock on the switch to WAL
    LocalChain(root / "chain.sqlite", Genesis.load(path)).close()
    return vals, path


def genesis_record(root: Path, epoch_blocks: int) -> tuple[Path, str]:
    """The devnet's genesis record (`root/genesis.cbor`) and its hash: created once, from the
    local chain as it is when the devnet first starts, then handed to every validator (file and
    pinned hash), so none of them ever reads its genesis from the chain (validator_node.genesis)."""
    from validator_node.chain.local import LocalChain
    from validator_node.genesis import genesis_hash, load, record_from_chain, save

    path = root / "genesis.cbor"
    if path.exists():
        record = load(path)
        if record.epoch_blocks != epoch_blocks:
            raise ValueError(f"{path} is for {record.epoch_blocks}-block epochs, not {epoch_blocks}")
        return path, genesis_hash(record).hex()
    with LocalChain(root / "chain.sqlite") as chain:
        record = record_from_chain(chain, NETUID, epoch_blocks)
    tmp = path.with_suffix(".tmp")
    save(record, tmp)
    os.replace(tmp, path)
    return path, genesis_hash(record).hex()


# where devnet validators observe evidence for the epoch-scored seed challenges
DEVNET_EVIDENCE = "allways-swap=swap-market-sim,bitdefense-invariants=bitdefense-rounds"


def node_command(
    root: Path,
    v: DevnetValidator,
    stop_at: int | None,
    epoch_blocks: int = 12,
    block_interval: float = 0.5,
) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "validator_node.cli",
        "run",
        "--netuid",
        str(NETUID),
        "--subtensor.network",
        "local",  # the embedded chain, named: `run` has no default chain
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
        # no bootstrap list: each validator publishes its address on the (local) chain and dials
        # the others' from there (validator_node.discovery), as on a real subnet
        "--p2p.discovery_interval",
        "1",
        "--block-interval",
        str(block_interval),
        "--consensus.timeout",
        "3",
        "--epoch-blocks",
        str(epoch_blocks),
        "--api.port",
        str(v.api_port),
    ]
    record, digest = genesis_record(root, epoch_blocks)
    cmd += ["--genesis", str(record), "--genesis-hash", digest]
    cmd += ["--evidence", DEVNET_EVIDENCE]
    if stop_at is not None:
        cmd += ["--stop-at-height", str(stop_at)]
    return cmd


class Processes:
    """The validator processes of a devnet folder, each logging to logs/validator<i>.log.

    A context manager: leaving it stops every process it started (SIGTERM, then SIGKILL after a
    grace period) and closes the log files, whatever happened inside.
    """

    def __init__(
        self,
        root: Path,
        vals: list[DevnetValidator],
        *,
        epoch_blocks: int = 12,
        block_interval: float = 0.5,
        stop_at: int | None = None,
    ) -> None:
        self.root, self.vals = root, vals
        self.epoch_blocks, self.block_interval, self.stop_at = epoch_blocks, block_interval, stop_at
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._files: list[Any] = []
        self.genesis_path, self.genesis_hash = genesis_record(root, epoch_blocks)  # once, before any start
        (root / "logs").mkdir(parents=True, exist_ok=True)

    def start(self, v: DevnetValidator) -> subprocess.Popen[bytes]:
        log = open(self.root / "logs" / f"validator{v.index}.log", "ab")  # noqa: SIM115 - closed in stop()
        self._files.append(log)
        cmd = node_command(self.root, v, self.stop_at, self.epoch_blocks, self.block_interval)
        env = dict(os.environ, PYTHONWARNINGS="ignore::DeprecationWarning")
        self.procs[v.index] = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=_default_sigint
        )
        return self.procs[v.index]

    def start_all(self, vals: list[DevnetValidator] | None = None) -> Processes:
        for v in vals if vals is not None else self.vals:
            self.start(v)
        return self

    def kill(self, v: DevnetValidator) -> None:
        """kill -9: no chance to flush or say goodbye."""
        p = self.procs[v.index]
        p.send_signal(signal.SIGKILL)
        p.wait()

    def stop(self) -> None:
        stop_all(list(self.procs.values()))
        for f in self._files:
            f.close()
        self._files.clear()

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _default_sigint() -> None:
    """A validator of a devnet handles SIGINT as a started-by-hand node does, even when the devnet
    (or the test runner) was started from a background shell, which ignores SIGINT for its children."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_until(pred: Any, timeout: float, what: str = "the devnet") -> None:
    """Poll `pred` (status files may be mid-write: read errors count as 'not yet')."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except (OSError, ValueError, KeyError, TypeError):
            pass
        time.sleep(0.3)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def wait_for_text(path: Path, pattern: str, timeout: float) -> re.Match[str]:
    """Poll a growing text file (a devnet's output) for a regex; the match, or TimeoutError with
    the file's tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, path.read_text())
        if found:
            return found
        time.sleep(0.5)
    raise TimeoutError(f"no {pattern!r} in {path}:\n{path.read_text()[-3000:]}")


def read_status(root: Path, v: DevnetValidator) -> dict[str, Any] | None:
    path = root / "data" / str(NETUID) / v.ss58 / "status.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_store(root: Path, v: DevnetValidator, sql: str) -> list[tuple[Any, ...]]:
    """Rows from a validator's own store, read-only (the validator may still be running)."""
    path = root / "data" / str(NETUID) / v.ss58 / "node.sqlite"
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


def decided_chain(root: Path, v: DevnetValidator) -> list[tuple[int, str]]:
    rows = _read_store(root, v, "SELECT height, block FROM decided ORDER BY height")
    return [(int(h), hashlib.sha256(bytes(b)).hexdigest()) for h, b in rows]


def stop_all(procs: list[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
    for p in procs:
        if p.poll() is None:
            # SIGTERM, which the node handles as a clean stop: SIGINT is ignored by processes
            # started from a background shell (they inherit SIG_IGN), so a devnet run with `&`
            # could only stop its validators by SIGKILL after the grace period
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def submitted_weights(root: Path, v: DevnetValidator) -> list[dict[str, Any]]:
    rows = _read_store(
        root, v, "SELECT epoch, mechid, uids, weights, result FROM weights_submitted ORDER BY epoch, mechid"
    )
    return [
        {"epoch": e, "mechid": m, "uids": json.loads(u), "weights": json.loads(w), "result": r}
        for e, m, u, w, r in rows
    ]
