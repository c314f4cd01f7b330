"""Module validation at registration: everything that can be refused before a module ever runs.

Order matters for cost: size cap, then a linear pre-scan (shape caps), then wasmtime compilation
(full wasm validation, disabled features), then the ABI (imports, exports, signatures, limits), and
last, only if the module exports `abi_version`, one sandboxed call to it. Each refusal raises
`ModuleRejected(kind, message)` naming the reason.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import wasmtime

from runtime import errors
from runtime.engine import SandboxEngine, default_engine
from runtime.errors import ModuleRejected
from runtime.fastcall import I32 as KIND_I32
from runtime.fastcall import call_ints, export_indices
from runtime.hostfns import HostContext
from runtime.instance import Exports, run_guest
from runtime.policy import HOST_FUNCTIONS, WASM_PAGE, Policy
from runtime.wasmscan import ScanError, scan
from wire.hashing import sha256

__all__ = ["ABI_VERSION", "ModuleInfo", "ModuleRejected", "validate_module"]

ABI_VERSION = 1

I32, I64 = "i32", "i64"
#: ABI v1 exports: name -> (params, results, required)
ABI_EXPORTS: dict[str, tuple[tuple[str, ...], tuple[str, ...], bool]] = {
    "alloc": ((I32,), (I32,), True),
    "evaluate": ((I32, I32, I32, I32), (I64,), True),
    "abi_version": ((), (I32,), False),
    "_initialize": ((), (), False),
    "describe": ((), (I64,), False),
    "aggregate": ((I32, I32), (I64,), False),
}


@dataclass(frozen=True)
class ModuleInfo:
    """What registration learned about a module; `sha256` is its identity everywhere."""

    sha256: str
    size: int
    abi_version: int  # 1 when the module does not export abi_version (v1 is the default)
    imports: tuple[str, ...]  # "platform.log", ...
    exports: tuple[str, ...]  # "evaluate: (i32, i32, i32, i32) -> (i64)", ...
    host_functions: tuple[str, ...]  # the platform functions it imports
    functions: int
    memory_min_bytes: int
    memory_max_bytes: int | None
    has_initialize: bool
    has_describe: bool
    has_aggregate: bool
    compile_ms: float


def _sig(ft: wasmtime.FuncType) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(str(p) for p in ft.params), tuple(str(r) for r in ft.results)


def _fmt(sig: tuple[tuple[str, ...], tuple[str, ...]]) -> str:
    return f"({', '.join(sig[0])}) -> ({', '.join(sig[1])})"


def validate_module(
    wasm_bytes: bytes,
    policy: Policy | Mapping[str, Any] | None = None,
    *,
    engine: SandboxEngine | None = None,
    cache: object | None = None,
) -> ModuleInfo:
    """Check `wasm_bytes` against ABI v1 and `policy`: raise ModuleRejected naming why, or describe it."""
    return validate_and_compile(wasm_bytes, policy, engine=engine, cache=cache)[0]


def validate_and_compile(
    wasm_bytes: bytes,
    policy: Policy | Mapping[str, Any] | None = None,
    *,
    engine: SandboxEngine | None = None,
    cache: object | None = None,
) -> tuple[ModuleInfo, wasmtime.Module]:
    """`validate_module`, also returning the compiled module (so the evaluator does not compile twice)."""
    if isinstance(policy, Mapping):  # a manifest's policy table, as parsed
        policy = Policy.from_dict(policy)
    policy = policy or Policy()
    se = engine or default_engine()
    if not isinstance(wasm_bytes, bytes | bytearray | memoryview):
        raise ModuleRejected(errors.INVALID_MODULE, f"expected bytes, got {type(wasm_bytes).__name__}")
    wasm = bytes(wasm_bytes)
    if len(wasm) > policy.max_module_bytes:
        raise ModuleRejected(
            errors.TOO_LARGE, f"module is {len(wasm)} bytes, cap is {policy.max_module_bytes}"
        )
    try:
        shape = scan(wasm)
    except ScanError as exc:
        raise ModuleRejected(errors.INVALID_MODULE, str(exc)) from None
    nfuncs = shape.imported_functions + shape.defined_functions
    if nfuncs > policy.max_functions:
        raise ModuleRejected(errors.TOO_COMPLEX, f"{nfuncs} functions, cap is {policy.max_functions}")
    if shape.max_body_bytes > policy.max_function_body_bytes:
        raise ModuleRejected(
            errors.TOO_COMPLEX,
            f"a function body is {shape.max_body_bytes} bytes, cap is {policy.max_function_body_bytes}",
        )
    if shape.max_locals > policy.max_locals:
        raise ModuleRejected(
            errors.TOO_COMPLEX, f"a function declares {shape.max_locals} locals, cap is {policy.max_locals}"
        )
    digest = sha256(wasm)
    t0 = time.perf_counter()
    try:
        module = cache.get(wasm, digest) if cache is not None else wasmtime.Module(se.engine, wasm)  # type: ignore[attr-defined]
    except wasmtime.WasmtimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])[:400]
        raise ModuleRejected(errors.INVALID_MODULE, f"wasmtime refused the module: {detail}") from None
    compile_ms = (time.perf_counter() - t0) * 1000

    imports: list[str] = []
    host_fns: list[str] = []
    for imp in module.imports:
        where = f"{imp.module}.{imp.name}"
        imports.append(where)
        ty = imp.type
        if imp.module != "platform":
            raise ModuleRejected(
                errors.FORBIDDEN_IMPORT, f"import {where}: only the 'platform' module is allowed"
            )
        if imp.name not in policy.host_functions:
            raise ModuleRejected(
                errors.FORBIDDEN_IMPORT,
                f"import {where} is not allowed by the policy ({_allowed(policy.host_functions)})",
            )
        if not isinstance(ty, wasmtime.FuncType):
            raise ModuleRejected(errors.FORBIDDEN_IMPORT, f"import {where} must be a function")
        want = HOST_FUNCTIONS[imp.name or ""]
        if _sig(ty) != want:
            raise ModuleRejected(
                errors.BAD_SIGNATURE, f"import {where} has type {_fmt(_sig(ty))}, ABI v1 says {_fmt(want)}"
            )
        host_fns.append(imp.name or "")

    exports: dict[str, object] = {e.name: e.type for e in module.exports}
    described: list[str] = []
    mem_t = exports.get("memory")
    if not isinstance(mem_t, wasmtime.MemoryType):
        raise ModuleRejected(errors.MISSING_EXPORT, "module must export its linear memory as 'memory'")
    if mem_t.is_64 or mem_t.is_shared:
        raise ModuleRejected(errors.BAD_SIGNATURE, "memory must be a plain (unshared, 32-bit) memory")
    mem_min = mem_t.limits.min * WASM_PAGE
    mem_max = mem_t.limits.max * WASM_PAGE if mem_t.limits.max is not None else None
    if mem_min > policy.memory_bytes:
        raise ModuleRejected(
            errors.MEMORY_LIMIT,
            f"memory starts at {mem_min} bytes, over the policy cap of {policy.memory_bytes}",
        )
    described.append(f"memory: {mem_t.limits.min} pages" + (f" (max {mem_t.limits.max})" if mem_max else ""))
    for name, (params, results, required) in ABI_EXPORTS.items():
        ty = exports.get(name)
        if ty is None:
            if required:
                raise ModuleRejected(
                    errors.MISSING_EXPORT, f"ABI v1 requires an export '{name}' {_fmt((params, results))}"
                )
            continue
        if not isinstance(ty, wasmtime.FuncType) or _sig(ty) != (params, results):
            got = _fmt(_sig(ty)) if isinstance(ty, wasmtime.FuncType) else type(ty).__name__
            raise ModuleRejected(
                errors.BAD_SIGNATURE, f"export '{name}' is {got}, ABI v1 says {_fmt((params, results))}"
            )
        described.append(f"{name}: {_fmt((params, results))}")
    for name, ty in exports.items():
        if isinstance(ty, wasmtime.TableType) and ty.limits.min > policy.table_elements:
            raise ModuleRejected(
                errors.RESOURCE_LIMIT, f"table '{name}' starts over {policy.table_elements} elements"
            )

    abi = ABI_VERSION
    if "abi_version" in exports:
        abi = _probe_abi_version(se, module, policy)
        if abi != ABI_VERSION:
            raise ModuleRejected(
                errors.ABI_VERSION, f"module declares ABI version {abi}, this runtime speaks {ABI_VERSION}"
            )

    info = ModuleInfo(
        sha256=digest.hex(),
        size=len(wasm),
        abi_version=abi,
        imports=tuple(imports),
        exports=tuple(described),
        host_functions=tuple(host_fns),
        functions=nfuncs,
        memory_min_bytes=mem_min,
        memory_max_bytes=mem_max,
        has_initialize="_initialize" in exports,
        has_describe="describe" in exports,
        has_aggregate="aggregate" in exports,
        compile_ms=compile_ms,
    )
    return info, module


#: fuel for the registration probe: registration runs while a block is applied, so a module whose
#: start function spins must not hold it for the whole evaluation budget. Deterministic like all fuel.
PROBE_FUEL = 50_000_000


def _probe_abi_version(se: SandboxEngine, module: wasmtime.Module, policy: Policy) -> int:
    """Call `abi_version()` once in a sandbox (the start function and `_initialize` run too)."""
    policy = dataclasses.replace(policy, fuel=min(policy.fuel, PROBE_FUEL))
    pre = se.linker.instantiate_pre(module)
    ctx = HostContext(policy, bytes(32), 0)

    def body(store: wasmtime.Store, exports: Exports, mem: wasmtime.Memory | None) -> int:
        f = exports["abi_version"]
        assert isinstance(f, wasmtime.Func)
        return int(call_ints(store, f, (), (), KIND_I32) or 0)

    out = run_guest(
        se, pre, export_indices(module, ("memory", "_initialize", "abi_version")), policy, ctx, body
    )
    if out.error is not None:
        raise ModuleRejected(out.error[0], f"calling abi_version() failed: {out.error[1]}")
    return int(out.value)


def _allowed(names: tuple[str, ...] | list[str]) -> str:
    """The policy's host functions as an author reads them; an empty list says so in words."""
    if not names:
        return "the policy allows no host functions: list them in [policy] host_functions"
    return "allowed: " + ", ".join(names)
