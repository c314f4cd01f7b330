"""Consensus figures: decision latency with real sr25519 keys, and simulator throughput.

Decision latency: V replicas in one process, messages delivered immediately in FIFO order, real
hotkeys. For each height we time from the leader's proposal to the moment every replica has
decided. The bound it is compared with is the signature work a round needs on this machine,
measured in the same run: each replica verifies one proposal and the 2(V-1) votes that arrive
before it decides, and signs a prepare and a commit (the leader also signs the proposal).
"""

from __future__ import annotations

import statistics
import time
from collections import deque

from consensus.actions import Broadcast, Decide, PersistVote, RequestProposal, Send
from consensus.replica import Replica, ReplicaConfig
from consensus.sim.app import ChainApp, make_block
from consensus.sim.runner import ALL_FAULTS, SimConfig, run_one
from consensus.validators import ValidatorSet
from wire import keys
from wire.codec import encode

NETUID = 7


def signature_costs(samples: int = 2000) -> tuple[float, float]:
    k = keys.Hotkey.from_name("bench")
    msg = b"x" * 120
    sig = k.sign(msg)
    t = time.perf_counter()
    for _ in range(samples):
        k.sign(msg)
    t_sign = (time.perf_counter() - t) / samples
    t = time.perf_counter()
    for _ in range(samples):
        keys.verify(k.public_key, msg, sig)
    t_verify = (time.perf_counter() - t) / samples
    return t_sign, t_verify


def decision_latency(v: int, heights: int) -> list[float]:
    hotkeys = [keys.Hotkey.from_name(f"bench-v{i}") for i in range(v)]
    vset = ValidatorSet.of((k.public_key, 1000 + 7 * i) for i, k in enumerate(hotkeys))
    cfg = ReplicaConfig(netuid=NETUID, base_timeout=1e9)
    apps = {k.public_key: ChainApp() for k in hotkeys}
    reps = {
        k.public_key: Replica(
            k, lambda h: vset, apps[k.public_key].validate, cfg, decisions=apps[k.public_key].decision
        )
        for k in hotkeys
    }
    queue: deque[tuple[bytes, bytes]] = deque()
    pending: list[tuple[bytes, RequestProposal]] = []
    decided_at: dict[int, int] = {}

    def run(hk: bytes, actions: list[object]) -> None:
        decided = False
        for a in actions:
            if isinstance(a, Broadcast):
                data = encode(a.packet)
                queue.extend((o, data) for o in reps if o != hk)
            elif isinstance(a, Send):
                queue.append((a.to, encode(a.packet)))
            elif isinstance(a, Decide):
                apps[hk].apply(a.height, a.block, a.certificate)
                decided_at[a.height] = decided_at.get(a.height, 0) + 1
                decided = True
            elif isinstance(a, RequestProposal):
                pending.append((hk, a))
            elif isinstance(a, PersistVote):
                pass  # durability cost is the store's, measured with the node
        if decided:
            run(hk, reps[hk].on_timer(0.0))

    for hk, r in reps.items():
        run(hk, r.start(0.0))
    latencies = []
    for _ in range(heights):
        hk, req = pending.pop(0)
        _, parent = apps[hk].tip()
        t0 = time.perf_counter()
        run(hk, reps[hk].propose(make_block(req.height, parent, b"bench")))
        while queue and decided_at.get(req.height, 0) < v:
            dst, data = queue.popleft()
            run(dst, reps[dst].on_message(data, 0.0))
        latencies.append(time.perf_counter() - t0)
        while queue:  # late votes for the decided height: not part of the decision latency
            dst, data = queue.popleft()
            run(dst, reps[dst].on_message(data, 0.0))
    return latencies


def sim_throughput(v: int, byz: int, seeds: int) -> float:
    cfg = SimConfig(validators=v, byzantine=byz, faults=frozenset(ALL_FAULTS))
    t = time.perf_counter()
    for s in range(seeds):
        run_one(s, cfg)
    return seeds / (time.perf_counter() - t)


def main() -> None:
    t_sign, t_verify = signature_costs()
    print(f"sr25519 on this machine: sign {t_sign * 1e6:.1f} us, verify {t_verify * 1e6:.1f} us")
    print(f"{'V':>4} {'decision p50':>14} {'p90':>10} {'sig bound':>11} {'ratio':>7}")
    for v, heights in ((4, 40), (16, 12), (64, 4)):
        lat = decision_latency(v, heights)
        bound = v * (2 * v - 1) * t_verify + (2 * v + 1) * t_sign
        p50 = statistics.median(lat)
        p90 = sorted(lat)[int(0.9 * (len(lat) - 1))]
        print(
            f"{v:>4} {p50 * 1e3:>11.1f} ms {p90 * 1e3:>7.1f} ms {bound * 1e3:>8.1f} ms {p50 / bound:>6.2f}x"
        )
    print("simulator throughput (all faults, Byzantine stake < 1/3, MAC signatures):")
    for v, b, n in ((4, 1, 100), (16, 5, 10)):
        print(f"  V={v:<3} B={b:<3} {sim_throughput(v, b, n):7.1f} seeds/s")


if __name__ == "__main__":
    main()
