"""The one hardened wasmtime engine configuration, its fingerprint, and the epoch ticker.

Fuel counts are part of consensus, and both fuel accounting and serialized modules depend on the
wasmtime version and the engine configuration, so both are fixed here and hashed into a fingerprint
that keys the compiled-module cache and is recorded in the audit log.
"""

from __future__ import annotations

import importlib.metadata
import json
import threading
import time

import wasmtime

from wire.hashing import sha256

#: The wasmtime release every validator must run (pinned in pyproject.toml).
WASMTIME_VERSION = importlib.metadata.version("wasmtime")

#: Engine settings. Why each one:
#: - consume_fuel: the deterministic CPU budget all validators agree on.
#: - epoch_interruption: local wall-clock guard (a non-deterministic safety net, never a verdict input).
#: - cranelift_nan_canonicalization: x86 and ARM produce different NaN bits; canonical NaNs keep float
#:   code deterministic across validators.
#: - threads/shared memory, relaxed SIMD, memory64, multi-memory, GC, exceptions, stack switching,
#:   component model, tail calls, wide arithmetic, custom page sizes: off, to keep the attack and
#:   non-determinism surface to plain wasm32 MVP + bulk memory + SIMD128.
#: - max_wasm_stack: bounded, so unbounded recursion traps quickly with a stack-overflow trap.
ENGINE_SETTINGS: dict[str, object] = {
    "consume_fuel": True,
    "epoch_interruption": True,
    "cranelift_nan_canonicalization": True,
    "wasm_threads": False,
    "shared_memory": False,
    "wasm_relaxed_simd": False,
    "wasm_simd": True,
    "wasm_memory64": False,
    "wasm_multi_memory": False,
    "wasm_gc": False,
    "wasm_function_references": False,
    "wasm_exceptions": False,
    "wasm_stack_switching": False,
    "wasm_component_model": False,
    "wasm_tail_call": False,
    "wasm_wide_arithmetic": False,
    "wasm_custom_page_sizes": False,
    "max_wasm_stack": 512 * 1024,
    "cranelift_opt_level": "speed",
    "parallel_compilation": True,
}

#: Epoch tick period; the wall-clock guard is rounded up to whole ticks.
EPOCH_TICK_MS = 5


def engine_fingerprint(settings: dict[str, object] | None = None) -> str:
    """Hex digest of (wasmtime version, settings): keys the module cache; changes on any upgrade."""
    doc = {"wasmtime": WASMTIME_VERSION, "settings": settings or ENGINE_SETTINGS}
    return sha256(json.dumps(doc, sort_keys=True).encode()).hex()


def make_config(overrides: dict[str, object] | None = None) -> wasmtime.Config:
    """A fresh Config (a Config is consumed by Engine(), so one per engine)."""
    cfg = wasmtime.Config()
    for key, value in {**ENGINE_SETTINGS, **(overrides or {})}.items():
        setattr(cfg, key, value)
    return cfg


class EpochTicker:
    """One daemon thread per engine bumping the epoch every EPOCH_TICK_MS.

    A shared ticker costs nothing per evaluation (a Timer thread per evaluation would cost ~100 us).
    Started lazily, so importing the runtime starts no threads.
    """

    def __init__(self, engine: wasmtime.Engine, tick_ms: int = EPOCH_TICK_MS) -> None:
        self._engine = engine
        self._tick_s = tick_ms / 1000
        self.tick_ms = tick_ms
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                t = threading.Thread(target=self._run, name="wasm-epoch-ticker", daemon=True)
                t.start()
                self._thread = t

    def _run(self) -> None:
        while True:
            time.sleep(self._tick_s)
            self._engine.increment_epoch()

    def deadline_ticks(self, wall_clock_ms: int) -> int:
        """Ticks for a guard of at least `wall_clock_ms` (+1: the current tick may be nearly over)."""
        return -(-wall_clock_ms // self.tick_ms) + 1


class SandboxEngine:
    """The engine plus its ticker and fingerprint. Normally one per process (see `default_engine`)."""

    def __init__(self, overrides: dict[str, object] | None = None) -> None:
        settings = {**ENGINE_SETTINGS, **(overrides or {})}
        self.settings = settings
        self.engine = wasmtime.Engine(make_config(overrides))
        self.fingerprint = engine_fingerprint(settings)
        self.ticker = EpochTicker(self.engine)
        self._linker: wasmtime.Linker | None = None

    @property
    def linker(self) -> wasmtime.Linker:
        """One Linker with every `platform` host function, shared by all evaluations on this engine."""
        if self._linker is None:
            from runtime.hostfns import build_linker

            self._linker = build_linker(self.engine)
        return self._linker


_default: SandboxEngine | None = None
_default_lock = threading.Lock()


def default_engine() -> SandboxEngine:
    """The process-wide hardened engine (modules compiled on one engine only run on that engine)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = SandboxEngine()
    return _default
