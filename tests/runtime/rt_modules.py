# ruff: noqa: E501  (WAT sources read better unwrapped)
"""WAT sources for runtime tests: a well-behaved ABI v1 module and a catalogue of hostile ones."""

from __future__ import annotations

import wasmtime

# bump allocator that grows memory on demand (traps with unreachable if memory.grow is refused)
ALLOC = """
  (global $top (mut i32) (i32.const 1024))
  (func $alloc (export "alloc") (param $len i32) (result i32)
    (local $start i32) (local $end i32) (local $have i32)
    (local.set $start (i32.and (i32.add (global.get $top) (i32.const 7)) (i32.const -8)))
    (local.set $end (i32.add (local.get $start) (local.get $len)))
    (local.set $have (i32.shl (memory.size) (i32.const 16)))
    (if (i32.gt_u (local.get $end) (local.get $have))
      (then (if (i32.eq (memory.grow (i32.shr_u (i32.add (i32.sub (local.get $end) (local.get $have))
                                                          (i32.const 65535)) (i32.const 16)))
                        (i32.const -1))
              (then unreachable))))
    (global.set $top (local.get $end))
    (local.get $start))
"""


def abi(evaluate_body: str, extra: str = "", imports: str = "", memory: str = "1") -> str:
    """An ABI v1 module whose `evaluate(tp, tl, sp, sl) -> i64` has body `evaluate_body`."""
    return f"""(module
  {imports}
  (memory (export "memory") {memory})
  {ALLOC}
  {extra}
  (func (export "evaluate") (param $tp i32) (param $tl i32) (param $sp i32) (param $sl i32) (result i64)
    {evaluate_body}))"""


def wasm(wat: str) -> bytes:
    return wasmtime.wat2wasm(wat)


# Score = number of bytes of the submission equal to the task byte at the same position, scaled to 1e9,
# plus the first byte of the seed and the block height: exercises memory, inputs and host functions.
GOOD = abi(
    """
    (local $i i32) (local $n i32) (local $same i64)
    (local.set $n (select (local.get $tl) (local.get $sl) (i32.lt_u (local.get $tl) (local.get $sl))))
    (if (i32.eqz (local.get $tl)) (then (return (i64.const 0))))
    (block $d (loop $l
      (br_if $d (i32.ge_u (local.get $i) (local.get $n)))
      (if (i32.eq (i32.load8_u (i32.add (local.get $tp) (local.get $i)))
                  (i32.load8_u (i32.add (local.get $sp) (local.get $i))))
        (then (local.set $same (i64.add (local.get $same) (i64.const 1)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    (call $seed (i32.const 0))
    (call $log (local.get $sp) (local.get $sl))
    (i64.add (i64.add (i64.div_u (i64.mul (local.get $same) (i64.const 999000000)) (i64.extend_i32_u (local.get $tl)))
                      (i64.extend_i32_u (i32.load8_u (i32.const 0))))
             (call $height))""",
    imports="""(import "platform" "seed" (func $seed (param i32)))
  (import "platform" "log" (func $log (param i32 i32)))
  (import "platform" "block_height" (func $height (result i64)))""",
)

INFINITE_LOOP = abi("(loop $l (br $l)) (i64.const 0)")

MEMORY_GROW = abi(
    """(block $d (loop $l (br_if $d (i32.eq (memory.grow (i32.const 1)) (i32.const -1))) (br $l)))
    unreachable"""
)

RECURSION = abi("(call $r (i64.const 0))", extra="(func $r (param i64) (result i64) (call $r (local.get 0)))")

START_SPIN = abi("(i64.const 1)", extra="(func $spin (loop $l (br $l))) (start $spin)")

# describe() returning a huge length, and one pointing past the end of memory
HUGE_OUTPUT = abi(
    "(i64.const 1)", extra='(func (export "describe") (result i64) (i64.const 0x7fffffffffffffff))'
)
OOB_OUTPUT = abi(
    "(i64.const 1)",
    extra='(func (export "describe") (result i64) (i64.or (i64.shl (i64.const 0x10000) (i64.const 32)) (i64.const 16)))',
)
GOOD_DESCRIBE = abi(
    "(i64.const 1)",
    extra='(data (i32.const 16) "{\\"name\\":\\"t\\"}") (func (export "describe") (result i64) (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 12)))',
)
# alloc returning a pointer far outside memory
OOB_ALLOC = """(module (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) (i32.const -16))
  (func (export "evaluate") (param i32 i32 i32 i32) (result i64) (i64.const 1)))"""

FORBIDDEN_ENV = abi("(i64.const 1)", imports='(import "env" "abort" (func (param i32)))')
FORBIDDEN_WASI = abi(
    "(i64.const 1)",
    imports='(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))',
)
WRONG_HOST_SIG = abi("(i64.const 1)", imports='(import "platform" "log" (func (param i64)))')
IMPORTED_MEMORY = """(module (import "platform" "memory" (memory 1))
  (func (export "alloc") (param i32) (result i32) (i32.const 0))
  (func (export "evaluate") (param i32 i32 i32 i32) (result i64) (i64.const 1)))"""

TABLE_GROW = abi(
    """(block $d (loop $l (br_if $d (i32.eq (table.grow $t (ref.null func) (i32.const 100)) (i32.const -1))) (br $l)))
    (i64.extend_i32_u (table.size $t))""",
    extra="(table $t 1 funcref)",
)
TABLE_TOO_BIG = abi("(i64.const 1)", extra='(table (export "t") 100000 funcref)')

HOST_FLOOD = abi(
    "(loop $l (drop (call $h)) (br $l)) (i64.const 0)",
    imports='(import "platform" "block_height" (func $h (result i64)))',
)
LOG_FLOOD = abi(
    "(loop $l (call $log (i32.const 0) (i32.const 4096)) (br $l)) (i64.const 0)",
    imports='(import "platform" "log" (func $log (param i32 i32)))',
)
BAD_HOST_PTR = abi(
    "(call $seed (i32.const -8)) (i64.const 1)", imports='(import "platform" "seed" (func $seed (param i32)))'
)

# 0.0/0.0: canonical NaN is 0x7ff8000000000000; x86 produces 0xfff8000000000000 without canonicalisation.
# The score is the top 16 bits of the NaN's bit pattern.
NAN = abi(
    "(i64.shr_u (i64.reinterpret_f64 (f64.div (f64.convert_i32_u (local.get $tl)) (f64.convert_i32_u (local.get $sl)))) (i64.const 48))"
)

NEGATIVE = abi("(i64.const -7)")
TOO_HIGH = abi("(i64.const 1000000001)")
I64_MIN = abi("(i64.const -9223372036854775808)")
EXACT_ONE = abi("(i64.const 1000000000)")

MISSING_EVALUATE = (
    """(module (memory (export "memory") 1) (func (export "alloc") (param i32) (result i32) (i32.const 0)))"""
)
BAD_EVALUATE_SIG = """(module (memory (export "memory") 1) (func (export "alloc") (param i32) (result i32) (i32.const 0))
  (func (export "evaluate") (param i32 i32) (result i32) (i32.const 0)))"""
NO_MEMORY = """(module (func (export "alloc") (param i32) (result i32) (i32.const 0))
  (func (export "evaluate") (param i32 i32 i32 i32) (result i64) (i64.const 0)))"""
ABI_V2 = abi("(i64.const 1)", extra='(func (export "abi_version") (result i32) (i32.const 2))')
ABI_V1 = abi("(i64.const 1)", extra='(func (export "abi_version") (result i32) (i32.const 1))')
BIG_MEMORY_MIN = abi("(i64.const 1)", memory="2000")  # 125 MiB at start
THREADS = """(module (memory (export "memory") 1 1 shared)
  (func (export "alloc") (param i32) (result i32) (i32.const 0))
  (func (export "evaluate") (param i32 i32 i32 i32) (result i64) (i64.extend_i32_u (i32.atomic.load (i32.const 0)))))"""

# state must not leak across evaluations: a global counter and a memory cell, both bumped per call
STATEFUL = abi(
    """(global.set $count (i64.add (global.get $count) (i64.const 1)))
    (i64.store (i32.const 8) (i64.add (i64.load (i32.const 8)) (i64.const 1)))
    (i64.add (global.get $count) (i64.load (i32.const 8)))""",
    extra="(global $count (mut i64) (i64.const 0))",
)

# grows 16 MiB then returns: used to check memory is released between evaluations
GROW_16M = abi("(drop (memory.grow (i32.const 256))) (i64.extend_i32_u (memory.size))")

INITIALIZE = abi(
    "(i64.extend_i32_u (i32.load (i32.const 4)))",
    extra='(func (export "_initialize") (i32.store (i32.const 4) (i32.const 4242)))',
)


def many_functions(n: int) -> bytes:
    funcs = " ".join(f"(func $f{i} (result i32) (i32.const {i}))" for i in range(n))
    return wasm(abi("(i64.const 1)", extra=funcs))


def many_locals(n: int) -> bytes:
    return wasm(abi("(i64.const 1)", extra=f"(func $big (local {' '.join(['i64'] * n)}))"))


# aggregate(ptr, len) hands its input straight back (packed ptr << 32 | len)
AGGREGATE_ECHO = abi(
    "(i64.const 1)",
    extra='(func (export "aggregate") (param $p i32) (param $n i32) (result i64) (i64.or (i64.shl (i64.extend_i32_u (local.get $p)) (i64.const 32)) (i64.extend_i32_u (local.get $n))))',
)
