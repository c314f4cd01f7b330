"""Policy, validation, evaluation semantics, isolation between evaluations, cache, pool."""

from __future__ import annotations

import resource
import threading
import time
from pathlib import Path

import pytest
import rt_modules as M
import trio
from rt_helpers import HEIGHT, SEED, SUBMISSION, TASK, run_good, small_policy

from runtime import errors
from runtime.cache import ModuleCache
from runtime.engine import WASMTIME_VERSION, SandboxEngine, default_engine, engine_fingerprint
from runtime.errors import ModuleRejected
from runtime.policy import Policy, PolicyError
from runtime.pool import EvaluatorPool
from runtime.sandbox import EvalResult, LoadedModule, Sandbox
from runtime.validation import ModuleInfo, validate_module


def expected_good_score(task: bytes, sub: bytes, seed: bytes, height: int) -> int:
    same = sum(1 for a, b in zip(task, sub, strict=False) if a == b)
    return same * 999_000_000 // len(task) + seed[0] + height


# -- policy ------------------------------------------------------------------------------------------


def test_policy_defaults_and_roundtrip() -> None:
    p = Policy()
    assert p.fuel > 0 and p.memory_bytes > 0 and set(p.host_functions) == {"log", "seed", "block_height"}
    assert Policy.from_dict(p.to_dict()) == p


def test_policy_from_toml() -> None:
    p = Policy.from_toml('[policy]\nfuel = 1000\nmemory_bytes = 131072\nhost_functions = ["log"]\n')
    assert (p.fuel, p.memory_bytes, p.host_functions) == (1000, 131072, ("log",))
    assert Policy.from_toml("fuel = 7").fuel == 7


@pytest.mark.parametrize(
    "doc",
    [
        {"fuel": -1},
        {"fuel": 0},
        {"fule": 5},
        {"fuel": "many"},
        {"fuel": True},
        {"host_functions": ["exec"]},
        {"memory_bytes": 8 * 1024**3},
    ],
)
def test_policy_refuses_bad_values(doc: dict[str, object]) -> None:
    with pytest.raises(PolicyError):
        Policy.from_dict(doc)


def test_policy_bad_toml() -> None:
    with pytest.raises(PolicyError):
        Policy.from_toml("fuel = = 3")


# -- validation ---------------------------------------------------------------------------------------


def test_validate_good_module_describes_it() -> None:
    info = validate_module(M.wasm(M.GOOD))
    assert isinstance(info, ModuleInfo)
    assert info.abi_version == 1 and len(info.sha256) == 64
    assert info.imports == ("platform.seed", "platform.log", "platform.block_height")
    assert set(info.host_functions) == {"seed", "log", "block_height"}
    assert any(e.startswith("evaluate: (i32, i32, i32, i32) -> (i64)") for e in info.exports)


@pytest.mark.parametrize(
    ("wat", "kind"),
    [
        (M.MISSING_EVALUATE, errors.MISSING_EXPORT),
        (M.NO_MEMORY, errors.MISSING_EXPORT),
        (M.BAD_EVALUATE_SIG, errors.BAD_SIGNATURE),
        (M.ABI_V2, errors.ABI_VERSION),
    ],
)
def test_validate_refusals_name_the_reason(wat: str, kind: str) -> None:
    with pytest.raises(ModuleRejected) as ei:
        validate_module(M.wasm(wat))
    assert ei.value.kind == kind and ei.value.message


def test_abi_version_one_accepted() -> None:
    assert validate_module(M.wasm(M.ABI_V1)).abi_version == 1


def test_abi_version_probe_is_sandboxed() -> None:
    """A start function that spins is caught while probing abi_version at registration."""
    wat = M.START_SPIN.replace(
        "(start $spin)", '(start $spin) (func (export "abi_version") (result i32) (i32.const 1))'
    )
    with pytest.raises(ModuleRejected) as ei:
        validate_module(M.wasm(wat), small_policy())
    assert ei.value.kind == errors.OUT_OF_FUEL
    # the probe's fuel is capped, whatever the evaluation budget: registration stays quick
    t0 = time.perf_counter()
    with pytest.raises(ModuleRejected) as ei:
        validate_module(M.wasm(wat), Policy(fuel=10**13, wall_clock_ms=600_000))
    assert ei.value.kind == errors.OUT_OF_FUEL and time.perf_counter() - t0 < 5


# -- evaluation -------------------------------------------------------------------------------------


def test_good_module_score_and_host_functions(sandbox: Sandbox, good: LoadedModule) -> None:
    r = run_good(sandbox, good)
    assert r.ok and r.error_kind is None
    assert r.score == expected_good_score(TASK, SUBMISSION, SEED, HEIGHT)
    assert r.logs == (SUBMISSION,)
    assert r.host_calls == 3
    assert r.fuel_used > 3 * Policy().host_call_fuel
    assert r.memory_peak == 65536


def test_same_inputs_same_fuel_and_score(sandbox: Sandbox, good: LoadedModule) -> None:
    results = {(r.score, r.fuel_used) for r in (run_good(sandbox, good) for _ in range(5))}
    assert len(results) == 1


def test_seed_and_height_change_the_score(sandbox: Sandbox, good: LoadedModule) -> None:
    a = sandbox.evaluate(good, TASK, SUBMISSION, seed=bytes([9]) + bytes(31), block_height=5)
    assert a.score == expected_good_score(TASK, SUBMISSION, bytes([9]), 5)


def test_no_state_leaks_between_evaluations(sandbox: Sandbox) -> None:
    loaded = sandbox.load(M.wasm(M.STATEFUL))
    scores = [sandbox.evaluate(loaded, b"", b"").score for _ in range(3)]
    assert scores == [2, 2, 2]


def test_initialize_runs_before_evaluate(sandbox: Sandbox) -> None:
    r = sandbox.evaluate(sandbox.load(M.wasm(M.INITIALIZE)), b"", b"")
    assert r.ok and r.score == 4242


def test_memory_released_between_evaluations(sandbox: Sandbox) -> None:
    loaded = sandbox.load(M.wasm(M.GROW_16M))
    sandbox.evaluate(loaded, b"", b"")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(30):
        r = sandbox.evaluate(loaded, b"", b"")
        assert r.ok and r.memory_peak == 257 * 65536
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 64 * 1024  # 30 x 16 MiB would be 480 MiB if instances leaked


def test_evaluate_rejects_bad_seed(sandbox: Sandbox, good: LoadedModule) -> None:
    with pytest.raises(ValueError):
        sandbox.evaluate(good, TASK, SUBMISSION, seed=b"short")


def test_eval_result_json_contract() -> None:
    ok = EvalResult(True, 5, 10, 65536, 0.0012)
    assert ok.to_json() == {
        "ok": True,
        "score": 5,
        "fuel_used": 10,
        "memory_peak": 65536,
        "duration_ms": 1.2,
        "error": None,
    }
    bad = EvalResult(False, None, 10, 0, 0.0, "trap", "boom")
    assert bad.to_json()["error"] == {"kind": "trap", "message": "boom"}


# -- engine + cache -------------------------------------------------------------------------------------


def test_engine_fingerprint_tracks_version_and_settings() -> None:
    fp = engine_fingerprint()
    assert fp == default_engine().fingerprint and WASMTIME_VERSION == "50.0.1"
    assert engine_fingerprint({"consume_fuel": False}) != fp


def test_cache_disk_roundtrip_and_tamper(tmp_path: Path) -> None:
    se = default_engine()
    wasm = M.wasm(M.GOOD)
    c1 = ModuleCache(se, tmp_path)
    c1.get(wasm)
    assert c1.compiles == 1
    c2 = ModuleCache(se, tmp_path)  # a new process would see the same directory
    c2.get(wasm)
    assert (c2.compiles, c2.hits_disk) == (0, 1)
    c2.get(wasm)
    assert c2.hits_memory == 1
    # tamper with the artifact: detected by its checksum, recompiled, never deserialized
    files = list(tmp_path.glob("*.cwasm"))
    assert len(files) == 1
    raw = bytearray(files[0].read_bytes())
    raw[-100] ^= 0xFF
    files[0].write_bytes(bytes(raw))
    c3 = ModuleCache(se, tmp_path)
    mod = c3.get(wasm)
    assert (c3.compiles, c3.hits_disk) == (1, 0)
    sb = Sandbox(engine=se)
    assert sb.evaluate(sb.load(wasm), TASK, SUBMISSION).ok and mod is not None


def test_cache_key_depends_on_engine_config(tmp_path: Path) -> None:
    wasm = M.wasm(M.GOOD)
    ModuleCache(default_engine(), tmp_path).get(wasm)
    other = ModuleCache(SandboxEngine({"cranelift_opt_level": "none"}), tmp_path)
    other.get(wasm)
    assert other.compiles == 1 and len(list(tmp_path.glob("*.cwasm"))) == 2


# -- worker pool / trio ---------------------------------------------------------------------------------


async def test_pool_from_trio_keeps_event_loop_responsive(sandbox: Sandbox, good: LoadedModule) -> None:
    pool = EvaluatorPool(sandbox, max_concurrency=2)
    spin = sandbox.load(M.wasm(M.INFINITE_LOOP), small_policy(fuel=10**15, wall_clock_ms=300))
    ticks = 0
    results: list[EvalResult] = []

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await trio.sleep(0.01)
            ticks += 1

    async def one(loaded: LoadedModule) -> None:
        results.append(await pool.evaluate(loaded, TASK, SUBMISSION, seed=SEED, block_height=HEIGHT))

    t0 = time.perf_counter()
    async with trio.open_nursery() as n:
        n.start_soon(ticker)
        async with trio.open_nursery() as jobs:
            jobs.start_soon(one, spin)
            for _ in range(4):
                jobs.start_soon(one, good)
        n.cancel_scope.cancel()
    elapsed = time.perf_counter() - t0
    assert sorted(r.error_kind or "ok" for r in results) == ["ok"] * 4 + [errors.TIMEOUT]
    assert ticks >= 0.5 * elapsed / 0.01  # the loop kept ticking while wasm ran in threads


def test_pool_concurrency_cap(sandbox: Sandbox) -> None:
    """With a cap of 1, two 150 ms evaluations take ~300 ms; threads never exceed the cap."""
    spin = sandbox.load(M.wasm(M.INFINITE_LOOP), small_policy(fuel=10**15, wall_clock_ms=150))
    active = peak = 0
    lock = threading.Lock()
    orig = sandbox.evaluate

    def counting(*a: object, **kw: object) -> EvalResult:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        try:
            return orig(*a, **kw)  # type: ignore[arg-type]
        finally:
            with lock:
                active -= 1

    async def main() -> None:
        pool = EvaluatorPool(sandbox, max_concurrency=1)
        pool.sandbox = type("S", (), {"evaluate": staticmethod(counting)})()  # type: ignore[assignment]
        async with trio.open_nursery() as n:
            for _ in range(3):
                n.start_soon(pool.evaluate, spin, TASK, SUBMISSION)

    trio.run(main)
    assert peak == 1


def test_concurrent_hostile_and_good_evaluations_stay_deterministic(
    sandbox: Sandbox, good: LoadedModule
) -> None:
    """Host-call aborts in some threads never leak into evaluations running in other threads.

    (wasmtime-py parks a host function's Python exception in a process-global; our host functions
    never raise, and this test is what would catch a regression.)"""
    from concurrent.futures import ThreadPoolExecutor

    base = run_good(sandbox, good)
    flood = sandbox.load(M.wasm(M.HOST_FLOOD), small_policy(fuel=10**12, max_host_calls=300))
    bad_ptr = sandbox.load(M.wasm(M.BAD_HOST_PTR))

    def job(i: int) -> tuple[str, EvalResult]:
        if i % 3 == 0:
            return "flood", sandbox.evaluate(flood, TASK, SUBMISSION)
        if i % 3 == 1:
            return "bad_ptr", sandbox.evaluate(bad_ptr, TASK, SUBMISSION)
        return "good", run_good(sandbox, good)

    with ThreadPoolExecutor(4) as ex:
        results = list(ex.map(job, range(60)))
    for name, r in results:
        if name == "good":
            assert (r.ok, r.score, r.fuel_used, r.logs) == (True, base.score, base.fuel_used, base.logs)
        else:
            assert r.error_kind == errors.HOST_LIMIT, (name, r)


def test_aggregate_packed_output(sandbox: Sandbox) -> None:
    loaded = sandbox.load(M.wasm(M.AGGREGATE_ECHO))
    assert loaded.info.has_aggregate
    data, r = sandbox.call_packed(loaded, "aggregate", b"per-miner results")
    assert r.ok and data == b"per-miner results"
    data, r = sandbox.call_packed(loaded, "aggregate", b"x" * 100, policy=Policy(max_output_bytes=10))
    assert data is None and r.error_kind == errors.BAD_OUTPUT


def test_validate_accepts_a_policy_mapping() -> None:
    with pytest.raises(ModuleRejected) as ei:
        validate_module(M.wasm(M.GOOD), {"host_functions": ["seed"]})
    assert ei.value.kind == errors.FORBIDDEN_IMPORT


def test_fuel_identical_on_a_second_engine_with_the_same_config() -> None:
    """Fuel is a consensus value: two engines (two validators) built from ENGINE_SETTINGS agree exactly."""
    wasm = M.wasm(M.GOOD)
    results = []
    for _ in range(2):
        sb = Sandbox(engine=SandboxEngine())
        r = sb.evaluate(sb.load(wasm), TASK, SUBMISSION, seed=SEED, block_height=HEIGHT)
        results.append((r.score, r.fuel_used, r.memory_peak))
    assert results[0] == results[1]
