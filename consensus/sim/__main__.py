"""`python -m consensus.sim`: run many seeded simulations and report safety and liveness.

The JSON output is a stable interface (checked from outside):
``{"runs", "safety_violations", "liveness_failures", "decided_heights", ...}``; the exit status is
non-zero if any run violated safety or liveness.
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
    p.add_argument("--jobs", type=int, default=0, help="worker processes (default: all cores)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--soak", action="store_true", help=f"run the soak plan {SOAK_PLAN} with all faults")
    p.add_argument("--demo", action="store_true", help="narrate a few runs for a human")


def _run(args: tuple[int, SimConfig]) -> RunResult:
    return run_one(*args)


def run_many(jobs: Iterable[tuple[int, SimConfig]], workers: int) -> list[RunResult]:
    jobs = list(jobs)
    if workers <= 1 or len(jobs) < 8:
        return [_run(j) for j in jobs]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers) as pool:
        # small chunks: a chunk of 31-validator seeds costs minutes, so big ones leave a core idle
        return pool.map(_run, jobs, chunksize=max(1, min(8, len(jobs) // (workers * 16))))


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
        "elapsed_s": round(elapsed, 2),
        "seeds_per_s": round(len(results) / elapsed, 1) if elapsed > 0 else None,
        "failures": failures[:50],
    }


def run_from_args(args: argparse.Namespace) -> int:
    workers = args.jobs or os.cpu_count() or 1
    if args.demo:
        return demo()
    if args.soak:
        jobs = [
            (
                seed,
                SimConfig(
                    validators=v, byzantine=b, faults=frozenset(ALL_FAULTS), target_height=args.heights
                ),
            )
            for v, b, n in SOAK_PLAN
            for seed in range(args.seed_start, args.seed_start + n)
        ]
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
