"""Running admitted submissions in the sandbox, off the event loop.

wasmtime releases the GIL while guest code runs, so evaluations go to worker threads with a
concurrency cap (one per core); the trio loop keeps serving consensus meanwhile. Modules are
compiled once per hash (the sandbox also caches compiled code on disk), and every evaluation is
appended to the hash-chained audit log under the node's data dir.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import trio

from registry.manifest import ChallengeManifest
from validator_node.metrics import Metrics
from validator_node.pipeline.state import Admitted


class Evaluator:
    def __init__(self, data_dir: Path, metrics: Metrics, workers: int | None = None) -> None:
        self.data_dir = data_dir
        self.metrics = metrics
        self.limiter = trio.CapacityLimiter(workers or os.cpu_count() or 1)
        self._sandbox: Any = None
        self._loaded: dict[bytes, Any] = {}
        self._lock = threading.Lock()

    def _sandbox_instance(self) -> Any:
        if self._sandbox is None:
            from runtime.sandbox import Sandbox

            self._sandbox = Sandbox.open(self.data_dir)
        return self._sandbox

    def _run(self, manifest: ChallengeManifest, wasm: bytes, sub: Admitted) -> Any:
        from runtime.policy import Policy

        policy = Policy.from_dict(manifest.policy.to_dict())
        with self._lock:  # compile and the audit log's append are serialised; guest code is not
            sandbox = self._sandbox_instance()
            loaded = self._loaded.get(manifest.wasm_sha256)
            if loaded is None:
                loaded = sandbox.load(wasm, policy)
                self._loaded[manifest.wasm_sha256] = loaded
        return sandbox.evaluate(
            loaded, manifest.task, sub.payload, policy=policy, seed=sub.seed, block_height=sub.height
        )

    async def evaluate(self, manifest: ChallengeManifest, wasm: bytes, sub: Admitted) -> Any:
        result = await trio.to_thread.run_sync(self._run, manifest, wasm, sub, limiter=self.limiter)
        self.metrics.inc(
            "evaluations_total", challenge=manifest.challenge_id, result=result.error_kind or "ok"
        )
        self.metrics.inc("evaluation_fuel_total", result.fuel_used, challenge=manifest.challenge_id)
        self.metrics.inc("evaluation_seconds_total", result.duration_s, challenge=manifest.challenge_id)
        return result
