"""Memory soak: a 4-validator devnet with simulated miners, run for an hour, RSS sampled every minute.

`make soak-memory` (not part of `make test`: it takes an hour). Each validator is its own process
on real libp2p, 0.5 s blocks, 12-block epochs, the miners submitting every epoch: the devnet of
issue 12, whose nodes grew ~2.8 MB a minute without levelling off. The script prints one line per
sample (each node's RSS, decided height) and at the end a verdict per node; it exits 1 if any node
still grows after warm-up, or if the devnet stopped deciding (a stalled node's memory is flat for
the wrong reason), or if a validator died.

The criterion (`grows`), per node, over the samples after warm-up. Warm-up lasts the first third
of the run (at least 10 minutes) *and* until every node has decided `--warmup-heights` (1,200)
heights, because the caches fill by height, not by minute: 256 decided heights, 64 epochs of
validator sets = 768 heights, 16 epochs of weights, and the largest, the DHT's in-memory value
cache (dht/memory.py, 16 MiB of values). Measured on this devnet: a decided-block record is
~7.1 KB and each epoch adds a ~106 KB content record, ~17 KB of DHT values per height, so that
cache is full at ~1,000 heights. Its records are protobuf (upb) messages held in C memory, so
they show in glibc's `malloc_used` (validator_node.memdebug's native line) and never in
tracemalloc. An idle host decides ~111 heights a minute (full at minute ~9); with other work on
the same 2 cores a soak decided 30-50 a minute, and a minute-only warm-up then judged the cache
still filling (malloc_used +45 MB/h up to height ~830) as growth.
  * the least-squares slope of RSS over the post-warm-up samples must be at most `--max-slope`
    MB per hour (default 6: the leak of issue 12 was 168 MB/hour; CPython's allocator and
    SQLite's page cache move RSS by a few MB either way, which over 40 minutes of samples is
    well under 6 MB/hour of slope), and
  * the largest sample of the last third may exceed the largest of the middle third by at most
    `--max-step` MB (default 4): a slope can hide a late step up, and a bounded cache that is
    still filling shows as a step the slope averages away.
A node passes only if both hold. Both thresholds are flags, so a longer run can tighten them.

    .venv/bin/python -m bench.soak_memory --minutes 60
    VALIDATOR_NODE_MEMTRACE=300 is set on validator 0 with --memtrace 300 (validator_node.memdebug)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from validator_node import devnet
from validator_node.devnet.cluster import Processes, node_command
from validator_node.memdebug import ENV as MEMTRACE_ENV
from validator_node.memdebug import ENV_PY as MEMTRACE_PY_ENV
from validator_node.memdebug import rss_kib

EPOCH_BLOCKS = 12
BLOCK_INTERVAL = 0.5
WARMUP_HEIGHTS = 1200  # see the module docstring: the DHT memory cache is full at ~1,040
CHALLENGES = len(devnet.EXAMPLE_CHALLENGES) + len(devnet.SEED_CHALLENGES)


@dataclass
class Sample:
    minute: float
    rss_mb: list[float | None]
    heights: list[int | None]


@dataclass
class Verdict:
    node: int
    slope_mb_per_hour: float
    step_mb: float
    ok: bool
    why: list[str] = field(default_factory=list)


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (minute, MB) points, in MB per hour."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0
    sxy = sum((x - mx) * (y - my) for x, y in points)
    return 60.0 * sxy / sxx


def judge(samples: list[Sample], node: int, warmup_min: float, max_slope: float, max_step: float) -> Verdict:
    """Whether one node's RSS still grows after warm-up (see the module docstring)."""
    pts = [(s.minute, s.rss_mb[node]) for s in samples if s.minute >= warmup_min]
    pts = [(x, y) for x, y in pts if y is not None]
    if len(pts) < 6:
        return Verdict(node, 0.0, 0.0, False, [f"only {len(pts)} samples after warm-up (need 6)"])
    slope = slope_per_hour(pts)  # type: ignore[arg-type]
    third = len(pts) // 3
    middle, last = pts[third : 2 * third], pts[2 * third :]
    step = max(y for _, y in last) - max(y for _, y in middle)  # type: ignore[type-var,operator]
    why = []
    if slope > max_slope:
        why.append(f"slope {slope:.1f} MB/h > {max_slope}")
    if step > max_step:
        why.append(f"last third's peak is {step:.1f} MB above the middle third's (> {max_step})")
    return Verdict(node, round(slope, 2), round(step, 2), not why, why)


def warmup_minute(samples: list[Sample], floor: float, heights: int) -> float:
    """The first sample minute (at least `floor`) at which every node has decided `heights`:
    the caches fill by height, not by minute, and a loaded host decides 2-4x slower.
    Infinity if the devnet never got there (then there is nothing to judge)."""
    for s in samples:
        if s.minute >= floor and all(h is not None and h >= heights for h in s.heights):
            return s.minute
    return float("inf")


class SoakProcesses(Processes):
    """Processes that run without a stop height, with extra environment for some validators."""

    def __init__(self, *args: Any, env_for: dict[int, dict[str, str]], **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.env_for = env_for

    def start(self, v: devnet.DevnetValidator) -> subprocess.Popen[bytes]:
        log = open(self.root / "logs" / f"validator{v.index}.log", "ab")  # noqa: SIM115 - closed in stop()
        self._files.append(log)
        cmd = node_command(self.root, v, None, self.epoch_blocks, self.block_interval)
        env = dict(os.environ, PYTHONWARNINGS="ignore::DeprecationWarning", **self.env_for.get(v.index, {}))
        self.procs[v.index] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        return self.procs[v.index]


def soak(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(args.dir or tempfile.mkdtemp(prefix="soak-memory-"))
    if root.exists() and any(root.iterdir()):
        raise SystemExit(f"{root} is not empty; choose a new --dir")
    vals, _ = devnet.create(root, args.validators, miners=args.miners)
    env_for: dict[int, dict[str, str]] = {i: {} for i in range(args.validators)}
    for i in range(args.validators):
        if args.memtrace and i == 0:
            env_for[i][MEMTRACE_ENV] = str(args.memtrace)
        elif args.native_stats:
            env_for[i].update({MEMTRACE_ENV: str(args.native_stats), MEMTRACE_PY_ENV: "0"})
    for spec in args.node_env:
        node, _, kv = spec.partition(":")
        key, _, value = kv.partition("=")
        env_for[int(node)][key] = value
    sim = devnet.Miners(root, args.miners, vals)
    samples: list[Sample] = []
    started = time.monotonic()
    published = False
    next_sample = started + args.interval
    end = started + 60 * args.minutes
    died: list[str] = []

    def say(msg: str) -> None:
        print(f"[{(time.monotonic() - started) / 60:6.1f} min] {msg}", flush=True)

    say(
        f"devnet in {root}: {args.validators} validators, {args.miners} miners; "
        f"RSS every {args.interval:.0f}s"
    )
    with SoakProcesses(
        root, vals, epoch_blocks=EPOCH_BLOCKS, block_interval=BLOCK_INTERVAL, env_for=env_for
    ) as cluster:
        cluster.start_all()
        while time.monotonic() < end:
            statuses = [devnet.read_status(root, v) for v in vals]
            s0 = statuses[0]
            if not published and s0 is not None and s0["height"] >= 1:
                try:
                    devnet.publish_registry(root, vals[0])
                    published = True
                except Exception as exc:  # validator 0 not yet serving: retry next round
                    say(f"registry not published yet: {exc}")
            ready = all(
                s is not None
                and len(s.get("challenges", [])) == CHALLENGES
                and s["next_epoch"] == s0["next_epoch"]
                for s in statuses
            )
            if (
                ready
                and s0 is not None
                and s0.get("epoch_seed")
                and (s0["height"] % EPOCH_BLOCKS) < EPOCH_BLOCKS - 3
            ):
                sim.submit(int(s0["next_epoch"]), bytes.fromhex(s0["epoch_seed"]))
            for v in vals:
                p = cluster.procs[v.index]
                if p.poll() is not None and f"validator{v.index}" not in " ".join(died):
                    died.append(f"validator{v.index} exited with {p.returncode}")
                    say(died[-1])
            now = time.monotonic()
            if now >= next_sample:
                next_sample += args.interval
                rss = [rss_kib(cluster.procs[v.index].pid) for v in vals]
                s = Sample(
                    round((now - started) / 60, 2),
                    [None if r is None else round(r / 1024, 1) for r in rss],
                    [None if st is None else int(st["height"]) for st in statuses],
                )
                samples.append(s)
                load = os.getloadavg()[0]
                say(
                    "rss MB "
                    + " ".join(f"v{i}={r}" for i, r in enumerate(s.rss_mb))
                    + "  heights "
                    + " ".join(f"{h}" for h in s.heights)
                    + f"  epoch {None if s0 is None else s0['epoch']}  load {load:.1f}"
                )
            time.sleep(0.5)
    floor = args.warmup if args.warmup is not None else max(10.0, args.minutes / 3)
    warmup = warmup_minute(samples, floor, args.warmup_heights)
    verdicts = [judge(samples, i, warmup, args.max_slope, args.max_step) for i in range(len(vals))]
    progress = _progress(samples, warmup)
    ok = all(v.ok for v in verdicts) and not died and progress["ok"]
    return {
        "ok": ok,
        "dir": str(root),
        "minutes": args.minutes,
        "warmup_min": warmup,
        "max_slope_mb_per_hour": args.max_slope,
        "max_step_mb": args.max_step,
        "verdicts": [v.__dict__ for v in verdicts],
        "progress": progress,
        "died": died,
        "submissions_sent": sim.sent,
        "samples": [s.__dict__ for s in samples],
    }


def _progress(samples: list[Sample], warmup: float) -> dict[str, Any]:
    """Decided heights must keep rising after warm-up on every node: flat memory on a stalled
    devnet proves nothing."""
    after = [s for s in samples if s.minute >= warmup]
    if len(after) < 2:
        return {"ok": False, "why": "no samples after warm-up"}
    first, last = after[0].heights, after[-1].heights
    gained = [None if a is None or b is None else b - a for a, b in zip(first, last, strict=True)]
    minutes = after[-1].minute - after[0].minute
    ok = all(g is not None and g >= 10 * minutes for g in gained)  # at least 10 heights a minute
    return {"ok": ok, "heights_gained_after_warmup": gained, "over_minutes": round(minutes, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=60.0, help="how long to run (default 60)")
    p.add_argument("--interval", type=float, default=60.0, help="seconds between RSS samples (default 60)")
    p.add_argument("--warmup", type=float, default=None, help="minutes ignored (default: a third, >= 10)")
    p.add_argument(
        "--warmup-heights",
        type=int,
        default=WARMUP_HEIGHTS,
        help=f"and until every node decided this many heights (default {WARMUP_HEIGHTS})",
    )
    p.add_argument("--max-slope", type=float, default=6.0, help="MB/hour allowed after warm-up")
    p.add_argument("--max-step", type=float, default=4.0, help="MB the last third may top the middle")
    p.add_argument("--validators", type=int, default=4)
    p.add_argument("--miners", type=int, default=6)
    p.add_argument("--dir", default=None, help="devnet folder (default: a new temporary one)")
    p.add_argument("--memtrace", type=float, default=0, help="trace validator 0's heap every N s")
    p.add_argument(
        "--native-stats",
        type=float,
        default=0,
        help="every N s log the untraced validators' malloc/SQLite figures to memtrace.txt",
    )
    p.add_argument(
        "--node-env",
        action="append",
        default=[],
        help="I:KEY=VALUE: extra environment for validator I (e.g. 3:MALLOC_ARENA_MAX=2)",
    )
    p.add_argument("--json", default=None, help="also write the result as JSON to this file")
    args = p.parse_args(argv)
    # a SIGTERM (e.g. `kill` of a background soak) must still stop the validators it started
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = soak(args)
    for v in result["verdicts"]:
        state = "ok" if v["ok"] else "GROWS: " + "; ".join(v["why"])
        print(
            f"validator{v['node']}: slope {v['slope_mb_per_hour']:+.1f} MB/h, "
            f"step {v['step_mb']:+.1f} MB: {state}"
        )
    print(f"progress after warm-up: {result['progress']}")
    if result["died"]:
        print(f"died: {result['died']}")
    print(f"memory soak: {'PASS' if result['ok'] else 'FAIL'} ({result['dir']})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
