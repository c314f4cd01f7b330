"""A local devnet: keys, genesis and the embedded chain in one folder, N validator processes.

Each validator is a separate OS process (`validator-node run`) talking real libp2p over loopback;
they share only the local chain's SQLite file, exactly as separate machines would share a real
chain. The devnet watches their status files, prints progress, stops them, and then checks from
their own stores that every validator decided the identical chain of blocks.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from validator_node.devnet_cluster import (
    NETUID,
    DevnetValidator,
    Processes,
    create,
    decided_chain,
    node_command,
    read_status,
    stop_all,
    submitted_weights,
    wait_until,
)
from validator_node.p2p.submit_replies import accepted

__all__ = [
    "NETUID",
    "DevnetValidator",
    "Miners",
    "Processes",
    "create",
    "decided_chain",
    "example_challenges",
    "node_command",
    "publish_registry",
    "read_status",
    "registry_items",
    "run",
    "stop_all",
    "submitted_weights",
    "wait_until",
]

CHALLENGES_DIR = Path(__file__).resolve().parents[1] / "challenges"
# (challenge directory, emission share in ppb); the remaining 10% is burnt to the owner
EXAMPLE_CHALLENGES = (("maxsat", 200_000_000), ("lz-compress", 200_000_000), ("tsp-tour", 200_000_000))
# the seeds' two other subnets, scored once per epoch over agreed evidence (`aggregate`)
SEED_CHALLENGES = (("allways-swap", 150_000_000), ("bitdefense-invariants", 150_000_000))


@dataclass
class ExampleChallenge:
    challenge_id: str
    wasm: bytes
    policy: dict[str, Any]
    task: bytes
    payloads: list[bytes]  # what the simulated miners submit (from the challenge's test vectors)
    share_ppb: int
    epoch_scored: bool = False  # scored by `aggregate` over the epoch's agreed evidence


def example_challenges(seeds: bool = False) -> list[ExampleChallenge]:
    """The example challenges with the task that has the most test-vector submissions (and, with
    `seeds`, the two epoch-scored seed challenges, which have no task)."""
    import tomllib

    out = []
    if seeds:
        for name, share in SEED_CHALLENGES:
            d = CHALLENGES_DIR / name
            meta = tomllib.loads((d / "challenge.toml").read_text())
            wasm = (d / meta["challenge"]["module"]).read_bytes()
            out.append(ExampleChallenge(name, wasm, dict(meta.get("policy", {})), b"", [], share, True))
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
    challenges = example_challenges(seeds=True)
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


class Miners:
    """Simulated miners: each epoch, every miner submits one payload per active example challenge,
    and answers the epoch's BitDefense rounds as an honest engine, an always-safe or a random miner
    (by index). Allways miners trade on the simulated swap market, not through submissions."""

    def __init__(self, root: Path, count: int, validators: list[DevnetValidator]) -> None:
        from wire.keys import Hotkey

        self.keys = [Hotkey.from_wallet(f"miner{i}", "default", root / "wallets") for i in range(count)]
        self.validators = validators
        self.challenges = [c for c in example_challenges(seeds=True) if c.challenge_id != "allways-swap"]
        self.done: set[int] = set()
        self.sent = 0
        self.refused: list[str] = []

    def items_for(self, epoch: int, seed: bytes) -> list[tuple[int, bytes]]:
        from validator_node.pipeline.messages import Submission
        from wire.codec import encode
        from wire.envelope import seal

        rounds = _bitdefense_rounds()
        out = []
        for i, key in enumerate(self.keys):
            for c in self.challenges:
                if c.challenge_id == "bitdefense-invariants":
                    kind = rounds.MINER_KINDS[i % len(rounds.MINER_KINDS)]
                    payloads = [
                        rounds.answer(kind, epoch, seed, r, i) for r in range(rounds.ROUNDS_PER_EPOCH)
                    ]
                else:
                    payloads = [c.payloads[(i + epoch) % len(c.payloads)]]
                for nonce, payload in enumerate(payloads):
                    env = seal(Submission(c.challenge_id, epoch, nonce, payload), key, NETUID)
                    out.append((i % len(self.validators), encode(env)))
        return out

    def submit(self, epoch: int, seed: bytes) -> None:
        """Submit for `epoch`, whose decided seed (`epoch_seed` in a validator's status) draws the
        epoch's BitDefense rounds."""
        import trio

        from validator_node.p2p.host import submit_items

        if epoch in self.done:
            return
        self.done.add(epoch)
        by_validator: dict[int, list[bytes]] = {}
        for vi, data in self.items_for(epoch, seed):
            by_validator.setdefault(vi, []).append(data)

        async def one(vi: int, items: list[bytes]) -> None:
            try:
                replies = await submit_items(self.validators[vi].multiaddr(), items)
            except Exception as exc:
                self.refused.append(f"validator{vi} unreachable: {exc}")
                return
            self.sent += sum(1 for r in replies if accepted(r))
            self.refused += [r for r in replies if not accepted(r)]

        async def all_validators() -> None:
            # concurrently: a libp2p connect costs ~250 ms, and an epoch on a devnet is seconds
            async with trio.open_nursery() as nursery:
                for vi, items in sorted(by_validator.items()):
                    nursery.start_soon(one, vi, items)

        trio.run(all_validators)


def _bitdefense_rounds() -> Any:
    from validator_node.evidence import _challenge_module

    return _challenge_module("bitdefense-invariants", "rounds")


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
        say(f"genesis {cluster.genesis_hash} ({cluster.genesis_path}), pinned by every validator")
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
                taken = sum(1 for r in published if accepted(r))
                say(f"owner published {len(published)} registry actions: {taken} pooled")
                for r in published:
                    if not accepted(r) or "would be dropped" in r:
                        say(f"  {r}")
            s0 = statuses[0]
            # miners hand submissions to every validator, so all must have applied the activation
            ready = all(
                s is not None
                and len(s.get("challenges", [])) == len(EXAMPLE_CHALLENGES) + len(SEED_CHALLENGES)
                for s in statuses
            )
            ready = ready and len({s["next_epoch"] for s in statuses if s is not None}) == 1
            ready = ready and s0 is not None and s0.get("epoch_seed") is not None
            if s0 is not None and ready:
                epoch = int(s0["next_epoch"])
                if epoch < epochs and (s0["height"] % epoch_blocks) < epoch_blocks - 3:  # room to score
                    before = sim.sent
                    sim.submit(epoch, bytes.fromhex(s0["epoch_seed"]))
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
    # the last closed epoch's per-challenge scores as each validator derived them
    last_scores = {v.ss58: (read_status(root, v) or {}).get("last_epoch_scores") for v in vals}
    scored = [x for x in last_scores.values() if x]
    scores_identical = len(scored) == len(vals) and all(x == scored[0] for x in scored)
    return {
        "last_epoch_scores": scored[0] if scores_identical else last_scores,
        "scores_identical": scores_identical,
        "challenges_scored": sorted(c for c, per in (scored[0]["scores"] if scored else {}).items() if per),
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
