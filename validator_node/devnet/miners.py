"""The devnet's simulated miners: signed submissions for every active challenge, each epoch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from validator_node.devnet.challenges import example_challenges
from validator_node.devnet.cluster import NETUID, DevnetValidator
from validator_node.p2p.submit_replies import accepted

PAYLOADS_DIR = "payloads"  # <devnet>/payloads/<challenge-id>/*: answers for challenges the miners do not know


class Miners:
    """Simulated miners: each epoch, every miner submits one payload per active example challenge,
    and answers the epoch's BitDefense rounds as an honest engine, an always-safe or a random miner
    (by index). Allways miners trade on the simulated swap market, not through submissions.

    A challenge someone else registered (the owner trying the devnet as a sandbox) gets the files in
    `<devnet>/payloads/<challenge-id>/`, miner i submitting file (i + epoch) mod n, read afresh each
    epoch so files can be added while the devnet runs; `unanswered` names active challenges that
    have none, so the devnet can say why their share is burnt instead of staying silent."""

    def __init__(self, root: Path, count: int, validators: list[DevnetValidator]) -> None:
        from wire.keys import Hotkey

        self.root = root
        self.keys = [Hotkey.from_wallet(f"miner{i}", "default", root / "wallets") for i in range(count)]
        self.validators = validators
        self.challenges = [c for c in example_challenges(seeds=True) if c.challenge_id != "allways-swap"]
        self.known = {c.challenge_id for c in example_challenges(seeds=True)}
        self.done: set[int] = set()
        self.sent = 0
        self.refused: list[str] = []
        self.unanswered: set[str] = set()

    def payload_files(self, challenge_id: str) -> list[bytes]:
        d = self.root / PAYLOADS_DIR / challenge_id
        try:
            files = sorted(p for p in d.iterdir() if p.is_file())
        except OSError:
            return []
        return [p.read_bytes() for p in files]

    def items_for(self, epoch: int, seed: bytes, active: Sequence[str] = ()) -> list[tuple[int, bytes]]:
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
        self.unanswered = set()
        for cid in sorted(set(active) - self.known):
            files = self.payload_files(cid)
            if not files:
                self.unanswered.add(cid)
                continue
            for i, key in enumerate(self.keys):
                env = seal(Submission(cid, epoch, 0, files[(i + epoch) % len(files)]), key, NETUID)
                out.append((i % len(self.validators), encode(env)))
        return out

    def submit(self, epoch: int, seed: bytes, active: Sequence[str] = ()) -> None:
        """Submit for `epoch`, whose decided seed (`epoch_seed` in a validator's status) draws the
        epoch's BitDefense rounds; `active` (the status's `challenges`) adds the challenges the
        miners do not know, answered from payload files."""
        import trio

        from validator_node.p2p.submit_client import submit_items

        if epoch in self.done:
            return
        self.done.add(epoch)
        by_validator: dict[int, list[bytes]] = {}
        for vi, data in self.items_for(epoch, seed, active):
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
