"""`validator-node challenge ...` and `validator-node audit verify`: the output contracts and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import rt_modules as M
from rt_helpers import SUBMISSION, TASK

from challenges.toolkit import example_dirs, load_spec
from runtime.audit import AuditLog, default_path
from runtime.sandbox import Sandbox
from validator_node.cli import main

JSON_KEYS = {"ok", "score", "fuel_used", "memory_peak", "duration_ms", "error"}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("lang", ["zig", "c", "wat", "rust", "assemblyscript"])
def test_new_build_test_each_language(capsys: pytest.CaptureFixture[str], tmp_path: Path, lang: str) -> None:
    code, out, _ = run(capsys, "challenge", "new", f"demo-{lang}", "--lang", lang, "--dir", str(tmp_path))
    d = tmp_path / f"demo-{lang}"
    assert code == 0 and out.strip() == str(d)
    code, out, err = run(capsys, "challenge", "build", str(d))
    assert code == 0, err
    first, second = out.splitlines()
    digest, path = first.split("  ")
    assert len(digest) == 64 and Path(path).read_bytes()
    assert second == "vectors: 5/5 match the reference"
    code, out, _ = run(
        capsys, "challenge", "test", path, "--task", str(d / "tasks/task.bin"),
        "--submission", str(d / "tasks/submission.bin"), "--policy", str(d / "challenge.toml"), "--json",
    )  # fmt: skip
    doc = json.loads(out)
    assert code == 0 and set(doc) == JSON_KEYS
    assert doc["ok"] is True and doc["score"] == 1_000_000_000 * 6 // 11 and doc["error"] is None


def test_new_refuses_existing_dir_and_bad_name(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "x" / "f").mkdir(parents=True)
    assert run(capsys, "challenge", "new", "x", "--lang", "c", "--dir", str(tmp_path))[0] == 2
    assert run(capsys, "challenge", "new", "Bad_Name", "--lang", "c", "--dir", str(tmp_path))[0] == 2


def test_test_reports_hostile_verdicts_with_exit_0(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "t").write_bytes(TASK)
    (tmp_path / "s").write_bytes(SUBMISSION)
    (tmp_path / "loop.wasm").write_bytes(M.wasm(M.INFINITE_LOOP))
    (tmp_path / "garbage.wasm").write_bytes(b"not wasm at all")
    (tmp_path / "env.wasm").write_bytes(M.wasm(M.FORBIDDEN_ENV))
    (tmp_path / "p.toml").write_text("[policy]\nfuel = 1000000\n")
    for name, kind in (("loop", "out_of_fuel"), ("garbage", "invalid_module"), ("env", "forbidden_import")):
        code, out, _ = run(
            capsys, "challenge", "test", str(tmp_path / f"{name}.wasm"), "--task", str(tmp_path / "t"),
            "--submission", str(tmp_path / "s"), "--policy", str(tmp_path / "p.toml"), "--json",
        )  # fmt: skip
        doc = json.loads(out)
        assert code == 0 and set(doc) == JSON_KEYS
        assert (
            doc["ok"] is False
            and doc["score"] is None
            and doc["error"]["kind"] == kind
            and doc["error"]["message"]
        )


def test_test_unusable_arguments_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    mod = tmp_path / "m.wasm"
    mod.write_bytes(M.wasm(M.EXACT_ONE))
    (tmp_path / "t").write_bytes(b"x")
    (tmp_path / "bad.toml").write_text("[policy]\nfule = 3\n")
    base = ["challenge", "test", str(mod), "--task", str(tmp_path / "t"), "--submission", str(tmp_path / "t")]
    assert run(capsys, *base, "--json")[0] == 0
    assert (
        run(capsys, "challenge", "test", str(tmp_path / "missing.wasm"), "--task", "t", "--submission", "t")[
            0
        ]
        == 2
    )
    assert run(capsys, *base, "--policy", str(tmp_path / "bad.toml"))[0] == 2
    assert run(capsys, *base, "--seed", "abcd")[0] == 2
    with pytest.raises(SystemExit) as ei:
        main(["challenge", "test", str(mod)])  # argparse: missing --task
    assert ei.value.code == 2


def test_inspect(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    ex = next(d for d in example_dirs() if load_spec(d).lang == "zig")
    module = load_spec(ex).module_path
    code, out, _ = run(capsys, "challenge", "inspect", str(module))
    assert code == 0
    fields = {line.split(":", 1)[0] for line in out.splitlines() if not line.startswith(" ")}
    assert fields == {
        "module",
        "sha256",
        "size",
        "abi_version",
        "imports",
        "exports",
        "validation",
        "describe",
    }
    assert "validation:  ok" in out and "evaluate: func (i32, i32, i32, i32) -> (i64)" in out
    bad = tmp_path / "env.wasm"
    bad.write_bytes(M.wasm(M.FORBIDDEN_ENV))
    code, out, _ = run(capsys, "challenge", "inspect", str(bad), "--json")
    doc = json.loads(out)
    assert code == 1 and doc["valid"] is False and doc["validation"].startswith("rejected (forbidden_import")
    assert doc["imports"] == ["env.abort: func (i32) -> ()"]
    assert run(capsys, "challenge", "inspect", str(tmp_path / "nope.wasm"))[0] == 2


def test_audit_verify(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run(capsys, "audit", "verify", "--data-dir", str(tmp_path))[0] == 2
    log = AuditLog(default_path(tmp_path))
    sb = Sandbox(tmp_path, audit=log)
    loaded = sb.load(M.wasm(M.GOOD))
    for _ in range(2):
        sb.evaluate(loaded, TASK, SUBMISSION)
    log.close()
    code, out, _ = run(capsys, "audit", "verify", "--data-dir", str(tmp_path))
    assert code == 0 and out.startswith("ok: 8 records, head ")
    path = default_path(tmp_path)
    lines = path.read_text().splitlines()
    lines[5] = lines[5].replace('"host_call"', '"host_kall"')
    path.write_text("\n".join(lines) + "\n")
    code, out, _ = run(capsys, "audit", "verify", "--file", str(path))
    assert code == 1 and out.startswith("broken: record 5 (line 6): ")
    code, out, _ = run(capsys, "audit", "verify", "--file", str(path), "--json")
    assert json.loads(out)["broken_seq"] == 5


# --- the author's error messages (issue 16): each names the reason and the place ---------------

TRAPS_IN_PARSE = M.abi("(call $parse)", extra="(func $parse (result i64) unreachable)")


def test_trap_names_reason_and_frames(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "m.wasm").write_bytes(M.wasm(TRAPS_IN_PARSE))
    (tmp_path / "t").write_bytes(TASK)
    code, out, _ = run(
        capsys, "challenge", "test", str(tmp_path / "m.wasm"), "--task", str(tmp_path / "t"),
        "--submission", str(tmp_path / "t"), "--json",
    )  # fmt: skip
    err = json.loads(out)["error"]
    assert code == 0 and err["kind"] == "trap"
    # wasmtime's own first line is "error while executing at wasm backtrace:": reason and frames instead
    assert err["message"].startswith("wasm `unreachable` instruction executed (in parse @0x"), err


def test_wat_text_is_compiled_for_inspect_and_test(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "m.wat").write_text(";; a comment first\n" + M.EXACT_ONE)
    (tmp_path / "t").write_bytes(TASK)
    code, out, err = run(capsys, "challenge", "inspect", str(tmp_path / "m.wat"), "--json")
    doc = json.loads(out)
    assert code == 0 and doc["valid"] is True and doc["size"] == len(M.wasm(M.EXACT_ONE))
    assert "is WAT text" in err
    code, out, _ = run(
        capsys, "challenge", "test", str(tmp_path / "m.wat"), "--task", str(tmp_path / "t"),
        "--submission", str(tmp_path / "t"), "--json",
    )  # fmt: skip
    assert code == 0 and json.loads(out)["score"] == 1_000_000_000
    (tmp_path / "bad.wat").write_text("(module (func $f (resultt i32)))")
    code, _, err = run(capsys, "challenge", "inspect", str(tmp_path / "bad.wat"))
    assert code == 2 and "neither a wasm binary nor valid WAT text" in err


def test_policy_without_host_functions_says_so(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "m.wasm").write_bytes(M.wasm(M.GOOD))
    (tmp_path / "p.toml").write_text("[policy]\nhost_functions = []\n")
    code, out, _ = run(
        capsys, "challenge", "inspect", str(tmp_path / "m.wasm"), "--policy", str(tmp_path / "p.toml")
    )
    assert code == 1
    assert "(allowed: )" not in out and "the policy allows no host functions" in out


def test_reference_error_names_file_and_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run(capsys, "challenge", "new", "ref", "--lang", "wat", "--dir", str(tmp_path))[0] == 0
    d = tmp_path / "ref"
    (d / "reference.py").write_text(
        "def score(task, sub):\n    return 1 // 0\n\n\ndef vector_cases():\n    return [('a', b'x', b'y')]\n"
    )
    code, _, err = run(capsys, "challenge", "build", str(d))
    assert code == 1 and "reference.py:2 in score: ZeroDivisionError" in err


def test_task_over_the_manifest_cap_is_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from registry.manifest import MAX_TASK_BYTES

    (tmp_path / "m.wasm").write_bytes(M.wasm(M.EXACT_ONE))
    (tmp_path / "t").write_bytes(b"\0" * (MAX_TASK_BYTES + 1))
    code, _, err = run(
        capsys, "challenge", "test", str(tmp_path / "m.wasm"), "--task", str(tmp_path / "t"),
        "--submission", str(tmp_path / "m.wasm"),
    )  # fmt: skip
    assert code == 0 and f"a manifest carries at most {MAX_TASK_BYTES}" in err
