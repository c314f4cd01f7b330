"""The `aggregate` export as the runtime runs it: error codes, input caps, and the old behaviour kept.

Small WAT modules pin the host side of the ABI independently of any real challenge.
"""

from __future__ import annotations

import wasmtime

from runtime import errors
from runtime.policy import Policy
from runtime.sandbox import Sandbox

ALLOC = """
  (memory (export "memory") 1)
  (global $top (mut i32) (i32.const 1024))
  (func (export "alloc") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $top))
    (global.set $top (i32.add (global.get $top) (local.get $n)))
    (local.get $p))
  (func (export "evaluate") (param i32 i32 i32 i32) (result i64) (i64.const 0))
"""


def module(aggregate_body: str) -> bytes:
    """A minimal ABI v1 module whose `aggregate(p, n)` returns `aggregate_body` (an i64 expression)."""
    sig = '(export "aggregate") (param $p i32) (param $n i32) (result i64)'
    return wasmtime.wat2wasm(f"(module {ALLOC} (func {sig} {aggregate_body}))")


def test_negative_result_is_an_error_code(sandbox: Sandbox) -> None:
    loaded = sandbox.load(module("(i64.const -2)"))
    data, r = sandbox.call_packed(loaded, "aggregate", b"bundle")
    assert data is None
    assert r.error_kind == errors.MODULE_ERROR and r.error_message == "aggregate returned error code -2"
    loaded = sandbox.load(module("(i64.const -2147483648)"))
    _, r = sandbox.call_packed(loaded, "aggregate", b"bundle")
    assert r.error_kind == errors.MODULE_ERROR


def test_a_high_pointer_is_still_a_packed_output_not_an_error_code(sandbox: Sandbox) -> None:
    """ptr >= 2^31 makes the i64 negative; below -2^31 it is read as (ptr, len) like before (here: out of
    memory, so bad_output), never mistaken for an error code."""
    loaded = sandbox.load(module("(i64.const -2147483649)"))
    data, r = sandbox.call_packed(loaded, "aggregate", b"bundle", policy=Policy(max_output_bytes=1 << 32))
    assert data is None and r.error_kind == errors.BAD_OUTPUT
    assert "outside memory" in (r.error_message or "")


def test_input_is_capped_like_a_task(sandbox: Sandbox) -> None:
    echo = (
        "(i64.or (i64.shl (i64.extend_i32_u (local.get $p)) (i64.const 32))"
        " (i64.extend_i32_u (local.get $n)))"
    )
    loaded = sandbox.load(module(echo))
    data, r = sandbox.call_packed(loaded, "aggregate", b"x" * 101, policy=Policy(max_task_bytes=100))
    assert data is None and r.error_kind == errors.INPUT_TOO_LARGE and r.fuel_used == 0
    data, r = sandbox.call_packed(loaded, "aggregate", b"x" * 100, policy=Policy(max_task_bytes=100))
    assert r.ok and data == b"x" * 100
