"""Call integer-only guest exports without wasmtime-py's per-call type introspection.

`Func.__call__` asks wasmtime for the function's type and converts every argument through `Val` on
each call, which costs ~40 us for a 4-argument call and dominates the overhead of a trivial
evaluation. Validation has already checked every ABI export's signature, so the evaluator passes
the value kinds it knows and fills the C value array directly. Same C entry point
(`wasmtime_func_call`) and the same trap handling (`enter_wasm`) as `Func.__call__`.
"""

from __future__ import annotations

import ctypes
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi
from wasmtime._extern import wrap_extern

I32 = ffi.WASMTIME_I32.value
I64 = ffi.WASMTIME_I64.value


def call_ints(
    store: wasmtime.Store,
    func: wasmtime.Func,
    params: tuple[int, ...],
    kinds: tuple[int, ...],
    result: int | None,
) -> int | None:
    """Call `func` with integer `params` of value `kinds`; return its single integer result (or None)."""
    n = len(params)
    args = (ffi.wasmtime_val_t * max(n, 1))()
    for i in range(n):
        a = args[i]
        a.kind = kinds[i]
        if kinds[i] == I32:
            a.of.i32 = params[i]
        else:
            a.of.i64 = params[i]
    nres = 0 if result is None else 1
    res = (ffi.wasmtime_val_t * 1)()
    # inlined `enter_wasm` minus its LAST_EXCEPTION check: our host functions never raise (hostfns)
    trap = ctypes.POINTER(ffi.wasm_trap_t)()
    error = ffi.wasmtime_func_call(
        store._context(), ctypes.byref(func._func), args, n, res, nres, ctypes.byref(trap)
    )
    if trap:
        raise wasmtime.Trap._from_ptr(trap)
    if error:
        raise wasmtime.WasmtimeError._from_ptr(error)
    if result is None:
        return None
    if result == I32:
        v = int(res[0].of.i32) & 0xFFFFFFFF  # the union read can carry stale upper bytes: keep 32 bits
        return v - (1 << 32) if v >= 1 << 31 else v
    return int(res[0].of.i64)


#: the exports the runtime ever looks up (ABI v1)
ABI_EXPORT_NAMES = ("memory", "alloc", "evaluate", "abi_version", "_initialize", "describe", "aggregate")


def export_indices(module: wasmtime.Module, names: tuple[str, ...] = ABI_EXPORT_NAMES) -> dict[str, int]:
    """Positions of the wanted exports in the module's export list (an instance lists them in that
    order). Fetch only what a call path uses: each lookup costs ~5 us through ctypes."""
    return {e.name: i for i, e in enumerate(module.exports) if e.name in names}


def get_exports(
    store: wasmtime.Store, instance: wasmtime.Instance, indices: dict[str, int]
) -> dict[str, Any]:
    """Only the ABI exports, fetched by index: `Instance.exports()` wraps every export (~40 us) and
    modules built by zig/clang export extra globals."""
    out: dict[str, Any] = {}
    name_ptr = ctypes.POINTER(ctypes.c_char)()
    name_len = ctypes.c_size_t(0)
    ctx = store._context()
    inst = ctypes.byref(instance._instance)
    for name, idx in indices.items():
        item = ffi.wasmtime_extern_t()
        if ffi.wasmtime_instance_export_nth(
            ctx, inst, idx, ctypes.byref(name_ptr), ctypes.byref(name_len), ctypes.byref(item)
        ):
            # direct constructors: `wrap_extern` re-imports wasmtime on every call
            if item.kind == _EXTERN_FUNC:
                out[name] = wasmtime.Func._from_raw(item.of.func)
            elif item.kind == _EXTERN_MEMORY:
                out[name] = wasmtime.Memory._from_raw(item.of.memory)
            else:
                out[name] = wrap_extern(item)
    return out


_EXTERN_FUNC = ffi.WASMTIME_EXTERN_FUNC.value
_EXTERN_MEMORY = ffi.WASMTIME_EXTERN_MEMORY.value


def write_memory(store: wasmtime.Store, mem: wasmtime.Memory, data: bytes, ptr: int) -> None:
    """Copy `data` to guest memory at `ptr`; the caller has bounds-checked [ptr, ptr + len(data)).

    `Memory.write` copies bytes into a temporary bytearray and re-checks bounds; one memmove is enough.
    """
    base = ffi.wasmtime_memory_data(store._context(), ctypes.byref(mem._memory))
    ctypes.memmove(ctypes.addressof(base.contents) + ptr, data, len(data))
