"""Running admitted submissions in the sandbox, off the event loop.

wasmtime releases the GIL while guest code runs, so evaluations go to worker threads with a
concurrency cap (one per core); the trio loop keeps serving consensus meanwhile. Modules are
compiled once per hash (the sandbox also caches compiled code on disk), and every evaluation and
`aggregate` run is appended to the hash-chained audit log under the node's data dir, whose head
the node's hotkey signs (`audit/audit.head.json`, `Evaluator.refresh_audit_head`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
from pathlib import Path
from typing import Any

import trio

from registry.manifest import ChallengeManifest
from registry.state import ModuleCheckFailed
from validator_node.metrics import Metrics
from validator_node.pipeline.evidence import AggregateOutputInvalid, scores_from_output
from validator_node.pipeline.state import Admitted, LocalFailure
from wire.codec import encode

log = logging.getLogger("validator_node.evaluation")


class Evaluator:
    """Compiles each challenge module once, then evaluates through the runtime's worker pool.

    Given the node's hotkey and netuid, it signs the audit log's head (`refresh_audit_head`): on
    request (the node asks at each epoch start) and when it closes."""

    def __init__(
        self,
        data_dir: Path,
        metrics: Metrics,
        workers: int | None = None,
        *,
        hotkey: Any = None,
        netuid: int | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.metrics = metrics
        self.workers = workers
        self._signer = (hotkey, netuid) if hotkey is not None and netuid is not None else None
        self._pool: Any = None
        self._loaded: dict[bytes, Any] = {}
        self._lock = threading.Lock()
        self._head_lock = threading.Lock()

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

    def close(self) -> None:
        """Sign the audit log's final head, then close the log (the sandbox's only open file)."""
        self.refresh_audit_head()
        with self._lock:
            if self._pool is not None and self._pool.sandbox.audit is not None:
                self._pool.sandbox.audit.close()

    def refresh_audit_head(self) -> None:
        """Sign what the audit log holds with the node's hotkey into `audit/audit.head.json`, so a
        published log is attributable (`validator-node audit verify` checks it). Blocking but cheap:
        one signature and one small file, no read of the log (run it in a worker thread). A failure
        costs that file only, never the node. Nothing to sign before the sandbox has opened."""
        pool = self._pool  # not under self._lock: that one is held while a module compiles
        if self._signer is None or pool is None or pool.sandbox.audit is None:
            return
        from runtime import audit_head

        audit = pool.sandbox.audit
        with self._head_lock:
            try:
                statement = audit_head.sign_open_log(audit, *self._signer)
                audit_head.write(statement, audit_head.head_path(audit.path))
            except OSError as exc:
                self.metrics.inc("store_write_failed_total", what="audit_head")
                log.warning("cannot write the signed audit head in %s: %s", audit.path.parent, exc)

    def call_export(
        self, manifest: ChallengeManifest, wasm: bytes, export: str, data: bytes, policy: Any
    ) -> Any:
        """Run one packed export (e.g. `aggregate`) of the module, in the calling thread:
        `(output or None, result)` as `Sandbox.call_packed` gives them; an `aggregate` run is
        audit-logged with the challenge id and its agreed policy's hash."""
        loaded = self._load(manifest, wasm, policy)
        return self._pool.sandbox.call_packed(
            loaded,
            export,
            data,
            policy=policy,
            challenge=manifest.challenge_id,
            policy_hash=hashlib.sha256(encode(manifest.policy)).digest(),
        )

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
        self.metrics.observe(
            "evaluation_duration_seconds", result.duration_s, challenge=manifest.challenge_id
        )
        self.metrics.observe("evaluation_fuel", result.fuel_used, challenge=manifest.challenge_id)
        return result


class SandboxAggregator:
    """The rules' `Aggregator` (pipeline.evidence): runs `aggregate` in the sandbox, once per
    (module, bundle).

    The rules call it while validating, proposing and applying the epoch's weights block, so the
    result is memoised; the node warms the memo in a worker thread as soon as a bundle is agreed,
    so the weights block itself never waits for a module. A local wall-clock timeout (after one
    retry with 4x the time) or a host fault (e.g. a full disk under the audit log) is not a
    verdict others share: it raises `LocalFailure` and is not memoised, so this node neither
    proposes nor prepares weights it could not compute, applies decided ones anyway, and the
    next call runs the module again."""

    def __init__(self, evaluator: Evaluator, validate_module: Any, metrics: Metrics) -> None:
        self.evaluator = evaluator
        self.validate_module = validate_module
        self.metrics = metrics
        self._memo: dict[tuple[bytes, bytes, bytes], bytes | None] = {}
        self._lock = threading.Lock()

    def epoch_scored(self, manifest: ChallengeManifest, wasm: bytes) -> bool:
        try:
            info = self.validate_module(wasm, manifest.policy)
        except ModuleCheckFailed:  # a module that fails validation was never registered
            return False  # (LocalFailure propagates: this node cannot tell right now)
        return bool(getattr(info, "has_aggregate", False))

    def aggregate(self, manifest: ChallengeManifest, wasm: bytes, bundle: bytes) -> bytes | None:
        from runtime import errors
        from runtime.policy import Policy

        # the policy is part of the key: an update that keeps the module but lowers its fuel must
        # be run again, as a node that never saw the old policy would
        key = (
            manifest.wasm_sha256,
            hashlib.sha256(encode(manifest.policy)).digest(),
            hashlib.sha256(bundle).digest(),
        )
        with self._lock:  # one run per key, even when the warm-up and the rules ask at once
            if key in self._memo:
                return self._memo[key]
            policy = Policy.from_dict(manifest.policy.to_dict())
            out, res = self._call(manifest, wasm, bundle, policy)
            if res.error_kind == errors.TIMEOUT:
                # Fuel is the agreed bound; the wall clock is a local guard, and a busy machine
                # must not make this node score differently. One more try with 4x the time.
                log.warning(
                    "%s's aggregate hit the local %d ms wall clock after %d fuel; retrying with 4x",
                    manifest.challenge_id,
                    policy.wall_clock_ms,
                    res.fuel_used,
                )
                policy = dataclasses.replace(policy, wall_clock_ms=4 * policy.wall_clock_ms)
                out, res = self._call(manifest, wasm, bundle, policy)
            kind = res.error_kind or "ok"
            self.metrics.inc("aggregations_total", challenge=manifest.challenge_id, result=kind)
            self.metrics.inc("aggregation_fuel_total", res.fuel_used, challenge=manifest.challenge_id)
            log.info(
                "aggregated %s over a %d-byte bundle %s: %s, %d fuel, %.1f ms",
                manifest.challenge_id,
                len(bundle),
                key[2].hex()[:12],
                kind if res.error_kind else f"{len(out or b'')} bytes out",
                res.fuel_used,
                res.duration_s * 1000,
            )
            if res.error_kind in (errors.TIMEOUT, errors.INTERNAL):
                raise LocalFailure(f"{manifest.challenge_id}'s aggregate: {res.error_kind} on this host")
            if out is not None:
                try:
                    scores_from_output(out, 1 << 16)
                except AggregateOutputInvalid as exc:  # the rules score it as nothing; say why
                    self.metrics.inc(
                        "aggregations_total", challenge=manifest.challenge_id, result="bad_convention"
                    )
                    log.warning(
                        "%s's aggregate output breaks ABI 3.1 (scores nothing): %s",
                        manifest.challenge_id,
                        exc,
                    )
            self._memo[key] = out
            if len(self._memo) > 64:
                self._memo.pop(next(iter(self._memo)))
            return out

    def _call(self, manifest: ChallengeManifest, wasm: bytes, bundle: bytes, policy: Any) -> Any:
        try:
            return self.evaluator.call_export(manifest, wasm, "aggregate", bundle, policy)
        except Exception as exc:  # the host failed (disk, memory), not the module
            self.metrics.inc("aggregations_total", challenge=manifest.challenge_id, result="host_error")
            raise LocalFailure(f"{manifest.challenge_id}'s aggregate: {type(exc).__name__}: {exc}") from None
