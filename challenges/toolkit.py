"""The challenge author's toolkit: read a challenge directory, build its module reproducibly, and
check it against the Python reference through shared test vectors.

A challenge directory holds `challenge.toml` ([challenge] name, lang, source, module; [policy] the
sandbox policy), the source, the built module (committed), `reference.py` (a Python implementation
with `score(task, submission) -> int` and `vector_cases() -> [(name, task, submission)]`) and
`vectors.json` (generated from the reference; the module must reproduce every score).

Builds use only PyPI tools: Zig and `zig cc` from the pinned `ziglang` wheel, WAT via wasmtime.
Zig's caches go outside the repository (`$PV_ZIG_CACHE`, default `~/.cache/platform-validator/zig`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

SDK_DIR = Path(__file__).resolve().parent / "sdk"
LANGS = ("zig", "c", "wat")
VECTORS_FILE = "vectors.json"


class ChallengeError(Exception):
    """A challenge directory or build is unusable; the message says why."""


@dataclass(frozen=True)
class ChallengeSpec:
    directory: Path
    name: str
    lang: str
    source: str
    module: str
    description: str = ""
    policy: dict[str, Any] = field(default_factory=dict)

    @property
    def module_path(self) -> Path:
        return self.directory / self.module

    @property
    def source_path(self) -> Path:
        return self.directory / self.source


def load_spec(directory: str | Path) -> ChallengeSpec:
    d = Path(directory)
    manifest = d / "challenge.toml"
    if not manifest.is_file():
        raise ChallengeError(f"{d}: no challenge.toml")
    try:
        doc = tomllib.loads(manifest.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ChallengeError(f"{manifest}: {exc}") from None
    ch = doc.get("challenge", {})
    missing = [k for k in ("name", "lang", "source", "module") if not isinstance(ch.get(k), str)]
    if missing:
        raise ChallengeError(f"{manifest}: [challenge] needs {', '.join(missing)}")
    if ch["lang"] not in LANGS:
        raise ChallengeError(f"{manifest}: lang must be one of {', '.join(LANGS)}")
    return ChallengeSpec(
        d,
        ch["name"],
        ch["lang"],
        ch["source"],
        ch["module"],
        ch.get("description", ""),
        doc.get("policy", {}),
    )


def zig_cache_dir() -> Path:
    env = os.environ.get("PV_ZIG_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "platform-validator" / "zig"


def _zig(args: list[str], cwd: Path) -> None:
    cache = zig_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ZIG_GLOBAL_CACHE_DIR": str(cache), "ZIG_LOCAL_CACHE_DIR": str(cache)}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "ziglang", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    except FileNotFoundError as exc:
        raise ChallengeError(f"cannot run zig: {exc}") from None
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip()
        if "No module named ziglang" in err:
            err = "the ziglang package is not installed (pip install -e '.[dev]')"
        raise ChallengeError(f"zig failed:\n{err}")


def build_commands(spec: ChallengeSpec, out: Path) -> list[str]:
    """The exact compiler arguments (documented, so authors can build by hand)."""
    src = str(spec.source_path.resolve())
    if spec.lang == "zig":
        return [
            "build-exe", "-fno-entry", "-rdynamic", "-fstrip",
            "-target", "wasm32-freestanding", "-O", "ReleaseSmall", "--dep", "challenge", f"-Mroot={src}",
            "-target", "wasm32-freestanding", "-O", "ReleaseSmall",
            f"-Mchallenge={SDK_DIR / 'zig' / 'challenge.zig'}",
            f"-femit-bin={out}",
        ]  # fmt: skip
    if spec.lang == "c":
        return [
            "cc", "--target=wasm32-freestanding", "-O2", "-s", "-nostdlib", "-mbulk-memory",
            "-Wl,--no-entry", f"-I{SDK_DIR / 'c'}", "-o", str(out), src,
        ]  # fmt: skip
    return []


def build(directory: str | Path, write: bool = False) -> bytes:
    """Build the challenge's module from source and return its bytes (and write it if `write`)."""
    spec = load_spec(directory)
    if not spec.source_path.is_file():
        raise ChallengeError(f"{spec.source_path}: source file missing")
    if spec.lang == "wat":
        import wasmtime

        try:
            wasm = bytes(wasmtime.wat2wasm(spec.source_path.read_text(encoding="utf-8")))
        except wasmtime.WasmtimeError as exc:
            raise ChallengeError(f"wat2wasm failed: {exc}") from None
    else:
        with tempfile.TemporaryDirectory(prefix="pv-build-") as tmp:
            out = Path(tmp) / "out.wasm"
            _zig(build_commands(spec, out), cwd=Path(tmp))
            wasm = out.read_bytes()
    if write:
        spec.module_path.write_bytes(wasm)
    return wasm


def load_reference(directory: str | Path) -> ModuleType:
    path = Path(directory) / "reference.py"
    if not path.is_file():
        raise ChallengeError(f"{path}: no Python reference")
    name = f"_challenge_ref_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def make_vectors(directory: str | Path) -> list[dict[str, Any]]:
    """Vectors from the reference: `vector_cases()` gives inputs, `score()` the expected scores."""
    ref = load_reference(directory)
    return [
        {"name": name, "task": task.hex(), "submission": sub.hex(), "score": ref.score(task, sub)}
        for name, task, sub in ref.vector_cases()
    ]


def write_vectors(directory: str | Path) -> Path:
    path = Path(directory) / VECTORS_FILE
    spec = load_spec(directory)
    doc: dict[str, Any] = {"challenge": spec.name, "vectors": make_vectors(directory)}
    agg = make_aggregate_vectors(directory)
    if agg:
        doc["aggregate"] = agg
    path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return path


def make_aggregate_vectors(directory: str | Path) -> list[dict[str, Any]]:
    """Vectors for the `aggregate` export, if the reference has `aggregate_cases()` and `aggregate()`.

    Each holds the input and either the output bytes (`output`, hex) or the error code (`code`), so a
    module exporting `aggregate` is checked byte for byte like `evaluate` is checked score for score.
    """
    ref = load_reference(directory)
    if not (hasattr(ref, "aggregate_cases") and hasattr(ref, "aggregate")):
        return []
    out = []
    for name, data in ref.aggregate_cases():
        res = ref.aggregate(data)
        row: dict[str, Any] = {"name": name, "input": data.hex()}
        if isinstance(res, int):
            row["code"] = res
        else:
            row["output"] = bytes(res).hex()
        out.append(row)
    return out


def read_aggregate_vectors(directory: str | Path) -> list[tuple[str, bytes, bytes | int]]:
    """(name, input, output bytes or error code) for every `aggregate` vector in vectors.json."""
    doc = json.loads((Path(directory) / VECTORS_FILE).read_text(encoding="utf-8"))
    return [
        (
            v["name"],
            bytes.fromhex(v["input"]),
            bytes.fromhex(v["output"]) if "output" in v else int(v["code"]),
        )
        for v in doc.get("aggregate", [])
    ]


def read_vectors(directory: str | Path) -> list[tuple[str, bytes, bytes, int]]:
    doc = json.loads((Path(directory) / VECTORS_FILE).read_text(encoding="utf-8"))
    return [
        (v["name"], bytes.fromhex(v["task"]), bytes.fromhex(v["submission"]), int(v["score"]))
        for v in doc["vectors"]
    ]


def example_dirs() -> list[Path]:
    """The example challenges shipped in this package."""
    root = Path(__file__).resolve().parent
    return sorted(p for p in root.iterdir() if (p / "challenge.toml").is_file())


TEMPLATES = Path(__file__).resolve().parent / "templates"
_SOURCES = {"zig": "main.zig", "c": "challenge.c", "wat": "challenge.wat"}


def scaffold(directory: str | Path, name: str, lang: str) -> Path:
    """Create a buildable, testable challenge in `directory` (which must not exist or be empty)."""
    import re

    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", name):
        raise ChallengeError(
            "name must be lowercase letters, digits and '-', starting with a letter or digit"
        )
    if lang not in LANGS:
        raise ChallengeError(f"lang must be one of {', '.join(LANGS)}")
    d = Path(directory)
    if d.exists() and any(d.iterdir()):
        raise ChallengeError(f"{d} exists and is not empty")
    d.mkdir(parents=True, exist_ok=True)
    source = _SOURCES[lang]
    describe = f'{{"name":"{name}","abi":1}}'

    def fill(text: str) -> str:
        return (
            text.replace("{{NAME}}", name)
            .replace("{{LANG}}", lang)
            .replace("{{SOURCE}}", source)
            .replace("{{DESCRIBE_LEN}}", str(len(describe)))
        )

    (d / source).write_text(fill((TEMPLATES / lang / source).read_text(encoding="utf-8")), encoding="utf-8")
    (d / "challenge.toml").write_text(
        fill((TEMPLATES / "toml.tmpl").read_text(encoding="utf-8")), encoding="utf-8"
    )
    (d / "reference.py").write_text(
        fill((TEMPLATES / "reference.py.tmpl").read_text(encoding="utf-8")), encoding="utf-8"
    )
    (d / "tasks").mkdir()
    (d / "tasks" / "task.bin").write_bytes(b"hello world")
    (d / "tasks" / "submission.bin").write_bytes(b"hello there")
    write_vectors(d)
    return d
