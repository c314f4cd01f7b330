"""The devnet's challenges: the examples and the seed subnets' two, as the devnet's owner
registers them (signed manifests and activations), and what its simulated miners submit."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from validator_node.devnet.cluster import NETUID, DevnetValidator

CHALLENGES_DIR = Path(__file__).resolve().parents[2] / "challenges"
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


def owner_of(root: Path) -> Any:
    """The devnet's own owner hotkey (wallet `owner` in the folder), for devnets started without
    an owner key of the user's."""
    from wire.keys import Hotkey

    return Hotkey.from_wallet("owner", "default", root / "wallets")


def registry_items(owner_wallet_dir: Path, owner: Any = None) -> list[bytes]:
    """The owner's signed actions that add and activate the example challenges (nonces 1..10),
    signed by `owner` (a Hotkey), or by the wallet `owner` in `owner_wallet_dir`."""
    from registry.manifest import ChallengeManifest, ModulePolicy
    from registry.state import OP_ACTIVATE, sign_command, sign_manifest
    from validator_node.pipeline.messages import RegistryItem
    from wire.codec import encode
    from wire.keys import Hotkey

    if owner is None:
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


def publish_registry(root: Path, v: DevnetValidator, owner: Any = None) -> list[str]:
    import trio

    from validator_node.p2p.submit_client import submit_items

    return trio.run(submit_items, v.multiaddr(), registry_items(root / "wallets", owner))
