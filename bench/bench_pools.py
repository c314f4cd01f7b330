"""What a flood of registry items costs a validator (issue 12, item 1): the door's cost per item
and the cost of one height (propose, validate, apply) with the pools as full as they can get.

Measured on 1be342a: 300 forged 900 KiB items were all pooled (264 MiB) and each height took
0.44 s instead of ~0.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from pathlib import Path

from registry.manifest import OP_ADD, ChallengeManifest, ModulePolicy, RegistryAction
from registry.state import sign_manifest
from validator_node.app import Application
from validator_node.chain.base import Hyperparameters
from validator_node.chain.local import Genesis, GenesisNeuron, LocalChain
from validator_node.genesis import record_from_chain
from validator_node.pipeline.messages import RegistryItem
from validator_node.pipeline.pools import NONCE_WINDOW
from wire.envelope import SignedEnvelope, seal
from wire.keys import Hotkey

NETUID = 7
B = 20
OWNER = Hotkey.from_name("bench-pools-owner")
VALS = [Hotkey.from_name(f"bench-pools-v{i}") for i in range(4)]
ATTACKER = Hotkey.from_name("bench-pools-attacker")
MODULE = bytes(range(256)) * (900 * 4)  # 900 KiB


def _app(root: Path) -> tuple[Application, LocalChain]:
    neurons = (GenesisNeuron(OWNER.ss58, 0, False), *(GenesisNeuron(v.ss58, 1000, True) for v in VALS))
    chain = LocalChain(
        root / "chain.sqlite", Genesis(NETUID, OWNER.ss58, neurons, Hyperparameters(tempo=B), 0, 1)
    )
    return Application(record_from_chain(chain, NETUID, B)), chain


def _manifest(nonce: int, cid: str) -> ChallengeManifest:
    return ChallengeManifest(
        cid, cid, 1, hashlib.sha256(MODULE).digest(), len(MODULE), 1, ModulePolicy(), 0, 0, b"", 0, nonce
    )


def _heights(app: Application, chain: LocalChain, n: int) -> float:
    """Mean seconds for one height: the leader's proposal, a replica's validation, the apply."""
    start = time.perf_counter()
    for _ in range(n):
        h = app.tip_height + 1
        data = app.propose(h, VALS[0].public_key, chain.current_block())
        assert app.validate(h, data, chain.current_block()) is None
        app.apply_decided(h, data)
    return (time.perf_counter() - start) / n


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        app, chain = _app(Path(tmp))
        forged = []
        for i in range(300):
            env = seal(_manifest(1 + i % NONCE_WINDOW if i % 2 else 2**63 - 1 - i, f"f{i}"), ATTACKER, NETUID)
            action = RegistryAction(OP_ADD, SignedEnvelope(NETUID, OWNER.public_key, env.body, env.signature))
            forged.append(RegistryItem(action, MODULE))
        t = time.perf_counter()
        refused = sum(app.offer(item) is not None for item in forged)
        per = (time.perf_counter() - t) / len(forged)
        print(
            f"300 forged 900 KiB registry items: {refused} refused, pool {len(app.registry_pool)} items / "
            f"{app.registry_pool.bytes / 2**20:.1f} MiB, {per * 1e3:.2f} ms per item at the door"
        )
        print(
            f"  one height (propose, validate, apply) after the flood: {_heights(app, chain, 5) * 1e3:.1f} ms"
        )
        # the worst the owner's own key can do: the pool full of signed items that never apply
        for i in range(40):
            item = RegistryItem(
                sign_manifest(_manifest(1 + i % NONCE_WINDOW, f"o{i}"), OWNER, NETUID), MODULE
            )
            app.offer(item)
        print(
            f"owner-signed pool at its cap: {len(app.registry_pool)} items / "
            f"{app.registry_pool.bytes / 2**20:.1f} MiB; one height: {_heights(app, chain, 5) * 1e3:.1f} ms"
        )
        chain.close()


if __name__ == "__main__":
    main()
