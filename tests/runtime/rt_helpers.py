"""Shared helpers for runtime tests (imported by basename: tests/runtime is on sys.path under pytest)."""

from __future__ import annotations

from runtime.policy import Policy
from runtime.sandbox import EvalResult, LoadedModule, Sandbox

TASK = b"the quick brown fox"
SUBMISSION = b"the quick brown dog"
SEED = bytes(range(7, 39))
HEIGHT = 1234


def run_good(sandbox: Sandbox, good: LoadedModule) -> EvalResult:
    return sandbox.evaluate(good, TASK, SUBMISSION, seed=SEED, block_height=HEIGHT)


def small_policy(**kw: object) -> Policy:
    base: dict[str, object] = {"fuel": 50_000_000, "memory_bytes": 4 * 1024 * 1024, "wall_clock_ms": 2_000}
    base.update(kw)
    return Policy.from_dict(base)
