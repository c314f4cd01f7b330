"""`python -m consensus.sim`: run many seeded simulations and report safety and liveness.

The JSON output is a stable interface (checked from outside):
``{"runs", "safety_violations", "liveness_failures", "decided_heights", ...}``; the exit status is
non-zero if any run violated safety or liveness. It also reports, over the honest validators of
all runs, messages and bytes sent per validator per decided height and the decision latency
(p50/p99, simulated seconds from a node beginning a height to its deciding it), and one row per
configuration (`plans`).

`--soak` runs `SOAK_PLAN` (a fixed validator set, LAN latencies) and `SOAK_SETS_PLAN` (validator
sets changing at epoch boundaries, small V on LAN and WAN latencies, V = 16-64 on WAN), all with
every fault; `--soak-scale` scales every row's seed count (e.g. 0.1 for a quick run).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Iterable
from typing import Any

from consensus.sim.runner import ALL_FAULTS, RunResult, SimConfig, run_one

SOAK_PLAN = ((4, 1, 4000), (7, 2, 4000), (16, 5, 1500), (31, 10, 500))
#: (validators, byzantine, seeds, latency), each with SOAK_SET_CHANGES set changes and all faults
SOAK_SETS_PLAN = (
    (4, 1, 2000, "lan"),
    (7, 2, 2000, "lan"),
    (4, 1, 1000, "wan"),
    (7, 2, 1000, "wan"),
    (16, 5, 200, "wan"),
    (32, 10, 60, "wan"),
    (64, 21, 20, "wan"),
)
SOAK_SET_CHANGES = 3
WAN_BASE_TIMEOUT = 2.0  # the node's default view timeout; 0.5 s (the LAN default) is below a WAN round


def parse_faults(text: str) -> frozenset[str]:
    if text in ("", "none"):
        return frozenset()
    if text == "all":
        return frozenset(ALL_FAULTS)
    faults = frozenset(f.strip() for f in text.split(",") if f.strip())
    unknown = faults - set(ALL_FAULTS)
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown fault(s) {', '.join(sorted(unknown))}; choose from {', '.join(ALL_FAULTS)}, all, none"
        )
    return faults


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=int, default=100, help="number of seeded runs")
    p.add_argument("--seed-start", type=int, default=0, help="first seed")
    p.add_argument("--validators", type=int, default=4)
    p.add_argument("--byzantine", type=int, default=0, help="Byzantine validators (stake kept under 1/3)")
    p.add_argument(
        "--faults", type=parse_faults, default=frozenset(), help=f"comma list of {', '.join(ALL_FAULTS)}"
    )
    p.add_argument("--heights", type=int, default=4, help="heights every honest node must decide")
    p.add_argument("--crypto", choices=("mac", "sr25519"), default="mac")
    p.add_argument(
        "--set-changes", type=int, default=0, help="epochs after the first (each: joins, leaves, stake moves)"
    )
    p.add_argument("--epoch-blocks", type=int, default=0, help="heights per epoch (0: 4-6, drawn per seed)")
    p.add_argument("--latency", choices=("lan", "wan"), default="lan", help="wan: 50-300 ms RTT, bandwidths")
    p.add_argument("--payload-bytes", type=int, default=0, help="block payload size (0: a 32-byte hash)")
    p.add_argument(
        "--base-timeout", type=float, default=None, help=f"view timeout (0.5 s; {WAN_BASE_TIMEOUT} s on WAN)"
    )
    p.add_argument("--soak-scale", type=float, default=1.0, help="scale the soak plans' seed counts")
    p.add_argument(
        "--soak-plan", choices=("all", "fixed", "sets"), default="all", help="which soak plans to run"
    )
    p.add_argument("--jobs", type=int, default=0, help="worker processes (default: all cores)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--soak",
        action="store_true",
        help=f"run the soak plans {SOAK_PLAN} and, with set changes, {SOAK_SETS_PLAN}, with all faults",
    )
    p.add_argument("--demo", action="store_true", help="narrate a few runs for a human")


def _run(args: tuple[int, SimConfig]) -> RunResult:
    t0 = time.perf_counter()
    result = run_one(*args)
    result.wall_s = time.perf_counter() - t0
    return result


def soak_jobs(
    seed_start: int, heights: int, scale: float = 1.0, plan: str = "all"
) -> list[tuple[int, SimConfig]]:
    faults = frozenset(ALL_FAULTS)
    fixed, sets = (SOAK_PLAN if plan != "sets" else ()), (SOAK_SETS_PLAN if plan != "fixed" else ())
    jobs = [
        (seed, SimConfig(validators=v, byzantine=b, faults=faults, target_height=heights))
        for v, b, n in fixed
        for seed in range(seed_start, seed_start + max(1, round(n * scale)))
    ]
    jobs += [
        (
            seed,
            SimConfig(
                validators=v,
                byzantine=b,
                faults=faults,
                target_height=heights,
                set_changes=SOAK_SET_CHANGES,
                latency=latency,
                base_timeout=WAN_BASE_TIMEOUT if latency == "wan" else 0.5,
            ),
        )
        for v, b, n, latency in sets
        for seed in range(seed_start, seed_start + max(1, round(n * scale)))
    ]
    # the most expensive first, so that a worker is not left with a V=64 seed at the end
    jobs.sort(key=lambda j: -j[1].validators)
    return jobs


def percentile(values: list[float], p: int) -> float | None:
    """Nearest-rank percentile (p in 0..100) of `values`, None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, -(-p * len(ordered) // 100) - 1)]


def plan_key(cfg: SimConfig) -> str:
    faults = "all" if cfg.faults == frozenset(ALL_FAULTS) else ",".join(sorted(cfg.faults)) or "none"
    v, b, changes = cfg.validators, cfg.byzantine, cfg.set_changes
    return f"V={v} byz={b} faults={faults} {cfg.latency} set_changes={changes}"


def traffic(results: list[RunResult]) -> dict[str, Any]:
    """Per honest validator per decided height, and decision latency, over `results`."""
    latencies = [x for r in results for x in r.latencies]
    per = sum(r.honest * r.decided_height for r in results)
    messages = sum(r.honest_messages for r in results)
    sent = sum(r.honest_bytes for r in results)
    return {
        "messages_per_validator_height": round(messages / per, 1) if per else None,
        "bytes_per_validator_height": round(sent / per) if per else None,
        "latency_p50_s": _round(percentile(latencies, 50)),
        "latency_p99_s": _round(percentile(latencies, 99)),
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def run_many(jobs: Iterable[tuple[int, SimConfig]], workers: int) -> list[RunResult]:
    jobs = list(jobs)
    heavy = [j for j in jobs if j[1].validators >= 16]
    if workers <= 1 or len(jobs) < (2 if heavy else 8):
        return [_run(j) for j in jobs]
    light = [j for j in jobs if j[1].validators < 16]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers) as pool:
        # a seed at V >= 16 costs seconds to a minute: one per task, so none leaves a core idle
        big = pool.map_async(_run, heavy, chunksize=1)
        small = pool.map_async(_run, light, chunksize=max(1, min(8, len(light) // (workers * 16))))
        return big.get() + small.get()


def summarise(results: list[RunResult], elapsed: float) -> dict[str, Any]:
    failures = [
        {
            "seed": r.seed,
            "validators": r.config.validators,
            "kind": v.kind,
            "detail": v.detail,
            "byzantine": r.byzantine,
        }
        for r in results
        for v in r.violations
    ]
    by_v: dict[int, dict[str, Any]] = {}
    for r in results:
        s = by_v.setdefault(r.config.validators, {"runs": 0, "seconds": 0.0})
        s["runs"] += 1
    groups: dict[str, list[RunResult]] = {}
    for r in results:
        groups.setdefault(plan_key(r.config), []).append(r)
    plans = {
        key: {
            "runs": len(rs),
            "safety_violations": sum(1 for r in rs if not r.safe),
            "liveness_failures": sum(1 for r in rs if not r.live),
            "set_changes_crossed": sum(r.epochs_crossed for r in rs),
            "joins_leaves_moves_crossed": [
                sum(c[i] for r in rs for c in r.set_changes[: r.epochs_crossed]) for i in range(3)
            ],
            "cpu_s": round(sum(r.wall_s for r in rs), 1),
            **traffic(rs),
        }
        for key, rs in groups.items()
    }
    rejected: dict[str, int] = {}
    for r in results:
        for k, v in r.rejected.items():
            rejected[k] = rejected.get(k, 0) + v
    return {
        "runs": len(results),
        "safety_violations": sum(1 for r in results if not r.safe),
        "liveness_failures": sum(1 for r in results if not r.live),
        "decided_heights": sum(r.decided_height for r in results),
        "min_decided_height": min((r.decided_height for r in results), default=0),
        "evidence_reports": sum(r.evidence for r in results),
        "rejected_packets": dict(sorted(rejected.items())),
        "messages": sum(r.messages for r in results),
        "runs_by_validators": {str(k): v["runs"] for k, v in sorted(by_v.items())},
        "set_changes_crossed": sum(r.epochs_crossed for r in results),
        **traffic(results),
        "plans": plans,
        "elapsed_s": round(elapsed, 2),
        "seeds_per_s": round(len(results) / elapsed, 1) if elapsed > 0 else None,
        "failures": failures[:50],
    }


def run_from_args(args: argparse.Namespace) -> int:
    workers = args.jobs or os.cpu_count() or 1
    if args.demo:
        return demo()
    if args.soak:
        jobs = soak_jobs(args.seed_start, args.heights, args.soak_scale, args.soak_plan)
    else:
        if args.byzantine < 0 or args.byzantine >= args.validators:
            print("--byzantine must be between 0 and validators-1", file=sys.stderr)
            return 2
        cfg = SimConfig(
            validators=args.validators,
            byzantine=args.byzantine,
            faults=args.faults,
            target_height=args.heights,
            crypto=args.crypto,
            set_changes=args.set_changes,
            epoch_blocks=args.epoch_blocks,
            latency=args.latency,
            payload_bytes=args.payload_bytes,
            base_timeout=args.base_timeout or (WAN_BASE_TIMEOUT if args.latency == "wan" else 0.5),
        )
        jobs = [(seed, cfg) for seed in range(args.seed_start, args.seed_start + args.seeds)]
    t0 = time.perf_counter()
    results = run_many(jobs, workers)
    summary = summarise(results, time.perf_counter() - t0)
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        print(
            f"{summary['runs']} runs: {summary['safety_violations']} safety violations, "
            f"{summary['liveness_failures']} liveness failures, "
            f"{summary['decided_heights']} heights decided, "
            f"{summary['evidence_reports']} equivocation reports, {summary['seeds_per_s']} seeds/s"
        )
        for key, row in summary["plans"].items():
            print(
                f"  {key}: {row['runs']} runs, {row['safety_violations']}/{row['liveness_failures']} "
                f"violations, {row['set_changes_crossed']} set changes crossed, "
                f"{row['messages_per_validator_height']} msgs and {row['bytes_per_validator_height']} B "
                f"per validator per height, latency p50 {row['latency_p50_s']} s p99 {row['latency_p99_s']} s"
            )
        for f in summary["failures"][:10]:
            print(f"  seed {f['seed']} (V={f['validators']}): {f['kind']}: {f['detail']}")
    return 1 if summary["safety_violations"] or summary["liveness_failures"] else 0


def demo() -> int:
    """A short narrated tour: the same protocol under worse and worse conditions."""
    scenarios = [
        ("4 validators, perfect network", SimConfig(validators=4)),
        ("4 validators, one silent (stake < 1/3)", SimConfig(validators=4, byzantine=1)),
        (
            "7 validators, lossy network, partition and a crash",
            SimConfig(validators=7, faults=frozenset(("drop", "duplicate", "reorder", "partition", "crash"))),
        ),
        (
            "16 validators, 5 Byzantine (equivocation, double votes, twins, forgery, replay)"
            " and all network faults",
            SimConfig(validators=16, byzantine=5, faults=frozenset(ALL_FAULTS)),
        ),
    ]
    bad = 0
    for title, cfg in scenarios:
        results = [run_one(seed, cfg) for seed in range(20)]
        s = summarise(results, 1.0)
        bad += s["safety_violations"] + s["liveness_failures"]
        print(f"{title}:")
        print(
            f"  20 seeds, {s['decided_heights']} heights decided, "
            f"safety violations {s['safety_violations']}, "
            f"liveness failures {s['liveness_failures']}, equivocations caught {s['evidence_reports']}, "
            f"packets refused {sum(s['rejected_packets'].values())} {s['rejected_packets']}"
        )
    print("demo: all runs safe and live" if not bad else f"demo: {bad} violations")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m consensus.sim", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
