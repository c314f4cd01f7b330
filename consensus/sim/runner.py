"""One seeded simulation run: build validators and faults from the seed, run, check.

Safety: no two honest nodes decide different blocks at one height, and every decision carries a
commit certificate that verifies against the validator set of its height.
Liveness: after the last fault heals at `heal_at`, every honest node decides at least
`LIVENESS_HEIGHTS` new heights within `liveness_bound()` seconds of virtual time. The bound is
(faulty validators + 3) times the largest view timeout plus slack: each faulty leader can waste at
most one view (leaders rotate through the whole set), and two more views cover nodes that healed
mid-view.

With set changes (`SimConfig.set_changes`, `consensus/sim/epochs.py`) the validator set moves at
epoch boundaries; liveness then also asks every honest member of the last scheduled epoch's set
to reach a height in it (`target()`), within the bound plus a per-height allowance for the heights
to go. With WAN latency (`SimConfig.latency = "wan"`, `network.WanLinks`) messages take 25-165 ms
plus their size over the link's bandwidth; use the node's 2 s base timeout there.

Each run also counts what every node sent (messages, bytes) and how long each honest node took
to decide each height from the moment it began it (its previous decision, or its boot).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from consensus.actions import Decide
from consensus.certificates import CertificateError, verify_certificate
from consensus.crypto import MacScheme, Scheme, Sr25519Scheme
from consensus.replica import ReplicaConfig
from consensus.sim.app import ChainApp
from consensus.sim.epochs import EpochSchedule, make_schedule
from consensus.sim.network import EventLoop, Network, NetworkFaults, WanLinks
from consensus.sim.nodes import BEHAVIOURS, SimNode
from consensus.validators import ValidatorSet
from wire.codec import encode
from wire.hashing import sha256
from wire.keys import Hotkey

NETWORK_FAULTS = ("drop", "duplicate", "reorder", "partition", "crash")
BYZANTINE_FAULTS = ("silent", "equivocate", "doublevote", "twins", "forge", "replay")
ALL_FAULTS = NETWORK_FAULTS + BYZANTINE_FAULTS
LIVENESS_HEIGHTS = 2
#: as `validator_node.node.MIN_EPOCH_BLOCKS`. A replica enters h+1 before its application has
#: applied h, so it must know the set of h+1 from the epoch of h-1: one-block epochs break that
#: (the simulator finds unsafe runs within a few seeds). It can also decide h (from buffered
#: packets) and h+1 (from the packet in hand) in one call and enter h+2 with only h-1 applied,
#: which needs 3; the node asks 4.
MIN_EPOCH_BLOCKS = 4


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
    set_changes: int = 0  # epochs after the first, each with joins, leaves and stake moves
    epoch_blocks: int = 0  # heights per epoch with set changes (0: drawn per seed from 4-6)
    latency: str = "lan"  # "lan" (2-30 ms) or "wan" (network.WanLinks)
    payload_bytes: int = 0  # block payload size (0: a 32-byte hash)


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
    # counts (see the module docstring): what the honest nodes sent, and how many they are
    honest_messages: int = 0
    honest_bytes: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, one per (honest node, height)
    epochs_crossed: int = 0  # set changes every required honest node went through
    set_changes: list[tuple[int, int, int]] = field(default_factory=list)  # (joined, left, moved)
    wall_s: float = 0.0  # host seconds the run took (set by the CLI)

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
        self.schedule: EpochSchedule | None = None
        joiners: list[Any] = []
        if cfg.set_changes > 0 and 0 < cfg.epoch_blocks < MIN_EPOCH_BLOCKS:
            raise ValueError(
                f"epochs of {cfg.epoch_blocks} blocks: the node refuses fewer than {MIN_EPOCH_BLOCKS}"
            )
        if cfg.set_changes > 0:
            # an RNG of its own: the draws above and below are those of a run without epochs
            erng = random.Random(f"{seed}/epochs")
            length = cfg.epoch_blocks or erng.randint(4, 6)
            pool = self._pool_keys(seed, cfg, (cfg.validators // 8 + 1) * cfg.set_changes)
            self.schedule = make_schedule(
                erng,
                self.vset,
                [k.public_key for k in pool],
                {keys[i].public_key for i in byz},
                cfg.set_changes,
                length,
                cfg.quorum,
            )
            joiners = [k for k in pool if self.schedule.first_epoch_of(k.public_key) is not None]
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
        self.initial = list(self.nodes)  # online from the start (joiners come later)
        self.joining: dict[int, list[SimNode]] = {}  # epoch whose first decision brings them in
        for key in joiners:
            node = SimNode(len(self.nodes), key, self)
            self._add(node, byzantine=False)
            first = self.schedule.first_epoch_of(key.public_key) if self.schedule else None
            assert first is not None and first > 0
            self.joining.setdefault(first - 1, []).append(node)
        if cfg.latency == "wan":
            self.net.wan = WanLinks(len(self.nodes), random.Random(f"{seed}/wan"))
        elif cfg.latency != "lan":
            raise ValueError(f"unknown latency model {cfg.latency!r}")
        self._groups: dict[int, tuple[frozenset[bytes], list[int]]] = {}
        self.decisions: dict[int, dict[int, bytes]] = {}
        self.violations: list[Violation] = []
        self._halves: dict[int, frozenset[int]] = {}

    # --- construction -----------------------------------------------------------------------

    def _add(self, node: SimNode, byzantine: bool) -> None:
        node.byzantine = byzantine
        self.nodes.append(node)
        self.net.receivers[node.idx] = node.receive

    def _pool_keys(self, seed: int, cfg: SimConfig, n: int) -> list[Any]:
        """Hotkeys that may join later."""
        if cfg.crypto == "mac":
            assert isinstance(self.scheme, MacScheme)
            return [self.scheme.key(f"s{seed}-j{i}") for i in range(n)]
        return [Hotkey.from_name(f"sim-j{i}") for i in range(n)]

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
        """The true set of `height` (the schedule's), for the checker."""
        return self.vset if self.schedule is None else self.schedule.set_for(height)

    def new_app(self) -> ChainApp:
        return ChainApp(self.vset, self.schedule)

    def payload_for(self, height: int, hotkey: bytes, salt: bytes) -> bytes:
        seed = b"payload%d" % height + hotkey + salt
        if self.cfg.payload_bytes <= 32:
            return hashlib.sha256(seed).digest()
        return hashlib.shake_256(seed).digest(self.cfg.payload_bytes)

    def broadcast_targets(self, node: SimNode) -> Sequence[int]:
        """Who a node's broadcast reaches. With epochs, as the node's links do
        (`validator_node/chain_duty.py`): the members of the sets of its height's epoch and the
        next; a node in neither has no links (its peers closed them)."""
        if self.schedule is None:
            return [n.idx for n in self.nodes if n.idx != node.idx]
        r = node.replica
        epoch = self.schedule.epoch_of(r.height if r is not None else node.app.tip()[0] + 1)
        group = self._groups.get(epoch)
        if group is None:
            keys = frozenset(
                v.hotkey for e in (epoch, epoch + 1) for v in self.schedule.set_of_epoch(e).validators
            )
            group = (keys, [n.idx for n in self.nodes if n.hotkey in keys])
            self._groups[epoch] = group
        if node.hotkey not in group[0]:
            return []
        return [i for i in group[1] if i != node.idx]

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
        if self.schedule is not None and not node.byzantine:
            self._bring_in_joiners(node, a.height)
        if not node.byzantine:
            try:
                verify_certificate(
                    a.certificate,
                    self.validator_set_for(a.height),
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

    def _bring_in_joiners(self, donor: SimNode, height: int) -> None:
        """When the first honest node decides the block whose snapshot names a joiner (the first
        of the epoch before the one it joins), the joiner comes online: its operator saw the
        permit, and the node catches up by state sync from a peer before it starts."""
        assert self.schedule is not None
        if (height - 1) % self.schedule.epoch_blocks:
            return
        for node in self.joining.pop(self.schedule.epoch_of(height), []):
            self.loop.at(self.loop.now, lambda n=node: self._join(n, donor))

    def _join(self, node: SimNode, donor: SimNode) -> None:
        reason = node.state_sync(donor)
        if reason is not None:
            self.violations.append(Violation("safety", f"node {node.idx} syncing from {donor.idx}: {reason}"))
        node.boot()

    # --- running ----------------------------------------------------------------------------

    def honest(self) -> list[SimNode]:
        return [n for n in self.nodes if not n.byzantine]

    def liveness_bound(self) -> float:
        faulty = self.cfg.byzantine + (1 if "crash" in self.cfg.faults else 0)
        bound = (faulty + 3) * self.replica_config.timeout(self.cfg.max_timeout_exponent) + 5.0
        if self.schedule is not None or self.net.wan is not None:
            # each height to go may lose its first two views to faulty leaders, and takes a few
            # message delays (the largest: a WAN link's, with a large block queued on an uplink)
            delay = self.net.max_delay if self.net.wan is None else self.net.wan.max_one_way() + 0.5
            per_height = self.replica_config.timeout(0) + self.replica_config.timeout(1) + 10 * delay
            bound += (self.target() if self.schedule is not None else LIVENESS_HEIGHTS) * per_height
        return bound

    def target(self) -> int:
        """The height the run aims for: with epochs, the second height of the last scheduled one."""
        if self.schedule is None:
            return self.cfg.target_height
        return max(self.cfg.target_height, self.schedule.first_height(len(self.schedule.sets) - 1) + 1)

    def required(self, goal: int) -> list[SimNode]:
        """The honest nodes that must reach `goal`: all of them, or with epochs the members of
        its epoch's set (a node that left may stop following)."""
        if self.schedule is None:
            return self.honest()
        members = self.schedule.set_for(goal)
        return [n for n in self.honest() if n.hotkey in members]

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
            victim = rng.choice([n for n in self.initial if not n.byzantine])
            down = rng.uniform(0.1, self.heal_at * 0.6)
            up = rng.uniform(down + 0.1, self.heal_at)
            self.loop.at(down, victim.crash)
            self.loop.at(up, victim.boot)

    def _height_of(self, node: SimNode) -> int:
        return node.app.tip()[0]

    def run(self) -> RunResult:
        self._schedule_faults()
        for node in self.initial:  # joiners come online later (`_bring_in_joiners`)
            node.boot()
        cfg = self.cfg
        heal_height: list[int] = []

        def mark_heal() -> None:
            heal_height.append(max((self._height_of(n) for n in self.honest()), default=0))

        self.loop.at(self.heal_at, mark_heal)
        deadline = self.heal_at + self.liveness_bound()

        waiting_for: list[SimNode] = []  # the required nodes not yet at the goal (after the heal)

        def done() -> bool:
            if self.violations:
                return True
            if not heal_height:
                return False
            goal = max(self.target(), heal_height[0] + LIVENESS_HEIGHTS)
            if not waiting_for:
                waiting_for.extend(self.required(goal))
            while waiting_for and self._height_of(waiting_for[-1]) >= goal:
                waiting_for.pop()
            return not waiting_for

        self.loop.run_until(min(deadline, cfg.max_time), done)
        result = RunResult(seed=self.seed, config=cfg, stakes=self.stakes, byzantine=self.behaviours)
        if heal_height:
            goal = heal_height[0] + LIVENESS_HEIGHTS
            if self.schedule is not None:
                goal = max(goal, self.target())
            lagging = [n.idx for n in self.required(goal) if self._height_of(n) < goal]
            if lagging:
                self.violations.append(
                    Violation(
                        "liveness",
                        f"nodes {lagging} below height {goal} at t={self.loop.now:.1f}"
                        f" (healed at {self.heal_at:.1f}, bound {self.liveness_bound():.0f}s)",
                    )
                )
        result.violations = self.violations
        required = self.required(self.target()) if self.schedule is not None else self.honest()
        result.decided_height = min((self._height_of(n) for n in required), default=0)
        self._count(result)
        result.honest = len(self.honest())
        result.evidence = sum(n.evidence for n in self.honest())
        for n in self.honest():
            for k, v in n.rejected.items():
                result.rejected[k] = result.rejected.get(k, 0) + v
        result.messages = self.net.sent
        result.virtual_time = self.loop.now
        return result

    def _count(self, result: RunResult) -> None:
        honest = self.honest()
        result.honest_messages = sum(self.net.sent_by.get(n.idx, 0) for n in honest)
        result.honest_bytes = sum(self.net.bytes_by.get(n.idx, 0) for n in honest)
        for n in honest:
            for h, t in n.decide_times.items():
                start = n.enter_times.get(h)
                if start is not None:
                    result.latencies.append(t - start)
        if self.schedule is not None:
            result.set_changes = self.schedule.changes()
            reached = self.schedule.epoch_of(result.decided_height) if result.decided_height else 0
            result.epochs_crossed = min(reached, len(self.schedule.sets) - 1)


def run_one(seed: int, cfg: SimConfig) -> RunResult:
    return Simulation(seed, cfg).run()
