"""Runtime benchmarks: per-evaluation overhead, sandbox vs native, pool throughput, compile vs cache.

Run: `python -m bench.bench_runtime` (or through `make bench`). Takes ~30-60 s on 2 cores. Figures are
wall-clock on a shared machine: compare ratios measured in the same run, not absolute numbers.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import wasmtime

from challenges.toolkit import SDK_DIR, ChallengeError, _zig, example_dirs, load_spec, read_vectors
from runtime.cache import ModuleCache
from runtime.engine import WASMTIME_VERSION, default_engine
from runtime.policy import Policy
from runtime.pool import EvaluatorPool
from runtime.sandbox import Sandbox

HERE = Path(__file__).resolve().parent

TRIVIAL_WAT = """(module
  (memory (export "memory") 1)
  (global $top (mut i32) (i32.const 1024))
  (func (export "alloc") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $top))
    (global.set $top (i32.add (global.get $top) (local.get $n)))
    (local.get $p))
  (func (export "evaluate") (param i32 i32 i32 i32) (result i64) (i64.extend_i32_u (local.get 1))))"""

BIG_POLICY = Policy(fuel=10**13, memory_bytes=256 * 1024 * 1024, wall_clock_ms=120_000)


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def bench_overhead(sandbox: Sandbox, n: int = 5000) -> None:
    loaded = sandbox.load(wasmtime.wat2wasm(TRIVIAL_WAT))
    task, sub = b"t" * 64, b"s" * 64
    for _ in range(300):
        sandbox.evaluate(loaded, task, sub)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        sandbox.evaluate(loaded, task, sub)
        times.append(time.perf_counter() - t0)
    raw_engine = default_engine()
    mod = loaded.module
    bare = []
    for _ in range(n):
        t0 = time.perf_counter()
        st = wasmtime.Store(raw_engine.engine)
        st.set_fuel(10**9)
        st.set_epoch_deadline(10**6)
        wasmtime.Instance(st, mod, [])
        bare.append(time.perf_counter() - t0)
    print("1. overhead per evaluation (trivial module, 64 B + 64 B in, fresh Store+Instance each)")
    print(f"   evaluate(): p50 {_pct(times, 0.5) * 1e6:.0f} us, p99 {_pct(times, 0.99) * 1e6:.0f} us (n={n})")
    print(f"   of which bare Store()+Instance(): p50 {_pct(bare, 0.5) * 1e6:.0f} us")


def _lcg_bytes(n: int, seed: int) -> bytes:
    out = bytearray(n)
    for i in range(n):
        seed = (seed * 1103515245 + 12345) & 0xFFFFFFFF
        out[i] = 97 + (seed >> 16) % 4
    return bytes(out)


def bench_native(sandbox: Sandbox, n: int = 3000, cn: int = 300_000, reps: int = 7) -> None:
    print(f"2. CPU-bound kernels: sandbox (fuel + epoch on) vs native gcc -O2, best of {reps}")
    gcc = shutil.which("gcc")
    with tempfile.TemporaryDirectory(prefix="pv-bench-") as tmp:
        wasm_path = Path(tmp) / "kernel.wasm"
        try:
            _zig(
                [
                    "cc",
                    "--target=wasm32-freestanding",
                    "-O2",
                    "-s",
                    "-nostdlib",
                    "-mbulk-memory",
                    "-Wl,--no-entry",
                    f"-I{SDK_DIR / 'c'}",
                    "-o",
                    str(wasm_path),
                    str(HERE / "kernel.c"),
                ],
                cwd=Path(tmp),
            )
        except ChallengeError as exc:
            print(f"   skipped: cannot build the wasm kernel ({exc})")
            return
        if gcc is None:
            print("   skipped: gcc not found")
            return
        exe = Path(tmp) / "kernel"
        subprocess.run([gcc, "-O2", "-DNATIVE", "-o", str(exe), str(HERE / "kernel.c")], check=True)
        loaded = sandbox.load(wasm_path.read_bytes(), BIG_POLICY)
        a, b = _lcg_bytes(n, 1), _lcg_bytes(n, 2)
        lev_t, col_t, lev_n, col_n = [], [], [], []
        d = c = None
        # interleave native and sandbox runs so both see the same machine load (the VM is shared)
        for _ in range(reps):
            native = subprocess.run(
                [str(exe), str(n), str(cn), "1"], capture_output=True, text=True, check=True
            )
            d_native, c_native, t_lev_n, t_col_n = native.stdout.split()
            lev_n.append(float(t_lev_n))
            col_n.append(float(t_col_n))
            r = sandbox.evaluate(loaded, b"L" + a, b)
            lev_t.append(r.duration_s)
            d = r.score
            r2 = sandbox.evaluate(loaded, b"C" + cn.to_bytes(4, "little"), b"")
            col_t.append(r2.duration_s)
            c = r2.score
        same = d == int(d_native) and c == int(c_native)
        print(
            f"   levenshtein {n}x{n}: sandbox {min(lev_t) * 1e3:.1f} ms, "
            f"native {min(lev_n) * 1e3:.1f} ms -> {min(lev_t) / min(lev_n):.2f}x"
        )
        print(
            f"   collatz(1..{cn}):     sandbox {min(col_t) * 1e3:.1f} ms, "
            f"native {min(col_n) * 1e3:.1f} ms -> {min(col_t) / min(col_n):.2f}x"
            f"   (same results: {same})"
        )


def bench_pool(sandbox: Sandbox, seconds: float = 3.0) -> None:
    ex = next(d for d in example_dirs() if load_spec(d).name == "tsp-tour")
    spec = load_spec(ex)
    loaded = sandbox.load(spec.module_path.read_bytes(), Policy.from_dict(spec.policy))
    task, sub = next((t, s) for name, t, s, _ in read_vectors(ex) if name == "n200-two-opt")
    r = sandbox.evaluate(loaded, task, sub)
    print(
        f"3. evaluations/s, example challenge tsp-tour "
        f"(n=200, {r.fuel_used:,} fuel, {r.duration_ms:.1f} ms each)"
    )
    cores = os.cpu_count() or 1
    for workers in sorted({1, 2, cores}):
        pool = EvaluatorPool(sandbox, workers)
        batch = max(4, workers * 4)
        done = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            results = pool.evaluate_many(loaded, [(task, sub)] * batch)
            assert all(x.ok and x.score == r.score for x in results)
            done += batch
        rate = done / (time.perf_counter() - t0)
        print(f"   {workers} worker thread(s): {rate:.0f} evaluations/s")


def bench_cache() -> None:
    se = default_engine()
    print("4. compile vs cache (cold compile = wasmtime Cranelift; disk hit = checksum + deserialize)")
    for d in example_dirs():
        spec = load_spec(d)
        wasm = spec.module_path.read_bytes()
        with tempfile.TemporaryDirectory(prefix="pv-cache-") as tmp:
            cold = []
            for _ in range(5):
                t0 = time.perf_counter()
                wasmtime.Module(se.engine, wasm)
                cold.append(time.perf_counter() - t0)
            ModuleCache(se, tmp).get(wasm)
            disk = []
            for _ in range(20):
                c = ModuleCache(se, tmp)
                t0 = time.perf_counter()
                c.get(wasm)
                disk.append(time.perf_counter() - t0)
            c = ModuleCache(se, tmp)
            c.get(wasm)
            mem = []
            for _ in range(200):
                t0 = time.perf_counter()
                c.get(wasm)
                mem.append(time.perf_counter() - t0)
        print(
            f"   {spec.name:<12} ({len(wasm):>5} B): cold compile {statistics.median(cold) * 1e3:.2f} ms, "
            f"disk hit {statistics.median(disk) * 1e3:.3f} ms, "
            f"memory hit {statistics.median(mem) * 1e6:.1f} us"
        )
    big = "(module " + " ".join(
        f'(func (export "f{i}") (param i64) (result i64) (i64.mul (i64.add (local.get 0) (i64.const {i})) '
        "(i64.const 3)))"
        for i in range(2000)
    )
    wasm = wasmtime.wat2wasm(big + ")")
    with tempfile.TemporaryDirectory(prefix="pv-cache-") as tmp:
        t0 = time.perf_counter()
        ModuleCache(se, tmp).get(wasm)
        cold_big = time.perf_counter() - t0
        t0 = time.perf_counter()
        ModuleCache(se, tmp).get(wasm)
        disk_big = time.perf_counter() - t0
    print(
        f"   2000-function module ({len(wasm)} B): cold compile {cold_big * 1e3:.1f} ms, "
        f"disk hit {disk_big * 1e3:.2f} ms"
    )


def main() -> None:
    t0 = time.perf_counter()
    print(
        f"runtime benchmarks (wasmtime {WASMTIME_VERSION}, "
        f"engine fingerprint {default_engine().fingerprint[:12]})"
    )
    sandbox = Sandbox()
    bench_overhead(sandbox)
    bench_native(sandbox)
    bench_pool(sandbox)
    bench_cache()
    print(f"(total {time.perf_counter() - t0:.1f} s)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
