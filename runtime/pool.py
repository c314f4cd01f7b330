"""Evaluations from trio: worker threads with a concurrency cap, so the event loop never blocks.

wasmtime releases the GIL while guest code runs, so N worker threads give up to N cores of guest
compute. The cap bounds CPU and memory (each in-flight evaluation may hold up to the policy's memory
cap). A cancelled caller abandons its result, but the thread runs on until the guest finishes or hits
its fuel / wall-clock guard, which is exactly why both guards exist.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import trio

from runtime.hostfns import SEED_BYTES
from runtime.policy import Policy
from runtime.sandbox import EvalResult, LoadedModule, Sandbox


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


class EvaluatorPool:
    """`await pool.evaluate(...)` from trio; `pool.evaluate_many(...)` from plain threads (benchmarks)."""

    def __init__(self, sandbox: Sandbox, max_concurrency: int | None = None) -> None:
        self.sandbox = sandbox
        self.max_concurrency = max_concurrency or default_workers()
        self._limiter: trio.CapacityLimiter | None = None

    @property
    def limiter(self) -> trio.CapacityLimiter:
        # created lazily inside a trio run: a CapacityLimiter belongs to the run that made it
        if self._limiter is None:
            self._limiter = trio.CapacityLimiter(self.max_concurrency)
        return self._limiter

    async def evaluate(
        self,
        loaded: LoadedModule,
        task: bytes,
        submission: bytes,
        *,
        policy: Policy | None = None,
        seed: bytes = bytes(SEED_BYTES),
        block_height: int = 0,
    ) -> EvalResult:
        fn = partial(
            self.sandbox.evaluate,
            loaded,
            task,
            submission,
            policy=policy,
            seed=seed,
            block_height=block_height,
        )
        return await trio.to_thread.run_sync(fn, limiter=self.limiter, abandon_on_cancel=True)

    def evaluate_many(
        self, loaded: LoadedModule, jobs: list[tuple[bytes, bytes]], policy: Policy | None = None
    ) -> list[EvalResult]:
        with ThreadPoolExecutor(self.max_concurrency) as ex:
            futs = [ex.submit(self.sandbox.evaluate, loaded, t, s, policy=policy) for t, s in jobs]
            return [f.result() for f in futs]
