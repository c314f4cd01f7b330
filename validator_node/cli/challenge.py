"""`validator-node challenge new|build|inspect|test`: the challenge author's commands.

Output is a stable contract (scripts and CI parse it):

* `new NAME --lang zig|c|wat|rust|assemblyscript [--dir PARENT]`: creates PARENT/NAME; prints its path.
* `build PATH`: first line `<sha256>  <module path>`; then `vectors: N/N match the reference` when the
  challenge has vectors. Exit 0 built and valid, 1 build/validation/vector failure, 2 unusable path.
* `inspect MODULE.wasm [--json]`: `key: value` lines (module, sha256, size, abi_version, imports,
  exports, validation, describe). Exit 0 valid, 1 rejected, 2 unreadable.
* `test MODULE.wasm --task F --submission F [--policy F] [--json]`: with `--json` exactly one JSON
  object {ok, score, fuel_used, memory_peak, duration_ms, error: null | {kind, message}}. Exit 0
  whenever the evaluation ran (whatever its verdict, a rejected module included), 2 for unusable
  arguments or files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="challenge_command", metavar="SUBCOMMAND")

    p = sub.add_parser("new", help="scaffold a buildable, testable challenge")
    p.add_argument("name")
    from challenges.toolkit import LANGS

    p.add_argument("--lang", choices=LANGS, required=True)
    p.add_argument("--dir", default=".", help="parent directory (default: current directory)")
    p.set_defaults(func=cmd_new)

    p = sub.add_parser("build", help="build a challenge reproducibly and print its module hash")
    p.add_argument("path", help="challenge directory (holding challenge.toml)")
    p.add_argument("--no-vectors", action="store_true", help="skip checking vectors.json against the module")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("inspect", help="show a module's exports, imports, ABI version, hash and validity")
    p.add_argument("module")
    p.add_argument("--policy", help="policy file (TOML or JSON; a challenge.toml works)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("test", help="run one evaluation under a policy")
    p.add_argument("module")
    p.add_argument("--task", required=True)
    p.add_argument("--submission", required=True)
    p.add_argument(
        "--policy", help="policy file (TOML or JSON; a challenge.toml works); default policy otherwise"
    )
    p.add_argument("--seed", default="00" * 32, help="32-byte seed as hex (platform.seed)")
    p.add_argument("--block-height", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_test)


def _err(msg: str) -> None:
    print(f"validator-node challenge: {msg}", file=sys.stderr)


def _read(path: str, what: str) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        _err(f"cannot read {what} {path}: {exc.strerror or exc}")
        return None


WASM_MAGIC = b"\0asm"


def _read_module(path: str) -> bytes | None:
    """A module file's bytes; WAT text is compiled with wat2wasm first (and the author told so).

    The network only ever sees binary modules (a manifest names the binary's sha256), so what is
    inspected or tested is the compiled binary, exactly as `challenge build` would write it."""
    data = _read(path, "module")
    if data is None or data.startswith(WASM_MAGIC) or not _looks_like_wat(data):
        return data
    import wasmtime

    try:
        wasm = bytes(wasmtime.wat2wasm(data.decode("utf-8")))
    except (UnicodeDecodeError, wasmtime.WasmtimeError) as exc:
        _err(f"{path} is neither a wasm binary nor valid WAT text: {str(exc).strip().splitlines()[0]}")
        return None
    print(f"note: {path} is WAT text; using its wat2wasm binary ({len(wasm)} bytes)", file=sys.stderr)
    return wasm


def _looks_like_wat(data: bytes) -> bool:
    head = data[:4096].lstrip()
    while head.startswith(b";;"):  # line comments before the module
        head = head.split(b"\n", 1)[1].lstrip() if b"\n" in head else b""
    return head.startswith(b"(")


def _policy(path: str | None) -> Any:
    from runtime.policy import Policy, PolicyError

    if path is None:
        return Policy()
    try:
        return Policy.from_file(path)
    except OSError as exc:
        _err(f"cannot read policy {path}: {exc.strerror or exc}")
    except PolicyError as exc:
        _err(f"bad policy {path}: {exc}")
    return None


def cmd_new(args: argparse.Namespace) -> int:
    from challenges.toolkit import ChallengeError, scaffold

    target = Path(args.dir) / args.name
    try:
        scaffold(target, args.name, args.lang)
    except (ChallengeError, OSError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    print(target)
    print(f"next: validator-node challenge build {target}", file=sys.stderr)
    return EXIT_OK


def cmd_build(args: argparse.Namespace) -> int:
    from challenges.toolkit import ChallengeError, build, load_reference, load_spec, read_vectors
    from runtime.errors import ModuleRejected
    from runtime.policy import Policy, PolicyError
    from runtime.sandbox import Sandbox

    try:
        spec = load_spec(args.path)
        policy = Policy.from_dict(spec.policy)
    except (ChallengeError, PolicyError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    try:
        wasm = build(spec.directory, write=True)
    except ChallengeError as exc:
        _err(f"build failed: {exc}")
        return EXIT_FAIL
    print(f"{hashlib.sha256(wasm).hexdigest()}  {spec.module_path}")
    sandbox = Sandbox()
    try:
        loaded = sandbox.load(wasm, policy)
    except ModuleRejected as exc:
        _err(f"built module fails validation: {exc.kind}: {exc.message}")
        return EXIT_FAIL
    if args.no_vectors or not (spec.directory / "vectors.json").is_file():
        return EXIT_OK
    try:
        from challenges.toolkit import write_vectors

        if (spec.directory / "reference.py").is_file():
            load_reference(spec.directory)
            write_vectors(spec.directory)  # the reference is the source of truth for expected scores
        vectors = read_vectors(spec.directory)
    except Exception as exc:  # an author's reference.py can raise anything
        _err(f"cannot read vectors: {_where(exc, spec.directory)}{type(exc).__name__}: {exc}")
        return EXIT_FAIL
    bad = []
    for name, task, sub, want in vectors:
        r = sandbox.evaluate(loaded, task, sub)
        got = r.score if r.ok else _code(r)
        if got != want:
            bad.append(f"{name}: module {got if got is not None else r.error_kind}, reference {want}")
    print(f"vectors: {len(vectors) - len(bad)}/{len(vectors)} match the reference")
    for line in bad:
        _err(line)
    return EXIT_FAIL if bad else EXIT_OK


def _where(exc: BaseException, directory: Path) -> str:
    """`reference.py:12 in score: ` for the innermost frame in the author's own files (else '')."""
    import traceback

    root = directory.resolve()
    frames = [
        f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).resolve().is_relative_to(root)
    ]
    if not frames:
        return ""
    f = frames[-1]
    return f"{Path(f.filename).resolve().relative_to(root)}:{f.lineno} in {f.name}: "


def _code(r: Any) -> int | None:
    from runtime import errors

    if r.error_kind == errors.MODULE_ERROR and r.error_message:
        return int(r.error_message.rsplit(" ", 1)[-1])
    return None


def cmd_inspect(args: argparse.Namespace) -> int:
    import wasmtime

    from runtime.engine import default_engine
    from runtime.errors import ModuleRejected
    from runtime.sandbox import Sandbox

    wasm = _read_module(args.module)
    policy = _policy(args.policy) if args.policy else _policy(None)
    if wasm is None or policy is None:
        return EXIT_USAGE
    out: dict[str, Any] = {
        "module": args.module,
        "sha256": hashlib.sha256(wasm).hexdigest(),
        "size": len(wasm),
        "abi_version": None,
        "imports": [],
        "exports": [],
        "valid": False,
        "validation": "",
        "describe": None,
    }
    # list imports/exports even for a module that validation refuses (if wasmtime can parse it at all)
    try:
        if len(wasm) <= policy.max_module_bytes:
            mod = wasmtime.Module(default_engine().engine, wasm)
            out["imports"] = [f"{i.module}.{i.name}: {_ty(i.type)}" for i in mod.imports]
            out["exports"] = [f"{e.name}: {_ty(e.type)}" for e in mod.exports]
    except wasmtime.WasmtimeError:
        pass
    sandbox = Sandbox()
    try:
        loaded = sandbox.load(wasm, policy)
        out["valid"], out["validation"], out["abi_version"] = True, "ok", loaded.info.abi_version
        if loaded.info.has_describe:
            data, r = sandbox.call_packed(loaded, "describe")
            out["describe"] = (
                data.decode("utf-8", "replace") if data is not None else f"error: {r.error_kind}"
            )
    except ModuleRejected as exc:
        out["validation"] = f"rejected ({exc.kind}: {exc.message})"
    if args.json:
        print(json.dumps(out, sort_keys=True))
    else:
        for key in (
            "module",
            "sha256",
            "size",
            "abi_version",
            "imports",
            "exports",
            "validation",
            "describe",
        ):
            val = out[key]
            if isinstance(val, list):
                lines = val or ["(none)"]
                print(f"{key + ':':<13}{lines[0]}")
                for extra in lines[1:]:
                    print(" " * 13 + extra)
            else:
                print(f"{key + ':':<13}{'-' if val is None else val}")
    return EXIT_OK if out["valid"] else EXIT_FAIL


def _ty(t: Any) -> str:
    import wasmtime

    if isinstance(t, wasmtime.FuncType):
        return f"func ({', '.join(str(p) for p in t.params)}) -> ({', '.join(str(r) for r in t.results)})"
    if isinstance(t, wasmtime.MemoryType):
        return f"memory {t.limits.min}" + (f"..{t.limits.max}" if t.limits.max is not None else "") + " pages"
    if isinstance(t, wasmtime.TableType):
        return f"table {t.limits.min}"
    if isinstance(t, wasmtime.GlobalType):
        return f"global {t.content}"
    return type(t).__name__


def cmd_test(args: argparse.Namespace) -> int:
    from runtime.errors import ModuleRejected
    from runtime.sandbox import EvalResult, Sandbox

    wasm = _read_module(args.module)
    task = _read(args.task, "task")
    sub = _read(args.submission, "submission")
    policy = _policy(args.policy)
    if wasm is None or task is None or sub is None or policy is None:
        return EXIT_USAGE
    try:
        seed = bytes.fromhex(args.seed)
    except ValueError:
        seed = b""
    if len(seed) != 32:
        _err("--seed must be 64 hex characters (32 bytes)")
        return EXIT_USAGE
    from registry.manifest import MAX_TASK_BYTES

    if len(task) > MAX_TASK_BYTES:
        print(
            f"note: the task is {len(task)} bytes; a manifest carries at most {MAX_TASK_BYTES} "
            "(derive larger tasks inside the module from platform.seed)",
            file=sys.stderr,
        )
    sandbox = Sandbox()
    try:
        loaded = sandbox.load(wasm, policy)
        r = sandbox.evaluate(loaded, task, sub, seed=seed, block_height=args.block_height)
    except ModuleRejected as exc:
        r = EvalResult(False, None, 0, 0, 0.0, exc.kind, exc.message)
    if args.json:
        print(json.dumps(r.to_json()))
    elif r.ok:
        print(
            f"ok score={r.score} fuel_used={r.fuel_used} memory_peak={r.memory_peak} "
            f"duration_ms={r.duration_ms:.3f}"
        )
    else:
        print(
            f"error {r.error_kind}: {r.error_message} fuel_used={r.fuel_used} memory_peak={r.memory_peak} "
            f"duration_ms={r.duration_ms:.3f}"
        )
    for line in r.logs:
        print(f"log: {line.decode('utf-8', 'replace')}", file=sys.stderr)
    return EXIT_OK
