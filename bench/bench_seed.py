"""Fuel and time of the seed challenges' `aggregate` over evidence bundles of growing size.

Bundles come from each challenge's own simulator (deterministic from the seed); the module runs
in the node's sandbox exactly as an epoch's weights block runs it (fresh instance, the manifest's
policy). Prints fuel (deterministic: the same on every machine) and wall time (median of 5).

    .venv/bin/python -m bench.bench_seed
"""

from __future__ import annotations

import statistics
import tempfile
import time
import tomllib
from pathlib import Path

from runtime.policy import Policy
from runtime.sandbox import Sandbox
from validator_node.evidence import _challenge_module

CHALLENGES = Path(__file__).resolve().parents[1] / "challenges"


def _loaded(sandbox: Sandbox, name: str) -> tuple[object, Policy]:
    d = CHALLENGES / name
    meta = tomllib.loads((d / "challenge.toml").read_text())
    policy = Policy.from_dict(meta.get("policy", {}))
    return sandbox.load((d / meta["challenge"]["module"]).read_bytes(), policy), policy


def _measure(sandbox: Sandbox, loaded: object, policy: Policy, bundle: bytes) -> tuple[int, float, str]:
    times, fuel, kind = [], 0, "ok"
    for _ in range(5):
        t0 = time.perf_counter()
        _, res = sandbox.call_packed(loaded, "aggregate", bundle, policy=policy)  # type: ignore[arg-type]
        times.append(time.perf_counter() - t0)
        fuel, kind = res.fuel_used, res.error_kind or "ok"
    return fuel, statistics.median(times), kind


def main() -> None:
    sim_aw = _challenge_module("allways-swap", "simulator")
    sim_bd = _challenge_module("bitdefense-invariants", "simulator")
    with tempfile.TemporaryDirectory() as tmp:
        sandbox = Sandbox(Path(tmp))
        print("seed challenges: aggregate over simulated evidence (fuel exact, time median of 5)")
        loaded, policy = _loaded(sandbox, "allways-swap")
        for miners, history in ((8, 1_200), (64, 3_000), (256, 3_000)):
            bundle = sim_aw.bundle_bytes(sim_aw.simulate(7, miners=miners, history_blocks=history))
            fuel, secs, kind = _measure(sandbox, loaded, policy, bundle)
            print(
                f"   allways-swap, {miners:3d} miners, {history} blocks ({len(bundle) // 1024} KiB): "
                f"{fuel:,} fuel, {secs * 1000:.1f} ms ({kind})"
            )
        loaded, policy = _loaded(sandbox, "bitdefense-invariants")
        for rounds in (4, 40, 400):
            bundle = sim_bd.simulate(3, rounds=rounds)
            fuel, secs, kind = _measure(sandbox, loaded, policy, bundle)
            print(
                f"   bitdefense-invariants, {rounds:3d} rounds ({len(bundle) // 1024} KiB): "
                f"{fuel:,} fuel, {secs * 1000:.1f} ms ({kind})"
            )


if __name__ == "__main__":
    main()
