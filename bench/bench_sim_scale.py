"""Consensus at V = 16, 32 and 64 by simulation (`consensus/sim`), with WAN latencies.

Every figure is simulated, not measured on this machine: per-link round-trip times drawn from
50-300 ms with jitter, per-node bandwidths from 10 Mbit/s to 1 Gbit/s, messages of their real
encoded size plus the transport's framing (`consensus/sim/network.py`), blocks with a 4 KiB
payload (the size of the DHT bench's decided block) and the node's 2 s base view timeout.

For each V: a clean run (one validator set, no faults) gives the decision latency (simulated
seconds from a validator beginning a height to its deciding it; p50/p99 over every validator and
height) and the messages and bytes each validator sends per decided block; a faulty run ((V-1)//3
Byzantine validators of every kind, drops, duplicates, reordering, a partition, a crash, and the
validator set changing at 3 epoch boundaries with joins, leaves and stake moves) gives the latency
under faults and checks safety and liveness. "host s" is the CPU time the simulation took here.

    .venv/bin/python -m bench.bench_sim_scale [--seeds N] [--heights H] [--validators 16,32,64]
"""

from __future__ import annotations

import argparse
import os
import time

from consensus.sim.__main__ import WAN_BASE_TIMEOUT, run_many, traffic
from consensus.sim.runner import ALL_FAULTS, SimConfig

PAYLOAD = 4096


def configs(v: int, heights: int) -> tuple[SimConfig, SimConfig]:
    clean = SimConfig(
        validators=v,
        target_height=heights,
        latency="wan",
        base_timeout=WAN_BASE_TIMEOUT,
        payload_bytes=PAYLOAD,
    )
    faulty = SimConfig(
        validators=v,
        byzantine=(v - 1) // 3,
        faults=frozenset(ALL_FAULTS),
        target_height=heights,
        latency="wan",
        base_timeout=WAN_BASE_TIMEOUT,
        payload_bytes=PAYLOAD,
        set_changes=3,
    )
    return clean, faulty


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bench_sim_scale", description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=2, help="seeds per V and kind of run")
    p.add_argument("--heights", type=int, default=20, help="heights each clean run decides")
    p.add_argument("--validators", default="16,32,64")
    p.add_argument("--jobs", type=int, default=0, help="worker processes (default: all cores)")
    args = p.parse_args(argv)
    workers = args.jobs or os.cpu_count() or 1
    sizes = [int(x) for x in args.validators.split(",")]
    print(
        f"consensus/sim, WAN (RTT 50-300 ms, 10 Mbit/s-1 Gbit/s), {PAYLOAD} B payloads, "
        f"{args.seeds} seeds x {args.heights} heights per V"
    )
    print(
        "| V | decision latency p50 / p99 | messages / validator / block | KiB / validator / block "
        "| with faults and set changes: p50 / p99 | safety / liveness violations | host s |"
    )
    print("|---|---|---|---|---|---|---|")
    for v in sizes:
        clean, faulty = configs(v, args.heights)
        t_wall = time.perf_counter()
        jobs = [(s, clean) for s in range(args.seeds)] + [(s, faulty) for s in range(args.seeds)]
        results = run_many(jobs, workers)
        host = sum(r.wall_s for r in results)
        ok = [r for r in results if r.config == clean]
        bad = [r for r in results if r.config == faulty]
        a, b = traffic(ok), traffic(bad)
        violations = f"{sum(1 for r in results if not r.safe)} / {sum(1 for r in results if not r.live)}"
        print(
            f"| {v} | {a['latency_p50_s'] * 1000:.0f} / {a['latency_p99_s'] * 1000:.0f} ms "
            f"| {a['messages_per_validator_height']} | {a['bytes_per_validator_height'] / 1024:.1f} "
            f"| {b['latency_p50_s'] * 1000:.0f} / {b['latency_p99_s'] * 1000:.0f} ms "
            f"| {violations} | {host:.0f} (wall {time.perf_counter() - t_wall:.0f}) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
