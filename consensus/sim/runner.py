"""One seeded simulation run: build validators and faults from the seed, run, check.

Safety: no two honest nodes decide different blocks at one height, and every decision carries a
commit certificate that verifies against the validator set.
Liveness: after the last fault heals at `heal_at`, every honest node decides at least
`LIVENESS_HEIGHTS` new heights within `liveness_bound()` seconds of virtual time. The bound is
(faulty validators + 3) times the largest view timeout plus slack: each faulty leader can waste at
most one view (leaders rotate through the whole set), and two more views cover nodes that healed
mid-view.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from consensus.actions import Decide
from consensus.certificates import CertificateError, verify_certificate
from consensus.crypto import MacScheme, Scheme, Sr25519Scheme
from consensus.replica import ReplicaConfig
from consensus.sim.network import EventLoop, Network, NetworkFaults
from consensus.sim.nodes import BEHAVIOURS, SimNode
from consensus.validators import ValidatorSet
from wire.codec import encode
from wire.hashing import sha256
from wire.keys import Hotkey

NETWORK_FAULTS = ("drop", "duplicate", "reorder", "partition", "crash")
BYZANTINE_FAULTS = ("silent", "equivocate", "doublevote", "twins", "forge", "replay")
ALL_FAULTS = NETWORK_FAULTS + BYZANTINE_FAULTS
LIVENESS_HEIGHTS = 2


@dataclass(frozen=True)
class SimConfig:
    validators: int = 4
    byzantine: int = 0
    faults: frozenset[str] = frozenset()
    target_height: int = 4
    crypto: str = "mac"  # "mac" (fast, simulation-only) or "sr25519" (real hotkeys)
    base_timeout: float = 0.5
    max_timeout_exponent: int = 4
    quorum: tuple[int, int] = (2, 3)  # only a mutation test changes this
    max_time: float = 2000.0


@dataclass
class Violation:
    kind: str  # "safety" | "liveness"
    detail: str


@dataclass
class RunResult:
    seed: int
    config: SimConfig
    violations: list[Violation] = field(default_factory=list)
    decided_height: int = 0  # lowest height every honest node reached
    honest: int = 0
    evidence: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    messages: int = 0
    virtual_time: float = 0.0
    stakes: list[int] = field(default_factory=list)
    byzantine: list[str] = field(default_factory=list)

    @property
    def safe(self) -> bool:
        return not any(v.kind == "safety" for v in self.violations)

    @property
    def live(self) -> bool:
        return not any(v.kind == "liveness" for v in self.violations)


class Simulation:
    def __init__(self, seed: int, cfg: SimConfig) -> None:
        unknown = set(cfg.faults) - set(ALL_FAULTS)
        if unknown:
            raise ValueError(f"unknown faults: {', '.join(sorted(unknown))}")
        self.seed = seed
        self.cfg = cfg
        self.rng = random.Random(seed)
        self.loop = EventLoop()
        self.scheme: Scheme
        keys: list[Any]
        if cfg.crypto == "mac":
            mac = MacScheme()
            self.scheme = mac
            keys = [mac.key(f"s{seed}-v{i}") for i in range(cfg.validators)]
            self.outsider = mac.key(f"s{seed}-outsider")
        elif cfg.crypto == "sr25519":
            self.scheme = Sr25519Scheme()
            keys = [Hotkey.from_name(f"sim-v{i}") for i in range(cfg.validators)]
            self.outsider = Hotkey.from_name("sim-outsider")
        else:
            raise ValueError(f"unknown crypto {cfg.crypto!r}")
        self.replica_config = ReplicaConfig(
            netuid=7, base_timeout=cfg.base_timeout, max_timeout_exponent=cfg.max_timeout_exponent
        )
        stakes, byz = self._choose_stakes_and_byzantine(cfg)
        self.stakes = stakes
        self.vset = ValidatorSet.of(
            ((k.public_key, s) for k, s in zip(keys, stakes, strict=True)), quorum=cfg.quorum
        )
        network_faults = cfg.faults & set(NETWORK_FAULTS)
        self.heal_at = self.rng.uniform(2.0, 8.0) if network_faults else 0.0
        self.net = Network(self.loop, self.rng, self._network_faults(cfg), self.heal_at)
        self.nodes: list[SimNode] = []
        self.behaviours: list[str] = []
        byz_kinds = [f for f in BYZANTINE_FAULTS if f in cfg.faults] or ["silent"]
        for i, key in enumerate(keys):
            if i in byz:
                kind = byz_kinds[(len(self.behaviours) + seed) % len(byz_kinds)]
                self.behaviours.append(kind)
                if kind == "twins":
                    self._add(SimNode(len(self.nodes), key, self), byzantine=True)
                    self._add(SimNode(len(self.nodes), key, self), byzantine=True)
                else:
                    self._add(BEHAVIOURS[kind](len(self.nodes), key, self), byzantine=True)
            else:
                self._add(SimNode(len(self.nodes), key, self), byzantine=False)
        self.decisions: dict[int, dict[int, bytes]] = {}
        self.violations: list[Violation] = []
        self._halves: dict[int, frozenset[int]] = {}

    # --- construction -----------------------------------------------------------------------

    def _add(self, node: SimNode, byzantine: bool) -> None:
        node.byzantine = byzantine
        self.nodes.append(node)
        self.net.receivers[node.idx] = node.receive

    def _choose_stakes_and_byzantine(self, cfg: SimConfig) -> tuple[list[int], set[int]]:
        n = cfg.validators
        dist = self.rng.choice(("equal", "random", "whale"))
        unit = 10**9
        if dist == "equal":
            stakes = [1000 * unit] * n
        elif dist == "random":
            stakes = [self.rng.randint(1, 1000) * unit for _ in range(n)]
        else:
            stakes = [self.rng.randint(10, 100) * unit for _ in range(n)]
            stakes[self.rng.randrange(n)] = sum(stakes) // 2
        byz = set(self.rng.sample(range(n), cfg.byzantine)) if cfg.byzantine else set()
        if byz:
            honest_total = sum(s for i, s in enumerate(stakes) if i not in byz)
            cap = (honest_total - 1) // 2  # byzantine stake strictly under 1/3 of the total
            byz_total = sum(stakes[i] for i in byz)
            if byz_total > cap:
                for i in byz:
                    stakes[i] = max(1, stakes[i] * cap // byz_total)
                while sum(stakes[i] for i in byz) > cap:
                    j = max(byz, key=lambda i: stakes[i])
                    stakes[j] -= 1
                if any(stakes[i] <= 0 for i in byz):
                    raise ValueError("cannot keep byzantine stake under 1/3 with these validators")
        return stakes, byz

    def _network_faults(self, cfg: SimConfig) -> NetworkFaults:
        f = cfg.faults
        nf = NetworkFaults(
            drop=self.rng.uniform(0.05, 0.3) if "drop" in f else 0.0,
            duplicate=self.rng.uniform(0.05, 0.3) if "duplicate" in f else 0.0,
            reorder="reorder" in f,
        )
        return nf

    # --- helpers used by nodes --------------------------------------------------------------

    def validator_set_for(self, height: int) -> ValidatorSet:
        return self.vset

    def others(self, idx: int) -> list[int]:
        return [n.idx for n in self.nodes if n.idx != idx]

    def split_half(self, idx: int) -> frozenset[int]:
        if idx not in self._halves:
            others = self.others(idx)
            self.rng.shuffle(others)
            self._halves[idx] = frozenset(others[: len(others) // 2])
        return self._halves[idx]

    def deliver_to(self, src: int, targets: Iterable[int], packet: Any) -> None:
        data = encode(packet)
        for t in targets:
            self.net.send(src, t, data)

    def record_decision(self, node: SimNode, a: Decide) -> None:
        bh = sha256(a.block)
        if not node.byzantine:
            try:
                verify_certificate(
                    a.certificate,
                    self.vset,
                    self.replica_config.netuid,
                    self.scheme,
                    height=a.height,
                    block_hash=bh,
                )
            except CertificateError as exc:
                self.violations.append(Violation("safety", f"node {node.idx} height {a.height}: {exc}"))
            seen = self.decisions.setdefault(a.height, {})
            seen[node.idx] = bh
            if len(set(seen.values())) > 1:
                self.violations.append(
                    Violation(
                        "safety", f"height {a.height}: honest nodes decided {len(set(seen.values()))} blocks"
                    )
                )

    # --- running ----------------------------------------------------------------------------

    def honest(self) -> list[SimNode]:
        return [n for n in self.nodes if not n.byzantine]

    def liveness_bound(self) -> float:
        faulty = self.cfg.byzantine + (1 if "crash" in self.cfg.faults else 0)
        return (faulty + 3) * self.replica_config.timeout(self.cfg.max_timeout_exponent) + 5.0

    def _schedule_faults(self) -> None:
        f = self.cfg.faults
        rng = self.rng
        if "partition" in f and self.heal_at > 0:
            start = rng.uniform(0, self.heal_at / 2)
            idx = [n.idx for n in self.nodes]
            rng.shuffle(idx)
            side = frozenset(idx[: rng.randint(1, len(idx) - 1)])
            self.net.faults.partitions.append((start, self.heal_at, side))
        if "crash" in f and self.heal_at > 0:
            victim = rng.choice(self.honest())
            down = rng.uniform(0.1, self.heal_at * 0.6)
            up = rng.uniform(down + 0.1, self.heal_at)
            self.loop.at(down, victim.crash)
            self.loop.at(up, victim.boot)

    def _height_of(self, node: SimNode) -> int:
        return node.app.tip()[0]

    def run(self) -> RunResult:
        self._schedule_faults()
        for node in self.nodes:
            node.boot()
        cfg = self.cfg
        heal_height: list[int] = []

        def mark_heal() -> None:
            heal_height.append(max((self._height_of(n) for n in self.honest()), default=0))

        self.loop.at(self.heal_at, mark_heal)
        deadline = self.heal_at + self.liveness_bound()

        def done() -> bool:
            if self.violations:
                return True
            if not heal_height:
                return False
            goal = max(cfg.target_height, heal_height[0] + LIVENESS_HEIGHTS)
            return all(self._height_of(n) >= goal for n in self.honest())

        self.loop.run_until(min(deadline, cfg.max_time), done)
        result = RunResult(seed=self.seed, config=cfg, stakes=self.stakes, byzantine=self.behaviours)
        if heal_height:
            goal = heal_height[0] + LIVENESS_HEIGHTS
            lagging = [n.idx for n in self.honest() if self._height_of(n) < goal]
            if lagging:
                self.violations.append(
                    Violation(
                        "liveness",
                        f"nodes {lagging} below height {goal} at t={self.loop.now:.1f}"
                        f" (healed at {self.heal_at:.1f}, bound {self.liveness_bound():.0f}s)",
                    )
                )
        result.violations = self.violations
        result.decided_height = min((self._height_of(n) for n in self.honest()), default=0)
        result.honest = len(self.honest())
        result.evidence = sum(n.evidence for n in self.honest())
        for n in self.honest():
            for k, v in n.rejected.items():
                result.rejected[k] = result.rejected.get(k, 0) + v
        result.messages = self.net.sent
        result.virtual_time = self.loop.now
        return result


def run_one(seed: int, cfg: SimConfig) -> RunResult:
    return Simulation(seed, cfg).run()
