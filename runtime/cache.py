"""Compiled-module cache: in memory, and on disk as serialized wasmtime artifacts.

Compiling a module costs milliseconds to hundreds of milliseconds; deserializing costs ~0.1 ms.
The key is sha256(module hash, wasmtime version, engine configuration), because an artifact is only
valid for the exact engine that produced it. `Module.deserialize` trusts its input (it is native code),
so only artifacts this cache wrote are loaded, and each file carries a sha256 of its artifact that is
checked before deserializing; a corrupt or tampered file is recompiled and overwritten.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

import wasmtime

from runtime.engine import SandboxEngine
from wire.hashing import sha256

_MAGIC = b"PVWCACHE1\n"


class ModuleCache:
    """Thread-safe; `directory=None` keeps the cache in memory only."""

    def __init__(
        self, se: SandboxEngine, directory: str | Path | None = None, memory_entries: int = 64
    ) -> None:
        self.se = se
        self.directory = Path(directory) if directory is not None else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self._mem: OrderedDict[bytes, wasmtime.Module] = OrderedDict()
        self._entries = memory_entries
        self._lock = threading.Lock()
        self.hits_memory = 0
        self.hits_disk = 0
        self.compiles = 0

    def key(self, wasm_hash: bytes) -> bytes:
        return sha256(wasm_hash + self.se.fingerprint.encode())

    def path_for(self, wasm_hash: bytes) -> Path | None:
        if self.directory is None:
            return None
        return self.directory / f"{self.key(wasm_hash).hex()}.cwasm"

    def get(self, wasm: bytes, wasm_hash: bytes | None = None) -> wasmtime.Module:
        """The compiled module for `wasm`; compiles (raising WasmtimeError) when not cached."""
        wasm_hash = wasm_hash or sha256(wasm)
        k = self.key(wasm_hash)
        with self._lock:
            mod = self._mem.get(k)
            if mod is not None:
                self._mem.move_to_end(k)
                self.hits_memory += 1
                return mod
        mod = self._load_disk(wasm_hash)
        if mod is None:
            mod = wasmtime.Module(self.se.engine, wasm)
            self.compiles += 1
            self._store_disk(wasm_hash, mod)
        else:
            self.hits_disk += 1
        with self._lock:
            self._mem[k] = mod
            while len(self._mem) > self._entries:
                self._mem.popitem(last=False)
        return mod

    def _load_disk(self, wasm_hash: bytes) -> wasmtime.Module | None:
        path = self.path_for(wasm_hash)
        if path is None or not path.exists():
            return None
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        head = len(_MAGIC) + 32
        if len(raw) < head or raw[: len(_MAGIC)] != _MAGIC or sha256(raw[head:]) != raw[len(_MAGIC) : head]:
            return None  # corrupt or foreign: recompile and overwrite
        try:
            return wasmtime.Module.deserialize(self.se.engine, raw[head:])
        except wasmtime.WasmtimeError:
            return None

    def _store_disk(self, wasm_hash: bytes, mod: wasmtime.Module) -> None:
        path = self.path_for(wasm_hash)
        if path is None:
            return
        blob = bytes(mod.serialize())
        tmp = path.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
        try:
            tmp.write_bytes(_MAGIC + sha256(blob) + blob)
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)  # a cache that cannot write is only slower, never wrong

    def clear_memory(self) -> None:
        with self._lock:
            self._mem.clear()
