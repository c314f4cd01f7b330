"""Helpers for the registry tests: sudo keys, real WASM modules (wasmtime.wat2wasm) and a validator.

`wasmtime_validator` is a stand-in for `runtime.validation.validate_module` that still uses the
real wasmtime compiler (the module must compile, export the ABI v1 functions, and import only
`platform` functions the policy allows), so these tests do not depend on runtime/ being finished.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import wasmtime

from registry import ChallengeManifest, ModuleCheckFailed, ModulePolicy
from wire.keys import Hotkey

NETUID = 7

GOOD_WAT = """
(module
  (memory (export "memory") 1)
  (global $bump (mut i32) (i32.const 1024))
  (func (export "alloc") (param $n i32) (result i32) (local $p i32)
    global.get $bump local.set $p
    global.get $bump local.get $n i32.add global.set $bump
    local.get $p)
  (func (export "evaluate") (param i32 i32 i32 i32) (result i64) i64.const SCORE)
  (func (export "abi_version") (result i32) i32.const 1))
"""

# imports a function the policy does not allow (and from a module other than `platform`)
ESCAPE_WAT = """
(module
  (import "env" "system" (func $system (param i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) i32.const 0)
  (func (export "evaluate") (param i32 i32 i32 i32) (result i64) i64.const 0))
"""

NO_EVALUATE_WAT = """
(module
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) i32.const 0))
"""


def wasm_of(wat: str) -> bytes:
    return bytes(wasmtime.wat2wasm(wat))


def good_wasm(score: int = 500_000_000) -> bytes:
    return wasm_of(GOOD_WAT.replace("SCORE", str(score)))


_ENGINE = wasmtime.Engine()


def wasmtime_validator(wasm: bytes, policy: ModulePolicy) -> object:
    try:
        module = wasmtime.Module(_ENGINE, wasm)
    except Exception as exc:
        raise ModuleCheckFailed("invalid_module", str(exc).splitlines()[0]) from None
    exports = {e.name for e in module.exports}
    missing = {"memory", "alloc", "evaluate"} - exports
    if missing:
        raise ModuleCheckFailed("missing_export", f"module does not export {sorted(missing)}")
    for imp in module.imports:
        if imp.module != "platform" or imp.name not in policy.host_functions:
            raise ModuleCheckFailed("forbidden_import", f"import {imp.module}.{imp.name} is not allowed")
    return exports


SUDO = Hotkey.from_name("registry-test-owner")
INTRUDER = Hotkey.from_name("registry-test-intruder")


def policy(**kw: object) -> ModulePolicy:
    base: dict[str, object] = dict(
        fuel=10_000_000,
        memory_bytes=16 * 65536,
        wall_clock_ms=2000,
        max_submission_bytes=65536,
        host_functions=(),
    )
    base.update(kw)
    return ModulePolicy(**base)  # type: ignore[arg-type]


def manifest(wasm: bytes, **kw: object) -> ChallengeManifest:
    base: dict[str, object] = dict(
        challenge_id="sum-squares",
        name="Sum of squares",
        version=1,
        wasm_sha256=hashlib.sha256(wasm).digest(),
        wasm_size=len(wasm),
        abi_version=1,
        policy=policy(),
        emission_share_ppb=600_000_000,
        mechanism_id=0,
        task=b"task-bytes",
        activation_epoch=0,
        nonce=1,
    )
    base.update(kw)
    return ChallengeManifest(**base)  # type: ignore[arg-type]


def modules_of(*wasms: bytes) -> dict[bytes, bytes]:
    return {hashlib.sha256(w).digest(): w for w in wasms}


Validator = Callable[[bytes, ModulePolicy], object]
