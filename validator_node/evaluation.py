"""Running admitted submissions in the sandbox, off the event loop.

wasmtime releases the GIL while guest code runs, so evaluations go to worker threads with a
concurrency cap (one per core); the trio loop keeps serving consensus meanwhile. Modules are
compiled once per hash (the sandbox also caches compiled code on disk), and every evaluation is
appended to the hash-chained audit log under the node's data dir.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import trio

from registry.manifest import ChallengeManifest
from validator_node.metrics import Metrics
from validator_node.pipeline.state import Admitted


class Evaluator:
    """Compiles each challenge module once, then evaluates through the runtime's worker pool."""

    def __init__(self, data_dir: Path, metrics: Metrics, workers: int | None = None) -> None:
        self.data_dir = data_dir
        self.metrics = metrics
        self.workers = workers
        self._pool: Any = None
        self._loaded: dict[bytes, Any] = {}
        self._lock = threading.Lock()

    def _load(self, manifest: ChallengeManifest, wasm: bytes, policy: Any) -> Any:
        from runtime.pool import EvaluatorPool
        from runtime.sandbox import Sandbox

        with self._lock:  # compiling (and the first open of the sandbox) is serialised
            if self._pool is None:
                self._pool = EvaluatorPool(Sandbox.open(self.data_dir), self.workers)
            loaded = self._loaded.get(manifest.wasm_sha256)
            if loaded is None:
                loaded = self._pool.sandbox.load(wasm, policy)
                self._loaded[manifest.wasm_sha256] = loaded
            return loaded

    async def evaluate(self, manifest: ChallengeManifest, wasm: bytes, sub: Admitted) -> Any:
        from runtime.policy import Policy

        policy = Policy.from_dict(manifest.policy.to_dict())
        loaded = await trio.to_thread.run_sync(self._load, manifest, wasm, policy)
        result = await self._pool.evaluate(
            loaded, manifest.task, sub.payload, policy=policy, seed=sub.seed, block_height=sub.height
        )
        self.metrics.inc(
            "evaluations_total", challenge=manifest.challenge_id, result=result.error_kind or "ok"
        )
        self.metrics.inc("evaluation_fuel_total", result.fuel_used, challenge=manifest.challenge_id)
        self.metrics.inc("evaluation_seconds_total", result.duration_s, challenge=manifest.challenge_id)
        return result
