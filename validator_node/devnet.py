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
CHALLENGES_DIR = Path(__file__).resolve().parents[1] / "challenges"
# (challenge directory, emission share in ppb); the remaining 10% is burnt to the owner
EXAMPLE_CHALLENGES = (("maxsat", 300_000_000), ("lz-compress", 300_000_000), ("tsp-tour", 300_000_000))


@dataclass
class ExampleChallenge:
    challenge_id: str
    wasm: bytes
    policy: dict[str, Any]
    task: bytes
    payloads: list[bytes]  # what the simulated miners submit (from the challenge's test vectors)
    share_ppb: int


def example_challenges() -> list[ExampleChallenge]:
    """The example challenges with the task that has the most test-vector submissions."""
    import tomllib

    out = []
    for name, share in EXAMPLE_CHALLENGES:
        d = CHALLENGES_DIR / name
        meta = tomllib.loads((d / "challenge.toml").read_text())
        vectors = json.loads((d / "vectors.json").read_text())["vectors"]
        by_task: dict[str, list[str]] = {}
        good: dict[str, int] = {}
        for v in vectors:
            by_task.setdefault(v["task"], []).append(v["submission"])
            good[v["task"]] = good.get(v["task"], 0) + (v["score"] > 0)
        # the task with the most well-scoring answers; its failing vectors stay in as bad miners
        task_hex = max(sorted(by_task), key=lambda t: (good[t], len(by_task[t])))
        out.append(
            ExampleChallenge(
                name,
                (d / meta["challenge"]["module"]).read_bytes(),
                dict(meta.get("policy", {})),
                bytes.fromhex(task_hex),
                [bytes.fromhex(x) for x in by_task[task_hex]],
                share,
            )
        )
    return out


def registry_items(owner_wallet_dir: Path) -> list[bytes]:
    """The owner's signed actions that add and activate the example challenges."""
    from registry.manifest import ChallengeManifest, ModulePolicy
    from registry.state import OP_ACTIVATE, sign_command, sign_manifest
    from validator_node.pipeline.messages import RegistryItem
    from wire.codec import encode
    from wire.keys import Hotkey

    owner = Hotkey.from_wallet("owner", "default", owner_wallet_dir)
    items, nonce = [], 0
    challenges = example_challenges()
    for c in challenges:
        nonce += 1
        manifest = ChallengeManifest(
            challenge_id=c.challenge_id,
            name=c.challenge_id,
            version=1,
            wasm_sha256=hashlib.sha256(c.wasm).digest(),
            wasm_size=len(c.wasm),
            abi_version=1,
            policy=ModulePolicy.from_dict(c.policy),
            emission_share_ppb=c.share_ppb,
            mechanism_id=0,
            task=c.task,
            activation_epoch=0,
            nonce=nonce,
        )
        items.append(encode(RegistryItem(sign_manifest(manifest, owner, NETUID), c.wasm)))
    for c in challenges:
        nonce += 1
        items.append(
            encode(RegistryItem(sign_command(OP_ACTIVATE, c.challenge_id, nonce, owner, NETUID), None))
        )
    return items


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
    root: Path, validators: int, *, miners: int = 6, block_time_ms: int = 1000, tempo: int = 20
) -> tuple[list[DevnetValidator], Path]:
    """Write wallets, peer keys and a genesis into `root`; return the validators and the genesis path."""
    from bittensor import Wallet

    from validator_node.chain.local import Genesis

    root.mkdir(parents=True, exist_ok=True)
    wallets = root / "wallets"
    ports = free_ports(2 * validators)
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
        peer_id = _peer_id_for(seed_path.read_bytes())
        vals.append(DevnetValidator(i, f"validator{i}", ss58, ports[i], peer_id, ports[validators + i]))
    for i in range(miners):
        w = Wallet(name=f"miner{i}", hotkey="default", path=str(wallets))
        w.create_new_hotkey(use_password=False, suppress=True, overwrite=True)
        neurons.append({"hotkey": w.hotkey.ss58_address, "stake": 0, "validator_permit": False})
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
    root: Path,
    v: DevnetValidator,
    peers: list[DevnetValidator],
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
        str(block_interval),
        "--consensus.timeout",
        "3",
        "--epoch-blocks",
        str(epoch_blocks),
        "--api.port",
        str(v.api_port),
    ]
    if stop_at is not None:
        cmd += ["--stop-at-height", str(stop_at)]
    return cmd


class Processes:
    """The validator processes of a devnet folder, each logging to logs/validator<i>.log.

    A context manager: leaving it stops every process it started (SIGINT, then SIGKILL after a
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
        (root / "logs").mkdir(parents=True, exist_ok=True)

    def start(self, v: DevnetValidator) -> subprocess.Popen[bytes]:
        log = open(self.root / "logs" / f"validator{v.index}.log", "ab")  # noqa: SIM115 - closed in stop()
        self._files.append(log)
        cmd = node_command(self.root, v, self.vals, self.stop_at, self.epoch_blocks, self.block_interval)
        env = dict(os.environ, PYTHONWARNINGS="ignore::DeprecationWarning")
        self.procs[v.index] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
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


def submitted_weights(root: Path, v: DevnetValidator) -> list[dict[str, Any]]:
    path = root / "data" / str(NETUID) / v.ss58 / "node.sqlite"
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT epoch, mechid, uids, weights, result FROM weights_submitted ORDER BY epoch, mechid"
        ).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()
    return [
        {"epoch": e, "mechid": m, "uids": json.loads(u), "weights": json.loads(w), "result": r}
        for e, m, u, w, r in rows
    ]


class Miners:
    """Simulated miners: each epoch, every miner submits one payload per active example challenge."""

    def __init__(self, root: Path, count: int, validators: list[DevnetValidator]) -> None:
        from wire.keys import Hotkey

        self.keys = [Hotkey.from_wallet(f"miner{i}", "default", root / "wallets") for i in range(count)]
        self.validators = validators
        self.challenges = example_challenges()
        self.done: set[int] = set()
        self.sent = 0
        self.refused: list[str] = []

    def items_for(self, epoch: int) -> list[tuple[int, bytes]]:
        from validator_node.pipeline.messages import Submission
        from wire.codec import encode
        from wire.envelope import seal

        out = []
        for i, key in enumerate(self.keys):
            for c in self.challenges:
                payload = c.payloads[(i + epoch) % len(c.payloads)]
                env = seal(Submission(c.challenge_id, epoch, i, payload), key, NETUID)
                out.append((i % len(self.validators), encode(env)))
        return out

    def submit(self, epoch: int) -> None:
        import trio

        from validator_node.p2p.host import submit_items

        if epoch in self.done:
            return
        self.done.add(epoch)
        by_validator: dict[int, list[bytes]] = {}
        for vi, data in self.items_for(epoch):
            by_validator.setdefault(vi, []).append(data)

        async def one(vi: int, items: list[bytes]) -> None:
            try:
                replies = await submit_items(self.validators[vi].multiaddr(), items)
            except Exception as exc:
                self.refused.append(f"validator{vi} unreachable: {exc}")
                return
            self.sent += sum(1 for r in replies if r == "ok")
            self.refused += [r for r in replies if r != "ok"]

        async def all_validators() -> None:
            # concurrently: a libp2p connect costs ~250 ms, and an epoch on a devnet is seconds
            async with trio.open_nursery() as nursery:
                for vi, items in sorted(by_validator.items()):
                    nursery.start_soon(one, vi, items)

        trio.run(all_validators)


def publish_registry(root: Path, v: DevnetValidator) -> list[str]:
    import trio

    from validator_node.p2p.host import submit_items

    return trio.run(submit_items, v.multiaddr(), registry_items(root / "wallets"))


def run(
    root: Path,
    validators: int = 4,
    epochs: int = 3,
    timeout: float = 300.0,
    quiet: bool = False,
    epoch_blocks: int = 12,
    miners: int = 6,
) -> dict[str, Any]:
    """Create and run a devnet for `epochs` epochs; return a summary (weights per epoch)."""
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty; choose a new --dir")
    vals, _ = create(root, validators, miners=miners)
    logs_dir = root / "logs"
    logs_dir.mkdir(exist_ok=True)
    stop_at = epochs * epoch_blocks + 1
    cluster = Processes(root, vals, epoch_blocks=epoch_blocks, stop_at=stop_at)
    started = time.monotonic()
    sim = Miners(root, miners, vals)
    published: list[str] = []

    def say(msg: str) -> None:
        if not quiet:
            print(f"[{time.monotonic() - started:6.1f}s] {msg}", flush=True)

    with cluster:
        cluster.start_all()
        procs = list(cluster.procs.values())
        say(
            f"dashboard: http://127.0.0.1:{vals[0].api_port}/ (each validator serves one; logs in {logs_dir})"
        )
        last_line = ""
        while time.monotonic() - started < timeout:
            statuses = [read_status(root, v) for v in vals]
            if not published and statuses[0] is not None and statuses[0]["height"] >= 1:
                published = publish_registry(root, vals[0])
                say(f"owner published {len(published)} registry actions: {sorted(set(published))}")
            s0 = statuses[0]
            # miners hand submissions to every validator, so all must have applied the activation
            ready = all(
                s is not None and len(s.get("challenges", [])) == len(EXAMPLE_CHALLENGES) for s in statuses
            )
            ready = ready and len({s["next_epoch"] for s in statuses if s is not None}) == 1
            if s0 is not None and ready:
                epoch = int(s0["next_epoch"])
                if epoch < epochs and (s0["height"] % epoch_blocks) < epoch_blocks - 3:  # room to score
                    before = sim.sent
                    sim.submit(epoch)
                    if sim.sent > before:
                        say(f"miners submitted {sim.sent - before} payloads for epoch {epoch}")
            line = "  ".join(
                f"v{v.index}: h={s['height']} e={s['epoch']} view={s['view']} peers={s['peers']}"
                if s
                else f"v{v.index}: starting"
                for v, s in zip(vals, statuses, strict=True)
            )
            if line != last_line:
                say(line)
                last_line = line
            if all(p.poll() is not None for p in procs):
                break
            time.sleep(0.5)
    return summarise(root, vals, epochs, procs, started, logs_dir, sim)


def summarise(
    root: Path,
    vals: list[DevnetValidator],
    epochs: int,
    procs: list[subprocess.Popen[bytes]],
    started: float,
    logs_dir: Path,
    sim: Miners,
) -> dict[str, Any]:
    chains = {v.index: decided_chain(root, v) for v in vals}
    common = min((len(c) for c in chains.values()), default=0)
    chain_identical = common > 0 and all(c[:common] == chains[0][:common] for c in chains.values())
    weights = {v.index: submitted_weights(root, v) for v in vals}
    per_epoch = []
    all_identical = True
    for e in range(epochs):
        by_validator = {}
        for v in vals:
            rows = [w for w in weights[v.index] if w["epoch"] == e and w["result"] == "ok"]
            by_validator[v.ss58] = {
                str(u): x for r in rows for u, x in zip(r["uids"], r["weights"], strict=True)
            }
        vectors = list(by_validator.values())
        identical = len(vectors) == len(vals) and all(x == vectors[0] and x for x in vectors)
        all_identical &= identical
        per_epoch.append({"epoch": e, "weights": by_validator, "identical": identical})
    return {
        "validators": [
            {
                "index": v.index,
                "hotkey": v.ss58,
                "peer_id": v.peer_id,
                "port": v.port,
                "dashboard": f"http://127.0.0.1:{v.api_port}/",
                "decided": len(chains[v.index]),
            }
            for v in vals
        ],
        "epochs": per_epoch,
        "identical": all_identical and chain_identical,
        "decided_heights": common,
        "chain_identical": chain_identical,
        "chain_accepted_set_weights": _chain_records(root),
        "submissions_sent": sim.sent,
        "submissions_refused": sim.refused[:10],
        "tip": chains[0][common - 1][1] if common else None,
        "exit_codes": [p.returncode for p in procs],
        "elapsed_s": round(time.monotonic() - started, 1),
        "dir": str(root),
        "logs": str(logs_dir),
    }


def _chain_records(root: Path) -> int:
    from validator_node.chain.local import LocalChain

    try:
        chain = LocalChain(root / "chain.sqlite")
    except Exception:
        return 0
    try:
        return len(chain.weight_records())
    finally:
        chain.close()
