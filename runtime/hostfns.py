"""Host functions of the `platform` import module, each charged fuel and capped.

Design constraints found in wasmtime-py 50.0.1:

* A Python exception raised in a host function is parked in a *process-global* (`_func.LAST_EXCEPTION`)
  and re-raised by whichever thread next leaves wasm with a trap. With evaluations in several threads,
  raising would let one evaluation's error surface in another's result. So host functions here never
  raise: on a violation they record the error in the evaluation's own `HostContext` and set the
  store's fuel to zero, so the guest traps with out-of-fuel at its next instruction; the evaluator then
  reports the recorded kind. Deterministic, and thread-safe.
* `Caller` exposes no fuel API, so fuel is read and written through the caller's store context with
  the same C calls `Store.get_fuel/set_fuel` use.
* One `Linker` per engine is shared by all evaluations; the current evaluation's context is found
  through a thread-local, since a worker thread runs one evaluation at a time.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass, field
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi

from runtime import errors
from runtime.policy import HOST_FUNCTIONS, Policy
from wire.hashing import sha256

SEED_BYTES = 32


@dataclass
class HostCall:
    """One host call, as recorded in the audit log."""

    name: str
    fuel: int
    detail: str  # short, bounded description (e.g. log length and digest)


@dataclass
class HostContext:
    """Per-evaluation host state. Lives only for one evaluation."""

    policy: Policy
    seed: bytes
    block_height: int
    calls: list[HostCall] = field(default_factory=list)
    logs: list[bytes] = field(default_factory=list)
    log_bytes: int = 0
    error: tuple[str, str] | None = None


_current = threading.local()


def set_current(ctx: HostContext | None) -> None:
    _current.ctx = ctx


def _ctx() -> HostContext | None:
    return getattr(_current, "ctx", None)


def _get_fuel(caller: wasmtime.Caller) -> int:
    out = ctypes.c_uint64(0)
    err = ffi.wasmtime_context_get_fuel(caller._context(), ctypes.byref(out))
    if err:
        wasmtime.WasmtimeError._from_ptr(err)  # take ownership so it is freed
        return 0
    return int(out.value)


def _set_fuel(caller: wasmtime.Caller, fuel: int) -> None:
    err = ffi.wasmtime_context_set_fuel(caller._context(), fuel)
    if err:
        wasmtime.WasmtimeError._from_ptr(err)


def _abort(caller: wasmtime.Caller, ctx: HostContext | None, kind: str, message: str) -> None:
    """Stop the guest without raising: record why, then empty the fuel tank."""
    if ctx is not None and ctx.error is None:
        ctx.error = (kind, message)
    _set_fuel(caller, 0)


def _charge(caller: wasmtime.Caller, ctx: HostContext | None, name: str, extra_fuel: int = 0) -> bool:
    """Count the call and charge its fuel; False (guest already stopped) if a cap or the budget is hit."""
    if ctx is None:
        _abort(caller, None, errors.INTERNAL, "host call outside an evaluation")
        return False
    if ctx.error is not None:
        _set_fuel(caller, 0)
        return False
    if len(ctx.calls) >= ctx.policy.max_host_calls:
        _abort(caller, ctx, errors.HOST_LIMIT, f"more than {ctx.policy.max_host_calls} host calls")
        return False
    cost = ctx.policy.host_call_fuel + extra_fuel
    have = _get_fuel(caller)
    if have < cost:
        # the budget, not a cap, ran out; recorded so a guest that survives on zero fuel to return
        # a score (fuel is checked only at loop heads and calls) is still reported out of fuel
        _abort(caller, ctx, errors.OUT_OF_FUEL, f"platform.{name} needs {cost} fuel, {have} left")
        return False
    _set_fuel(caller, have - cost)
    ctx.calls.append(HostCall(name, cost, ""))
    return True


def _memory(caller: wasmtime.Caller) -> wasmtime.Memory | None:
    mem = caller.get("memory")
    return mem if isinstance(mem, wasmtime.Memory) else None


def host_log(caller: wasmtime.Caller, ptr: int, length: int) -> None:
    ctx = _ctx()
    try:
        ptr &= 0xFFFFFFFF  # wasmtime-py hands i32 arguments over signed
        length &= 0xFFFFFFFF
        if ctx is not None and ctx.log_bytes + length > ctx.policy.max_log_bytes:
            _abort(caller, ctx, errors.HOST_LIMIT, f"platform.log over {ctx.policy.max_log_bytes} bytes")
            return
        fuel_bytes = length * (ctx.policy.log_byte_fuel if ctx else 0)
        if not _charge(caller, ctx, "log", fuel_bytes):
            return
        assert ctx is not None
        mem = _memory(caller)
        if mem is None or ptr + length > mem.data_len(caller):
            _abort(caller, ctx, errors.HOST_LIMIT, f"platform.log({ptr}, {length}) outside memory")
            return
        data = bytes(mem.read(caller, ptr, ptr + length))
        ctx.log_bytes += length
        ctx.logs.append(data)
        ctx.calls[-1].detail = f"len={length} sha256={sha256(data).hex()[:16]}"
    except Exception as exc:  # never let an exception cross into wasmtime (see module docstring)
        _abort(caller, ctx, errors.INTERNAL, f"platform.log: {type(exc).__name__}: {exc}")


def host_seed(caller: wasmtime.Caller, ptr: int) -> None:
    ctx = _ctx()
    try:
        if not _charge(caller, ctx, "seed", SEED_BYTES * (ctx.policy.log_byte_fuel if ctx else 0)):
            return
        assert ctx is not None
        mem = _memory(caller)
        ptr &= 0xFFFFFFFF
        if mem is None or ptr + SEED_BYTES > mem.data_len(caller):
            _abort(caller, ctx, errors.HOST_LIMIT, f"platform.seed({ptr}) outside memory")
            return
        mem.write(caller, ctx.seed, ptr)
        ctx.calls[-1].detail = f"ptr={ptr}"
    except Exception as exc:
        _abort(caller, ctx, errors.INTERNAL, f"platform.seed: {type(exc).__name__}: {exc}")


def host_block_height(caller: wasmtime.Caller) -> int:
    ctx = _ctx()
    try:
        if not _charge(caller, ctx, "block_height"):
            return 0
        assert ctx is not None
        ctx.calls[-1].detail = f"height={ctx.block_height}"
        return ctx.block_height
    except Exception as exc:
        _abort(caller, ctx, errors.INTERNAL, f"platform.block_height: {type(exc).__name__}: {exc}")
        return 0


_IMPLS: dict[str, Any] = {"log": host_log, "seed": host_seed, "block_height": host_block_height}


def _valtype(name: str) -> wasmtime.ValType:
    return {"i32": wasmtime.ValType.i32(), "i64": wasmtime.ValType.i64()}[name]


def func_type(name: str) -> wasmtime.FuncType:
    params, results = HOST_FUNCTIONS[name]
    return wasmtime.FuncType([_valtype(p) for p in params], [_valtype(r) for r in results])


def build_linker(engine: wasmtime.Engine) -> wasmtime.Linker:
    """A linker defining every `platform` function; which ones a module may use is the policy's call."""
    linker = wasmtime.Linker(engine)
    for name in HOST_FUNCTIONS:
        linker.define_func("platform", name, func_type(name), _IMPLS[name], access_caller=True)
    return linker
