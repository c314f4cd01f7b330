"""Sandbox policy: the resource budget one evaluation of a challenge module may use.

A policy comes from the challenge's signed manifest, so every validator runs a submission under the
same budget. Only `fuel` decides an outcome that validators must agree on (it is deterministic); the
wall-clock guard is a local safety net against a wasmtime or host bug, set far above what the fuel
budget can take, so an honest validator never reports a timeout that its peers would not.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Host functions a module may import from the `platform` module (ABI v1), with their wasm signatures.
HOST_FUNCTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "log": (("i32", "i32"), ()),
    "seed": (("i32",), ()),
    "block_height": ((), ("i64",)),
}

WASM_PAGE = 65536


class PolicyError(ValueError):
    """A policy document is unusable (unknown key, wrong type, out-of-range value)."""


@dataclass(frozen=True)
class Policy:
    """Limits for one evaluation. Defaults suit a typical scoring kernel (tens of ms of compute)."""

    #: fuel budget per evaluation (instantiate + _initialize + alloc + evaluate). Agreed across validators.
    fuel: int = 1_000_000_000
    #: cap on linear memory, bytes (memory.grow returns -1 beyond it; a module needing more at start fails)
    memory_bytes: int = 64 * 1024 * 1024
    #: cap on table elements across the store
    table_elements: int = 10_000
    #: local wall-clock guard via epoch interruption, milliseconds (never agreed on; see module docstring).
    #: Keep it well above the time the fuel budget can take: a one-instruction loop burns as little as
    #: ~2e8 fuel/s on a loaded 2-core VM, so 1e9 fuel can take ~5 s there.
    wall_clock_ms: int = 20_000
    #: input caps, bytes
    max_task_bytes: int = 1024 * 1024
    max_submission_bytes: int = 1024 * 1024
    #: cap on bytes a module hands out through a packed (ptr << 32 | len) result (describe, aggregate)
    max_output_bytes: int = 64 * 1024
    #: host functions the module may import from `platform`
    host_functions: tuple[str, ...] = ("log", "seed", "block_height")
    #: host calls per evaluation, and total bytes `platform.log` may take
    max_host_calls: int = 1_000
    max_log_bytes: int = 16 * 1024
    #: fuel charged per host call and per logged byte: a call into Python costs ~11 us, which is
    #: ~200k fuel of guest compute, so an uncharged host call would be a free denial of service
    host_call_fuel: int = 100_000
    log_byte_fuel: int = 100
    #: static caps checked before compiling, so a module cannot make registration slow
    max_module_bytes: int = 4 * 1024 * 1024
    max_functions: int = 20_000
    max_function_body_bytes: int = 1024 * 1024
    max_locals: int = 50_000

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "host_functions":
                if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
                    raise PolicyError("host_functions must be a list of names")
                unknown = sorted(set(value) - set(HOST_FUNCTIONS))
                if unknown:
                    raise PolicyError(f"unknown host functions {unknown}; known: {sorted(HOST_FUNCTIONS)}")
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                raise PolicyError(f"{f.name} must be an integer, got {type(value).__name__}")
            if value < 0 or value > 2**63 - 1:
                raise PolicyError(f"{f.name} out of range: {value}")
        if self.fuel == 0:
            raise PolicyError("fuel must be positive (a store with 0 fuel cannot even instantiate)")
        if self.memory_bytes > 4 * 1024**3:
            raise PolicyError("memory_bytes above 4 GiB is impossible for wasm32")
        if self.wall_clock_ms == 0:
            raise PolicyError("wall_clock_ms must be positive")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Policy:
        """Build from a manifest or TOML table; unknown keys are an error, not silently ignored."""
        if not isinstance(data, Mapping):
            raise PolicyError("policy must be a table/mapping")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise PolicyError(f"unknown policy keys {unknown}")
        kwargs = dict(data)
        if "host_functions" in kwargs:
            hf = kwargs["host_functions"]
            if not isinstance(hf, list | tuple):
                raise PolicyError("host_functions must be a list of names")
            kwargs["host_functions"] = tuple(hf)
        return cls(**kwargs)

    @classmethod
    def from_toml(cls, text: str) -> Policy:
        """Parse TOML; the keys may sit at top level or under a `[policy]` table."""
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"bad TOML: {exc}") from None
        return cls.from_dict(doc.get("policy", doc))

    @classmethod
    def from_file(cls, path: str | Path) -> Policy:
        """Load a policy from a `.toml` or `.json` file."""
        p = Path(path)
        text = p.read_text(encoding="utf-8")
        if p.suffix == ".json":
            import json

            try:
                doc = json.loads(text)
            except ValueError as exc:
                raise PolicyError(f"bad JSON: {exc}") from None
            return cls.from_dict(doc.get("policy", doc) if isinstance(doc, dict) else doc)
        return cls.from_toml(text)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["host_functions"] = list(self.host_functions)
        return d
