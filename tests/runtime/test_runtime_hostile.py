"""Hostile and broken modules: each is contained, reported with its error kind, and the process goes on.

Every test here uses the `still_healthy` fixture, which afterwards re-runs a good module and checks
its score, fuel and memory are exactly what they were before any hostile module ran.
"""

from __future__ import annotations

import time

import pytest
import rt_modules as M
import wasmtime
from rt_helpers import SUBMISSION, TASK, small_policy

from runtime import errors
from runtime.engine import SandboxEngine
from runtime.errors import ModuleRejected
from runtime.policy import Policy
from runtime.sandbox import SCORE_ONE, Sandbox
from runtime.validation import validate_module

pytestmark = pytest.mark.usefixtures("still_healthy")


def test_infinite_loop_runs_out_of_fuel(sandbox: Sandbox) -> None:
    pol = small_policy()
    r = sandbox.evaluate(sandbox.load(M.wasm(M.INFINITE_LOOP), pol), TASK, SUBMISSION)
    assert (r.ok, r.score, r.error_kind) == (False, None, errors.OUT_OF_FUEL)
    assert r.fuel_used == pol.fuel


def test_infinite_loop_hits_wall_clock_guard(sandbox: Sandbox) -> None:
    pol = small_policy(fuel=10**15, wall_clock_ms=100)
    t0 = time.perf_counter()
    r = sandbox.evaluate(sandbox.load(M.wasm(M.INFINITE_LOOP), pol), TASK, SUBMISSION)
    took = time.perf_counter() - t0
    assert r.error_kind == errors.TIMEOUT
    assert 0.09 < took < 2.0


def test_memory_growth_past_cap(sandbox: Sandbox) -> None:
    pol = small_policy(memory_bytes=2 * 1024 * 1024)
    r = sandbox.evaluate(sandbox.load(M.wasm(M.MEMORY_GROW), pol), TASK, SUBMISSION)
    assert r.error_kind == errors.MEMORY_LIMIT
    assert r.memory_peak == pol.memory_bytes  # grew page by page right up to the cap, never beyond


def test_memory_minimum_over_cap_is_refused_at_registration() -> None:
    with pytest.raises(ModuleRejected) as ei:
        validate_module(M.wasm(M.BIG_MEMORY_MIN), small_policy())
    assert ei.value.kind == errors.MEMORY_LIMIT


def test_memory_minimum_over_cap_at_evaluation(sandbox: Sandbox) -> None:
    """Registered under a generous policy, evaluated under a tight one: instantiation is refused."""
    loaded = sandbox.load(M.wasm(M.BIG_MEMORY_MIN), Policy(memory_bytes=256 * 1024 * 1024))
    r = sandbox.evaluate(loaded, TASK, SUBMISSION, policy=small_policy())
    assert r.error_kind == errors.MEMORY_LIMIT


def test_unbounded_recursion_overflows_the_stack(sandbox: Sandbox) -> None:
    r = sandbox.evaluate(sandbox.load(M.wasm(M.RECURSION), small_policy()), TASK, SUBMISSION)
    assert r.error_kind == errors.STACK_OVERFLOW


def test_start_function_that_never_returns(sandbox: Sandbox) -> None:
    r = sandbox.evaluate(sandbox.load(M.wasm(M.START_SPIN), small_policy()), TASK, SUBMISSION)
    assert r.error_kind == errors.OUT_OF_FUEL
    r = sandbox.evaluate(
        sandbox.load(M.wasm(M.START_SPIN)),
        TASK,
        SUBMISSION,
        policy=small_policy(fuel=10**15, wall_clock_ms=60),
    )
    assert r.error_kind == errors.TIMEOUT


def test_huge_output_length(sandbox: Sandbox) -> None:
    data, r = sandbox.call_packed(sandbox.load(M.wasm(M.HUGE_OUTPUT)), "describe")
    assert data is None and r.error_kind == errors.BAD_OUTPUT
    assert "over the cap" in (r.error_message or "")


def test_out_of_bounds_output(sandbox: Sandbox) -> None:
    data, r = sandbox.call_packed(sandbox.load(M.wasm(M.OOB_OUTPUT)), "describe")
    assert data is None and r.error_kind == errors.BAD_OUTPUT
    assert "outside memory" in (r.error_message or "")
    data, r = sandbox.call_packed(sandbox.load(M.wasm(M.GOOD_DESCRIBE)), "describe")
    assert r.ok and data == b'{"name":"t"}'


def test_alloc_returning_out_of_bounds_pointer(sandbox: Sandbox) -> None:
    r = sandbox.evaluate(sandbox.load(M.wasm(M.OOB_ALLOC)), TASK, SUBMISSION)
    assert r.error_kind == errors.BAD_OUTPUT


@pytest.mark.parametrize(
    "wat", [M.FORBIDDEN_ENV, M.FORBIDDEN_WASI, M.IMPORTED_MEMORY], ids=["env", "wasi", "memory"]
)
def test_forbidden_import(wat: str) -> None:
    with pytest.raises(ModuleRejected) as ei:
        validate_module(M.wasm(wat))
    assert ei.value.kind == errors.FORBIDDEN_IMPORT


def test_host_function_not_allowed_by_policy(sandbox: Sandbox) -> None:
    with pytest.raises(ModuleRejected) as ei:
        validate_module(M.wasm(M.GOOD), Policy(host_functions=("seed",)))
    assert ei.value.kind == errors.FORBIDDEN_IMPORT and "platform.log" in ei.value.message
    # a module registered under a wider policy cannot use a host function a narrower policy denies
    loaded = sandbox.load(M.wasm(M.GOOD))
    r = sandbox.evaluate(loaded, TASK, SUBMISSION, policy=Policy(host_functions=("seed", "log")))
    assert r.error_kind == errors.FORBIDDEN_IMPORT


def test_host_import_with_wrong_signature() -> None:
    with pytest.raises(ModuleRejected) as ei:
        validate_module(M.wasm(M.WRONG_HOST_SIG))
    assert ei.value.kind == errors.BAD_SIGNATURE


@pytest.mark.parametrize(
    "data",
    [b"", b"garbage", b"\0asm", b"\0asm\x02\0\0\0", M.wasm(M.GOOD)[:-5], M.wasm(M.GOOD)[:20] + b"\xff" * 40],
    ids=["empty", "garbage", "magic-only", "bad-version", "truncated", "corrupt-section"],
)
def test_malformed_bytes(data: bytes) -> None:
    with pytest.raises(ModuleRejected) as ei:
        validate_module(data)
    assert ei.value.kind == errors.INVALID_MODULE


def test_not_bytes_at_all() -> None:
    with pytest.raises(ModuleRejected) as ei:
        validate_module("(module)")  # type: ignore[arg-type]
    assert ei.value.kind == errors.INVALID_MODULE


def test_module_over_size_cap() -> None:
    wasm = M.wasm(M.GOOD)
    with pytest.raises(ModuleRejected) as ei:
        validate_module(wasm, Policy(max_module_bytes=len(wasm) - 1))
    assert ei.value.kind == errors.TOO_LARGE
    assert validate_module(wasm, Policy(max_module_bytes=len(wasm))).size == len(wasm)


def test_compile_heavy_module_refused_before_compiling() -> None:
    heavy = M.many_functions(25_000)
    t0 = time.perf_counter()
    with pytest.raises(ModuleRejected) as ei:
        validate_module(heavy)
    assert ei.value.kind == errors.TOO_COMPLEX
    assert time.perf_counter() - t0 < 0.5  # refused by the pre-scan, not after a long compile
    with pytest.raises(ModuleRejected) as ei:
        validate_module(M.many_locals(60_000))
    assert ei.value.kind == errors.TOO_COMPLEX and "locals" in ei.value.message


def test_largest_allowed_shape_compiles_in_bounded_time() -> None:
    """The caps are what bound compile time: a module just under the function cap still compiles quickly."""
    t0 = time.perf_counter()
    info = validate_module(M.many_functions(5_000), Policy(max_functions=5_010))
    assert info.functions > 5_000
    assert time.perf_counter() - t0 < 20


def test_table_growth_capped(sandbox: Sandbox) -> None:
    pol = small_policy(table_elements=1_000)
    r = sandbox.evaluate(sandbox.load(M.wasm(M.TABLE_GROW), pol), TASK, SUBMISSION)
    assert r.ok and r.score is not None
    assert 900 < r.score <= 1_000  # table.grow returned -1 once the next step would pass the cap


def test_table_minimum_over_cap_refused() -> None:
    with pytest.raises(ModuleRejected) as ei:
        validate_module(M.wasm(M.TABLE_TOO_BIG), small_policy())
    assert ei.value.kind == errors.RESOURCE_LIMIT


def test_host_call_flood_hits_call_cap(sandbox: Sandbox) -> None:
    pol = small_policy(fuel=10**12, max_host_calls=500)
    r = sandbox.evaluate(sandbox.load(M.wasm(M.HOST_FLOOD), pol), TASK, SUBMISSION)
    assert r.error_kind == errors.HOST_LIMIT
    assert r.host_calls == 500


def test_host_calls_are_charged_fuel(sandbox: Sandbox) -> None:
    pol = small_policy(fuel=5_000_000, max_host_calls=10_000, host_call_fuel=100_000)
    r = sandbox.evaluate(sandbox.load(M.wasm(M.HOST_FLOOD), pol), TASK, SUBMISSION)
    assert r.error_kind == errors.OUT_OF_FUEL
    assert r.host_calls == 49  # 5M fuel buys 49 calls at 100k each (plus a little guest code)


def test_log_flood_hits_byte_cap(sandbox: Sandbox) -> None:
    pol = small_policy(fuel=10**12, max_log_bytes=10_000)
    r = sandbox.evaluate(sandbox.load(M.wasm(M.LOG_FLOOD), pol), TASK, SUBMISSION)
    assert r.error_kind == errors.HOST_LIMIT
    assert sum(len(x) for x in r.logs) == 8192


def test_host_call_with_bad_pointer(sandbox: Sandbox) -> None:
    r = sandbox.evaluate(sandbox.load(M.wasm(M.BAD_HOST_PTR)), TASK, SUBMISSION)
    assert r.error_kind == errors.HOST_LIMIT and "outside memory" in (r.error_message or "")


def test_nan_canonicalisation(sandbox: Sandbox) -> None:
    wasm = M.wasm(M.NAN)
    r = sandbox.evaluate(sandbox.load(wasm), b"", b"")  # 0.0 / 0.0
    assert r.ok and r.score == 0x7FF8
    # the same module on an engine without canonicalisation produces the x86 default NaN: proof the
    # setting is what makes the score deterministic across architectures
    raw = SandboxEngine({"cranelift_nan_canonicalization": False})
    r2 = Sandbox(engine=raw).evaluate(Sandbox(engine=raw).load(wasm), b"", b"")
    assert r2.ok and r2.score != 0x7FF8


@pytest.mark.parametrize(
    ("wat", "kind"),
    [(M.NEGATIVE, errors.MODULE_ERROR), (M.I64_MIN, errors.MODULE_ERROR), (M.TOO_HIGH, errors.BAD_OUTPUT)],
    ids=["negative", "i64-min", "above-one"],
)
def test_negative_and_out_of_range_scores(sandbox: Sandbox, wat: str, kind: str) -> None:
    r = sandbox.evaluate(sandbox.load(M.wasm(wat)), TASK, SUBMISSION)
    assert (r.ok, r.score, r.error_kind) == (False, None, kind)


def test_score_of_exactly_one_is_accepted(sandbox: Sandbox) -> None:
    r = sandbox.evaluate(sandbox.load(M.wasm(M.EXACT_ONE)), TASK, SUBMISSION)
    assert r.ok and r.score == SCORE_ONE


def test_threads_feature_disabled() -> None:
    with pytest.raises(ModuleRejected) as ei:
        validate_module(wasmtime.wat2wasm(M.THREADS))
    assert ei.value.kind == errors.INVALID_MODULE


def test_input_over_cap(sandbox: Sandbox, good: object) -> None:
    loaded = sandbox.load(M.wasm(M.GOOD))
    r = sandbox.evaluate(loaded, b"x" * 101, SUBMISSION, policy=Policy(max_task_bytes=100))
    assert r.error_kind == errors.INPUT_TOO_LARGE
    r = sandbox.evaluate(loaded, TASK, b"x" * 101, policy=Policy(max_submission_bytes=100))
    assert r.error_kind == errors.INPUT_TOO_LARGE
