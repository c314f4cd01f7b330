"""The evaluator: load (validate + compile, cached) a challenge module, then evaluate submissions.

`Sandbox.evaluate` is blocking and thread-safe: it is meant to run in worker threads (wasmtime
releases the GIL while guest code runs); see `runtime.pool` for the trio-facing pool.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import wasmtime

from runtime import errors
from runtime.audit import AuditLog
from runtime.cache import ModuleCache
from runtime.engine import SandboxEngine, default_engine
from runtime.fastcall import I32, I64, call_ints, export_indices
from runtime.hostfns import SEED_BYTES, HostContext
from runtime.instance import Exports, GuestError, RunOutcome, put_bytes, read_packed, run_guest
from runtime.policy import Policy
from runtime.validation import ModuleInfo, validate_and_compile
from wire.hashing import sha256

#: fixed-point 1.0: scores are integers in [0, SCORE_ONE]
SCORE_ONE = 1_000_000_000
_EVAL_KINDS = (I32, I32, I32, I32)
_EVAL_EXPORTS = ("memory", "alloc", "evaluate", "_initialize")


@dataclass(frozen=True)
class EvalResult:
    """One evaluation's verdict. `score` is set iff `ok`; `error_kind` is set iff not `ok`."""

    ok: bool
    score: int | None
    fuel_used: int
    memory_peak: int
    duration_s: float
    error_kind: str | None = None
    error_message: str | None = None
    host_calls: int = 0
    logs: tuple[bytes, ...] = ()

    @property
    def duration_ms(self) -> float:
        return self.duration_s * 1000

    def to_json(self) -> dict[str, Any]:
        """The `challenge test --json` object (stable contract)."""
        return {
            "ok": self.ok,
            "score": self.score,
            "fuel_used": self.fuel_used,
            "memory_peak": self.memory_peak,
            "duration_ms": round(self.duration_ms, 3),
            "error": None if self.ok else {"kind": self.error_kind, "message": self.error_message},
        }


@dataclass
class LoadedModule:
    """A validated, compiled module, ready to instantiate many times."""

    wasm_hash: bytes
    info: ModuleInfo
    module: wasmtime.Module
    pre: wasmtime.InstancePre
    indices: dict[str, int]  # exports the evaluation path uses
    policy: Policy
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class Sandbox:
    """Owns the engine, the compiled-module cache and (optionally) the audit log."""

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        engine: SandboxEngine | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.se = engine or default_engine()
        cache_dir = Path(data_dir) / "module-cache" if data_dir is not None else None
        self.cache = ModuleCache(self.se, cache_dir)
        self.audit = audit

    @classmethod
    def open(cls, data_dir: str | Path, *, fsync: bool = False) -> Sandbox:
        """The node's sandbox: compiled-module cache and audit log under `data_dir`."""
        from runtime.audit import AuditLog, default_path

        return cls(data_dir, audit=AuditLog(default_path(data_dir), fsync=fsync))

    def load(self, wasm: bytes, policy: Policy | None = None) -> LoadedModule:
        """Validate and compile (raises ModuleRejected with the reason)."""
        policy = policy or Policy()
        info, module = validate_and_compile(wasm, policy, engine=self.se, cache=self.cache)
        pre = self.se.linker.instantiate_pre(module)
        indices = export_indices(module, _EVAL_EXPORTS)
        return LoadedModule(bytes.fromhex(info.sha256), info, module, pre, indices, policy)

    def evaluate(
        self,
        loaded: LoadedModule,
        task: bytes,
        submission: bytes,
        *,
        policy: Policy | None = None,
        seed: bytes = bytes(SEED_BYTES),
        block_height: int = 0,
    ) -> EvalResult:
        """Run `evaluate(task, submission)` in a fresh instance under the policy.

        Never raises for anything the module does: every fault becomes an error kind in the result.
        """
        policy = policy or loaded.policy
        if len(seed) != SEED_BYTES:
            raise ValueError(f"seed must be {SEED_BYTES} bytes")
        ctx = HostContext(policy, bytes(seed), block_height)
        result = self._evaluate(loaded, task, submission, policy, ctx)
        if self.audit is not None:
            self._audit(loaded, policy, task, submission, seed, block_height, result, ctx)
        return result

    def _evaluate(
        self, loaded: LoadedModule, task: bytes, submission: bytes, policy: Policy, ctx: HostContext
    ) -> EvalResult:
        if len(task) > policy.max_task_bytes:
            return _refused(errors.INPUT_TOO_LARGE, f"task is {len(task)} bytes, cap {policy.max_task_bytes}")
        if len(submission) > policy.max_submission_bytes:
            return _refused(
                errors.INPUT_TOO_LARGE,
                f"submission is {len(submission)} bytes, cap {policy.max_submission_bytes}",
            )
        extra = sorted(set(loaded.info.host_functions) - set(policy.host_functions))
        if extra:
            return _refused(
                errors.FORBIDDEN_IMPORT, f"policy does not allow platform.{', platform.'.join(extra)}"
            )

        def body(store: wasmtime.Store, exports: Exports, mem: wasmtime.Memory | None) -> int:
            # one alloc for both inputs (task then submission): each host->guest call costs ~12 us
            tp = put_bytes(store, exports, mem, task + submission)
            sp = tp + len(task)
            fn = exports["evaluate"]
            assert isinstance(fn, wasmtime.Func)
            raw = int(call_ints(store, fn, (tp, len(task), sp, len(submission)), _EVAL_KINDS, I64) or 0)
            if raw < 0:
                raise GuestError(errors.MODULE_ERROR, f"evaluate returned error code {raw}")
            if raw > SCORE_ONE:
                raise GuestError(errors.BAD_OUTPUT, f"score {raw} above {SCORE_ONE} (1.0)")
            return raw

        out = run_guest(self.se, loaded.pre, loaded.indices, policy, ctx, body)
        return _result(out, ctx)

    def call_packed(
        self,
        loaded: LoadedModule,
        export: str,
        data: bytes | None = None,
        *,
        policy: Policy | None = None,
        challenge: str | None = None,
        policy_hash: bytes | None = None,
    ) -> tuple[bytes | None, EvalResult]:
        """Call `describe()` (data=None) or `aggregate(ptr, len)`: an export returning packed ptr<<32|len.

        With an audit log, every `aggregate` run appends an `aggregate` record (and its host calls),
        as `evaluate` does; `challenge` and `policy_hash` (sha256 of the challenge's agreed policy)
        only label that record. `describe` (metadata, no input) is not logged.
        """
        policy = policy or loaded.policy
        ctx = HostContext(policy, bytes(SEED_BYTES), 0)
        if export not in ("describe", "aggregate"):
            raise ValueError(f"{export} is not a packed-output export")
        out, result = self._call_packed(loaded, export, data, policy, ctx)
        if self.audit is not None and export == "aggregate":
            self._audit_aggregate(loaded, policy, data, out, result, ctx, challenge, policy_hash)
        return out, result

    def _call_packed(
        self, loaded: LoadedModule, export: str, data: bytes | None, policy: Policy, ctx: HostContext
    ) -> tuple[bytes | None, EvalResult]:
        if not getattr(loaded.info, f"has_{export}"):
            return None, _refused(errors.MISSING_EXPORT, f"module does not export {export}")
        if data is not None and len(data) > policy.max_task_bytes:
            # aggregate's input is a task-like document (an evidence bundle): same cap as a task
            return None, _refused(
                errors.INPUT_TOO_LARGE, f"input is {len(data)} bytes, cap {policy.max_task_bytes}"
            )

        def body(store: wasmtime.Store, exports: Exports, mem: wasmtime.Memory | None) -> bytes:
            fn = exports[export]
            assert isinstance(fn, wasmtime.Func)
            if data is None:
                packed = int(call_ints(store, fn, (), (), I64) or 0)
            else:
                ptr = put_bytes(store, exports, mem, data)
                packed = int(call_ints(store, fn, (ptr, len(data)), (I32, I32), I64) or 0)
                if -(1 << 31) <= packed < 0:
                    # a small negative result is an error code, as for evaluate (docs/challenge-abi.md,
                    # "aggregate"). No valid packed output is in this range: it would mean ptr 0xFFFFFFFF
                    # with a length of 2 GiB or more, which lies outside any wasm32 memory.
                    raise GuestError(errors.MODULE_ERROR, f"aggregate returned error code {packed}")
            return read_packed(store, mem, packed, policy.max_output_bytes)

        out = run_guest(
            self.se, loaded.pre, export_indices(loaded.module, (*_EVAL_EXPORTS, export)), policy, ctx, body
        )
        res = _result(out, ctx, score=False)
        return (out.value if res.ok else None), res

    def _audit(
        self,
        loaded: LoadedModule,
        policy: Policy,
        task: bytes,
        submission: bytes,
        seed: bytes,
        block_height: int,
        r: EvalResult,
        ctx: HostContext,
    ) -> None:
        self._append_run(
            "evaluation",
            {
                "task": sha256(task).hex(),
                "submission": sha256(submission).hex(),
                "score": r.score,
            },
            loaded,
            policy,
            bytes(seed),
            block_height,
            r,
            ctx,
        )

    def _audit_aggregate(
        self,
        loaded: LoadedModule,
        policy: Policy,
        bundle: bytes | None,
        output: bytes | None,
        r: EvalResult,
        ctx: HostContext,
        challenge: str | None,
        policy_hash: bytes | None,
    ) -> None:
        self._append_run(
            "aggregate",
            {
                "challenge": challenge,
                "policy": policy_hash.hex() if policy_hash is not None else None,
                "bundle": sha256(bundle).hex() if bundle is not None else None,
                "bundle_size": len(bundle) if bundle is not None else None,
                "output": sha256(output).hex() if output is not None else None,
                "output_size": len(output) if output is not None else None,
            },
            loaded,
            policy,
            ctx.seed,
            ctx.block_height,
            r,
            ctx,
        )

    def _append_run(
        self,
        kind: str,
        specific: dict[str, Any],
        loaded: LoadedModule,
        policy: Policy,
        seed: bytes,
        block_height: int,
        r: EvalResult,
        ctx: HostContext,
    ) -> None:
        """One record of a module run (its kind's own fields + what every run has), then one
        `host_call` record per host call, each naming the run's seq."""
        assert self.audit is not None
        seq = self.audit.append(
            kind,
            {
                "module": loaded.wasm_hash.hex(),
                "engine": self.se.fingerprint,
                **specific,
                "seed": seed.hex(),
                "block_height": block_height,
                "fuel_budget": policy.fuel,
                "ok": r.ok,
                "error_kind": r.error_kind,
                "error_message": r.error_message,
                "fuel_used": r.fuel_used,
                "memory_peak": r.memory_peak,
                "duration_us": int(r.duration_s * 1e6),
                "host_calls": len(ctx.calls),
            },
        )
        for i, call in enumerate(ctx.calls):
            self.audit.append(
                "host_call",
                {"evaluation": seq, "index": i, "name": call.name, "fuel": call.fuel, "detail": call.detail},
            )


def _refused(kind: str, message: str) -> EvalResult:
    return EvalResult(False, None, 0, 0, 0.0, kind, message)


def _result(out: RunOutcome, ctx: HostContext, score: bool = True) -> EvalResult:
    if out.error is not None:
        kind, msg = out.error
        return EvalResult(
            False,
            None,
            out.fuel_used,
            out.memory_peak,
            out.duration_s,
            kind,
            msg,
            len(ctx.calls),
            tuple(ctx.logs),
        )
    return EvalResult(
        True,
        int(out.value) if score else None,
        out.fuel_used,
        out.memory_peak,
        out.duration_s,
        None,
        None,
        len(ctx.calls),
        tuple(ctx.logs),
    )
