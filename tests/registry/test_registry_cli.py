"""`validator-node registry keygen|sign|verify|list`, end to end on files in tmp_path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from registry_helpers import ESCAPE_WAT, good_wasm, wasm_of

from registry import RegistryAction
from validator_node.cli import main
from wire import decode, encode

MANIFEST = """
challenge_id = "sum-squares"
name = "Sum of squares"
version = 3
abi_version = 1
emission_share = "0.25"
mechanism_id = 0
activation_epoch = 12
nonce = 7
task = "hello"

[policy]
fuel = 5000000
memory_bytes = 1048576
host_functions = ["log"]
"""


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    wasm = tmp_path / "c.wasm"
    wasm.write_bytes(good_wasm(5))
    (tmp_path / "other.wasm").write_bytes(good_wasm(6))
    (tmp_path / "c.toml").write_text(MANIFEST)
    return {"dir": tmp_path, "wasm": wasm, "toml": tmp_path / "c.toml", "key": tmp_path / "keys" / "sudo.key"}


def cli(*argv: str) -> int:
    return main([str(a) for a in argv])


def test_keygen_sign_verify(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("registry", "keygen", "--out", files["key"]) == 0
    out = capsys.readouterr().out
    ss58 = out.split("ss58 ")[1].split()[0]
    assert files["key"].stat().st_mode & 0o777 == 0o600
    assert cli("registry", "keygen", "--out", files["key"]) == 2  # never overwrites silently

    assert (
        cli("registry", "sign", files["toml"], "--wasm", files["wasm"], "--netuid", 9, "--key", files["key"])
        == 0
    )
    signed = files["dir"] / "c.signed"
    action = decode(signed.read_bytes(), RegistryAction)
    assert action.op == "add" and action.signed.netuid == 9
    capsys.readouterr()

    assert cli("registry", "verify", signed, "--sudo", ss58, "--wasm", files["wasm"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("valid: add sum-squares v3") and "share 0.250000000" in line and ss58 in line
    assert "passes the runtime's validation" in line or "module matches" in line


def test_verify_refuses_with_the_reason(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    cli("registry", "sign", files["toml"], "--wasm", files["wasm"], "--netuid", 9, "--dev-key", "owner")
    signed = files["dir"] / "c.signed"
    capsys.readouterr()

    def verify(*extra: object) -> str:
        assert cli("registry", "verify", *extra) == 1
        return capsys.readouterr().out.strip()

    assert verify(signed, "--wasm", files["dir"] / "other.wasm", "--no-runtime").startswith(
        "invalid: hash_mismatch"
    )
    assert verify(signed, "--sudo", "5F7b9vHsLRtK5oQgsD6DbpJNB3eYJxb7eQydfB9oE41z3eW6").startswith(
        "invalid: wrong_signer"
    )
    assert verify(signed, "--netuid", 10).startswith("invalid: wrong_netuid")
    # tamper: flip the activation epoch inside the signed body
    action = decode(signed.read_bytes(), RegistryAction)
    body = action.signed.body.replace(b"hello", b"hellO")
    tampered = files["dir"] / "t.signed"
    tampered.write_bytes(encode(RegistryAction(op="add", signed=type(action.signed)(**{
        **action.signed.__dict__, "body": body}))))  # fmt: skip
    assert verify(tampered).startswith("invalid: bad_signature")
    garbage = files["dir"] / "g.signed"
    garbage.write_bytes(b"\xa1\x01\x02")
    assert verify(garbage).startswith("invalid: malformed")
    mech = MANIFEST.replace("mechanism_id = 0", "mechanism_id = 1")
    (files["dir"] / "m.toml").write_text(mech)
    cli(
        "registry",
        "sign",
        files["dir"] / "m.toml",
        "--wasm",
        files["wasm"],
        "--netuid",
        9,
        "--dev-key",
        "owner",
    )
    capsys.readouterr()
    assert verify(files["dir"] / "m.signed").startswith("invalid: unknown_mechanism")


def test_verify_runs_the_runtime_on_the_module(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("runtime.validation")
    escape = files["dir"] / "escape.wasm"
    escape.write_bytes(wasm_of(ESCAPE_WAT))
    # `sign` refuses such a module; `--no-runtime` signs it anyway, and `verify` still catches it
    assert cli("registry", "sign", files["toml"], "--wasm", escape, "--netuid", 9, "--dev-key", "owner") == 2
    err = capsys.readouterr().err
    assert "refusing to sign: module_rejected: forbidden_import" in err and "env.system" in err
    assert not (files["dir"] / "c.signed").exists()
    cli(
        "registry",
        "sign",
        files["toml"],
        "--wasm",
        escape,
        "--netuid",
        9,
        "--dev-key",
        "owner",
        "--no-runtime",
    )
    capsys.readouterr()
    assert cli("registry", "verify", files["dir"] / "c.signed", "--wasm", escape) == 1
    assert capsys.readouterr().out.startswith("invalid: module_rejected")


def test_sign_names_bad_task_and_hex_in_one_line(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from registry.manifest import MAX_TASK_BYTES

    (files["dir"] / "folder").mkdir()
    (files["dir"] / "big.bin").write_bytes(b"x" * (MAX_TASK_BYTES + 1))
    base = MANIFEST.replace('task = "hello"\n', "")
    for extra, reason in (
        ('task_file = "missing.bin"', "task_file"),
        ('task_file = "folder"', "task_file"),
        ('task_hex = "zz"', "task_hex is not hex"),
        ('task_file = "big.bin"', f"a manifest carries at most {MAX_TASK_BYTES}"),
        ('task = "x"\nwasm_sha256 = "nothex"', "wasm_sha256 is not hex"),
    ):
        (files["dir"] / "bad.toml").write_text(extra + "\n" + base)
        code = cli("registry", "sign", files["dir"] / "bad.toml", "--wasm", files["wasm"], "--netuid", 9,
                   "--dev-key", "owner")  # fmt: skip
        err = capsys.readouterr().err
        assert code == 2 and reason in err and "Traceback" not in err, (extra, err)
        assert len(err.strip().splitlines()) == 1


def test_sign_refuses_bad_manifests(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    for bad, reason in (
        (MANIFEST.replace('"0.25"', '"1.5"'), "emission_share"),
        (MANIFEST.replace('"0.25"', '"0.1234567891"'), "9 decimal places"),
        (MANIFEST.replace("abi_version = 1", "abi_version = 9"), "ABI version 9"),
        ("wasm_sha256 = '" + "00" * 32 + "'\n" + MANIFEST, "other than the --wasm file"),
        (MANIFEST.replace("nonce = 7", "nonce = 7\ncolour = 1"), "colour"),
    ):
        (files["dir"] / "bad.toml").write_text(bad)
        code = cli("registry", "sign", files["dir"] / "bad.toml", "--wasm", files["wasm"], "--netuid", 9,
                   "--dev-key", "owner")  # fmt: skip
        assert code == 2
        assert reason in capsys.readouterr().err
    assert cli("registry", "sign", files["toml"], "--wasm", files["wasm"], "--netuid", 9) == 2  # no key


def test_list(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    cli("registry", "sign", files["toml"], "--wasm", files["wasm"], "--netuid", 9, "--dev-key", "owner")
    capsys.readouterr()
    assert cli("registry", "list", files["dir"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert "c.signed: add sum-squares v3" in line
    (files["dir"] / "junk.signed").write_bytes(b"junk")
    assert cli("registry", "list", files["dir"]) == 1
    assert "INVALID malformed" in capsys.readouterr().out


def test_the_installed_entry_point(files: dict[str, Path]) -> None:
    exe = Path(sys.executable).parent / "validator-node"
    signed = files["dir"] / "c.signed"
    subprocess.run([exe, "registry", "sign", files["toml"], "--wasm", files["wasm"], "--netuid", "9",
                    "--dev-key", "owner", "--out", signed], check=True, capture_output=True)  # fmt: skip
    ok = subprocess.run([exe, "registry", "verify", signed], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.startswith("valid: ") and len(ok.stdout.splitlines()) == 1
    bad = subprocess.run([exe, "registry", "verify", signed, "--netuid", "1"], capture_output=True, text=True)
    assert bad.returncode == 1 and "wrong_netuid" in bad.stdout
