"""The challenge author's toolkit: read a challenge directory, build its module reproducibly, and
check it against the Python reference through shared test vectors.

A challenge directory holds `challenge.toml` ([challenge] name, lang, source, module; [policy] the
sandbox policy), the source, the built module (committed), `reference.py` (a Python implementation
with `score(task, submission) -> int` and `vector_cases() -> [(name, task, submission)]`) and
`vectors.json` (generated from the reference; the module must reproduce every score).

Builds use pinned toolchains, so a module rebuilds byte for byte in any directory: Zig and `zig cc`
from the pinned `ziglang` wheel (PyPI), WAT via wasmtime, Rust with Debian bookworm's rustc 1.63
(`/usr/bin/rustc` and `/usr/bin/rust-lld`, never a rustup toolchain; `scripts/ensure-system-deps.sh`
installs them), AssemblyScript with an exact `asc` from npm, installed on first use. Caches go
outside the repository: `$PV_ZIG_CACHE` (default `~/.cache/platform-validator/zig`) and
`$PV_ASC_CACHE` (default `~/.cache/platform-validator/assemblyscript`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

SDK_DIR = Path(__file__).resolve().parent / "sdk"
LANGS = ("zig", "c", "wat", "rust", "assemblyscript")
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


# Rust: Debian bookworm's compiler, by absolute path (a rustup `rustc` earlier in PATH is never used).
RUSTC = "/usr/bin/rustc"
RUST_LLD = "/usr/bin/rust-lld"  # rustc's symlink to lld-14
RUSTC_VERSION = "1.63.0"
RUST_WASM_STD = "/usr/lib/rustlib/wasm32-unknown-unknown/lib"  # libstd-rust-dev-wasm32
_SETUP_HINT = "run scripts/ensure-system-deps.sh as root"

# AssemblyScript: exact versions; `long` is a ranged dependency of assemblyscript, so it is pinned too
# (binaryen is pinned exactly by assemblyscript itself).
ASC_VERSION = "0.28.20"
ASC_PACKAGES = (f"assemblyscript@{ASC_VERSION}", "long@5.3.2")


def asc_cache_dir() -> Path:
    env = os.environ.get("PV_ASC_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "platform-validator" / "assemblyscript"


def _asc_script() -> Path:
    return asc_cache_dir() / ASC_VERSION / "node_modules" / "assemblyscript" / "bin" / "asc.js"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        raise ChallengeError(f"node not found (AssemblyScript needs Node.js): {_SETUP_HINT}")
    return node


def ensure_asc() -> Path:
    """The pinned `asc`, installed with npm into the cache on first use (one `npm install`)."""
    script = _asc_script()
    if script.is_file():
        return script
    npm = shutil.which("npm")
    if npm is None:
        raise ChallengeError(f"npm not found (needed once to install AssemblyScript): {_SETUP_HINT}")
    final = asc_cache_dir() / ASC_VERSION
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{ASC_VERSION}-", dir=final.parent))
    staging.chmod(0o755)
    try:
        cmd = [npm, "install", "--prefix", str(staging), "--no-save", "--no-package-lock", "--no-audit",
               "--no-fund", "--ignore-scripts", "--loglevel=error", *ASC_PACKAGES]  # fmt: skip
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            raise ChallengeError(f"npm install {' '.join(ASC_PACKAGES)} timed out") from None
        if proc.returncode != 0:
            err = (proc.stderr or proc.stdout).strip().splitlines()
            raise ChallengeError(
                f"npm install {' '.join(ASC_PACKAGES)} failed: {err[-1] if err else proc.returncode}"
            )
        try:
            staging.rename(final)  # atomic: a concurrent build may have won, then use its copy
        except OSError:
            if not script.is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not script.is_file():
        raise ChallengeError(f"npm installed no {script}")
    return script


def _check_rust() -> None:
    """One clear line when Debian's Rust toolchain for wasm32 is missing or not the pinned version."""
    if not Path(RUSTC).is_file():
        raise ChallengeError(f"rustc not found at {RUSTC} (Debian's rustc {RUSTC_VERSION}): {_SETUP_HINT}")
    if not Path(RUST_WASM_STD).is_dir():
        raise ChallengeError(
            f"Rust's wasm32 standard library is missing (libstd-rust-dev-wasm32): {_SETUP_HINT}"
        )
    if not Path(RUST_LLD).exists():  # follows the symlink: lld-14 must be installed
        raise ChallengeError(f"{RUST_LLD} is missing (lld-14): {_SETUP_HINT}")
    proc = subprocess.run([RUSTC, "--version"], capture_output=True, text=True, timeout=60)
    version = proc.stdout.split()[1] if proc.returncode == 0 and proc.stdout.split()[1:] else "?"
    if version != RUSTC_VERSION:
        raise ChallengeError(
            f"{RUSTC} is rustc {version}, builds are pinned to Debian bookworm's {RUSTC_VERSION}"
        )


def _run(tool: str, argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    try:
        proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    except FileNotFoundError as exc:
        raise ChallengeError(f"cannot run {tool}: {exc}") from None
    except subprocess.TimeoutExpired:
        raise ChallengeError(f"{tool} timed out") from None
    if proc.returncode != 0:
        raise ChallengeError(f"{tool} failed:\n{(proc.stderr or proc.stdout).strip()}")


def build_steps(spec: ChallengeSpec, out: Path, work: Path) -> list[list[str]]:
    """Every command (full argv) that builds `spec` into `out`, using `work` as a scratch directory.

    Nothing in the output depends on where the source, the SDK or `work` is: Rust remaps every path
    it could embed (`--remap-path-prefix`), asc names files relative to the source directory.
    """
    src = spec.source_path.resolve()
    if spec.lang in ("zig", "c"):
        return [[sys.executable, "-m", "ziglang", *build_commands(spec, out)]]
    if spec.lang == "rust":
        sdk = SDK_DIR / "rust"
        common = [
            "--edition", "2021", "--target", "wasm32-unknown-unknown",
            "-C", "opt-level=3", "-C", "panic=abort", "-C", "codegen-units=1", "-C", "debuginfo=0",
            f"--remap-path-prefix={sdk}=sdk", f"--remap-path-prefix={work}=build",
        ]  # fmt: skip
        rlib = work / "libchallenge.rlib"
        return [
            [RUSTC, *common, "--crate-type", "rlib", "--crate-name", "challenge", "-o", str(rlib),
             str(sdk / "challenge.rs")],
            [RUSTC, *common, "--crate-type", "cdylib", "--crate-name", "challenge_module",
             "-C", "lto", "-C", "strip=symbols", "-C", f"linker={RUST_LLD}",
             "--extern", f"challenge={rlib}", "-L", str(work),
             f"--remap-path-prefix={src.parent}=src", "-o", str(out), str(src)],
        ]  # fmt: skip
    if spec.lang == "assemblyscript":
        # `import ... from "challenge"` resolves through --path to <work>/lib/challenge/index.ts (a
        # copy of the SDK), named `~lib/challenge/index.ts` inside asc; --config points at an empty
        # config so an asconfig.json next to the source cannot change the options.
        return [
            [_node(), str(_asc_script()), src.name, "--baseDir", str(src.parent),
             "--config", str(work / "asconfig.json"), "--path", str(work / "lib"),
             "-O3", "--runtime", "stub", "--use", "abort=", "--noColors", "-o", str(out)],
        ]  # fmt: skip
    return []


def _rust_env() -> dict[str, str]:
    """rustc's environment without anything that could change its output or pick another linker."""
    drop = ("RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "RUSTC_BOOTSTRAP", "RUSTUP_TOOLCHAIN", "RUSTC_WRAPPER")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PATH"] = "/usr/bin:/bin"
    return env


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
            work = Path(tmp)
            out = work / "out.wasm"
            if spec.lang in ("zig", "c"):
                _zig(build_commands(spec, out), cwd=work)
            elif spec.lang == "rust":
                _check_rust()
                for argv in build_steps(spec, out, work):
                    _run("rustc", argv, cwd=work, env=_rust_env())
            else:  # assemblyscript
                _node()
                ensure_asc()
                sdk = work / "lib" / "challenge"
                sdk.mkdir(parents=True)
                shutil.copyfile(SDK_DIR / "assemblyscript" / "challenge.ts", sdk / "index.ts")
                (work / "asconfig.json").write_text("{}\n", encoding="utf-8")
                for argv in build_steps(spec, out, work):
                    _run("asc", argv, cwd=work)
            if not out.is_file():
                raise ChallengeError(f"{spec.lang} build wrote no module")
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
_SOURCES = {
    "zig": "main.zig",
    "c": "challenge.c",
    "wat": "challenge.wat",
    "rust": "lib.rs",
    "assemblyscript": "index.ts",
}


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
