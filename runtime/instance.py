"""Run guest code in a fresh Store + Instance under a policy, and classify every way it can fail.

Every evaluation (and every validation probe) gets its own Store: nothing a module does — memory it
grew, globals it set, a trap half-way through — can leak into the next evaluation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import wasmtime

from runtime import errors
from runtime.engine import SandboxEngine
from runtime.fastcall import I32, call_ints, get_exports, write_memory
from runtime.hostfns import HostContext, set_current
from runtime.policy import Policy

T = TypeVar("T")
Exports = dict[str, Any]  # ABI export name -> wasmtime extern (see fastcall.get_exports)

#: a trap while linear memory holds more than this share of the cap is reported as memory_limit:
#: allocators trap when memory.grow is refused, and the cap is what refused it. Memory sizes are
#: deterministic, so every validator classifies the same way.
MEMORY_LIMIT_SHARE = (3, 4)

# store limits on the number of tables and memories (wasm32 modules built by clang/zig/AS use <= 1 each)
MAX_TABLES = 4
MAX_MEMORIES = 1


class GuestError(Exception):
    """Raised by a run body for an outcome it detected itself (bad pointer, bad length, ...)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass
class RunOutcome:
    value: Any
    error: tuple[str, str] | None
    fuel_used: int
    memory_peak: int
    duration_s: float


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


#: frames named in a trap's message (innermost first); a deeper stack ends in "..."
TRAP_FRAMES = 6


def describe_trap(exc: wasmtime.Trap) -> str:
    """The trap's reason and where it happened, on one line.

    wasmtime's text starts `error while executing at wasm backtrace:` and puts the reason last,
    after the frames, so its first line says nothing: an author needs "unreachable executed in
    `parse`", not the header. Only the error kind goes into attestations, so this text is free
    to change between versions."""
    text = str(exc).strip()
    caused = text.rsplit("Caused by:", 1)[1].strip() if "Caused by:" in text else ""
    reason = caused.splitlines()[-1].strip() if caused else text.splitlines()[0] if text else "trap"
    reason = reason.removeprefix("wasm trap: ")
    try:
        frames = list(exc.frames or ())
    except Exception:  # frames are a diagnostic only: never let reading them fail the evaluation
        frames = []
    where = []
    for f in frames[:TRAP_FRAMES]:
        name = f.func_name or f"func {f.func_index}"
        where.append(f"{name} @0x{f.module_offset:x}")
    if len(frames) > TRAP_FRAMES:
        where.append("...")
    msg = reason + (f" (in {' <- '.join(where)})" if where else "")
    return msg[:300]


def classify_trap(exc: wasmtime.Trap, memory_peak: int, policy: Policy) -> tuple[str, str]:
    code = exc.trap_code
    msg = describe_trap(exc)
    if code == wasmtime.TrapCode.OUT_OF_FUEL:
        return errors.OUT_OF_FUEL, f"fuel budget of {policy.fuel} exhausted"
    if code == wasmtime.TrapCode.INTERRUPT:
        return errors.TIMEOUT, f"wall-clock guard of {policy.wall_clock_ms} ms hit"
    if code == wasmtime.TrapCode.STACK_OVERFLOW:
        return errors.STACK_OVERFLOW, msg
    num, den = MEMORY_LIMIT_SHARE
    if memory_peak * den > policy.memory_bytes * num:
        return errors.MEMORY_LIMIT, f"trapped at {memory_peak} of {policy.memory_bytes} memory bytes ({msg})"
    return errors.TRAP, msg


def classify_wasmtime_error(exc: wasmtime.WasmtimeError) -> tuple[str, str]:
    msg = _first_line(exc)
    low = str(exc).lower()
    if "memory" in low and ("limit" in low or "exceeds" in low):
        return errors.MEMORY_LIMIT, msg
    if "table" in low or "instance" in low or "limit" in low:
        return errors.RESOURCE_LIMIT, msg
    if "unknown import" in low:
        return errors.FORBIDDEN_IMPORT, msg
    return errors.TRAP, msg


def new_store(se: SandboxEngine, policy: Policy) -> wasmtime.Store:
    store = wasmtime.Store(se.engine)
    store.set_limits(
        memory_size=policy.memory_bytes,
        table_elements=policy.table_elements,
        instances=1,
        tables=MAX_TABLES,
        memories=MAX_MEMORIES,
    )
    store.set_fuel(policy.fuel)
    se.ticker.ensure_started()
    store.set_epoch_deadline(se.ticker.deadline_ticks(policy.wall_clock_ms))
    return store


def run_guest(
    se: SandboxEngine,
    pre: wasmtime.InstancePre,
    indices: dict[str, int],
    policy: Policy,
    ctx: HostContext,
    body: Callable[[wasmtime.Store, Exports, wasmtime.Memory | None], T],
) -> RunOutcome:
    """Instantiate (start function included), call `_initialize` if exported, then run `body`."""
    t0 = time.perf_counter()
    store = new_store(se, policy)
    mem: wasmtime.Memory | None = None
    value: Any = None
    error: tuple[str, str] | None = None
    set_current(ctx)
    try:
        instance = pre.instantiate(store)
        exports = get_exports(store, instance, indices)
        m = exports.get("memory")
        mem = m if isinstance(m, wasmtime.Memory) else None
        init = exports.get("_initialize")
        if isinstance(init, wasmtime.Func):
            call_ints(store, init, (), (), None)
        value = body(store, exports, mem)
    except GuestError as exc:
        error = (exc.kind, exc.message)
    except wasmtime.Trap as exc:
        error = classify_trap(exc, mem.data_len(store) if mem is not None else 0, policy)
    except wasmtime.WasmtimeError as exc:
        error = classify_wasmtime_error(exc)
    except Exception as exc:  # a host-side bug: say so, never blame the module silently
        error = (errors.INTERNAL, f"{type(exc).__name__}: {_first_line(exc)}")
    finally:
        set_current(None)
    if ctx.error is not None:  # a host function stopped the guest; its reason wins (see hostfns)
        error = ctx.error
    try:
        fuel_left = store.get_fuel()
    except wasmtime.WasmtimeError:
        fuel_left = 0
    peak = mem.data_len(store) if mem is not None else 0
    duration = time.perf_counter() - t0
    if error is not None:
        value = None
    return RunOutcome(value, error, policy.fuel - fuel_left, peak, duration)


def put_bytes(store: wasmtime.Store, exports: Exports, mem: wasmtime.Memory | None, data: bytes) -> int:
    """ABI: `alloc(len)` returns a pointer the host writes `data` to. Checks the pointer is in bounds."""
    if mem is None:
        raise GuestError(errors.BAD_OUTPUT, "module exports no memory")
    alloc = exports["alloc"]
    assert isinstance(alloc, wasmtime.Func)
    ptr = (call_ints(store, alloc, (len(data),), (I32,), I32) or 0) & 0xFFFFFFFF
    if ptr == 0 and data:
        raise GuestError(errors.MEMORY_LIMIT, f"alloc({len(data)}) returned null")
    if ptr + len(data) > mem.data_len(store):
        raise GuestError(
            errors.BAD_OUTPUT,
            f"alloc({len(data)}) returned {ptr}, outside memory of {mem.data_len(store)} bytes",
        )
    if data:
        write_memory(store, mem, data, ptr)
    return ptr


def read_packed(store: wasmtime.Store, mem: wasmtime.Memory | None, packed: int, cap: int) -> bytes:
    """ABI: an i64 `ptr << 32 | len` result. wasmtime-py returns i64 signed, hence the mask."""
    if mem is None:
        raise GuestError(errors.BAD_OUTPUT, "module exports no memory")
    packed &= 0xFFFFFFFFFFFFFFFF
    ptr, length = packed >> 32, packed & 0xFFFFFFFF
    if length > cap:
        raise GuestError(errors.BAD_OUTPUT, f"output of {length} bytes over the cap of {cap}")
    size = mem.data_len(store)
    if ptr + length > size:
        raise GuestError(errors.BAD_OUTPUT, f"output [{ptr}, {ptr + length}) outside memory of {size} bytes")
    return bytes(mem.read(store, ptr, ptr + length))
