"""The devnet's simulated miners: signed submissions for every active challenge, each epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from validator_node.devnet.challenges import example_challenges
from validator_node.devnet.cluster import NETUID, DevnetValidator
from validator_node.p2p.submit_replies import accepted


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
