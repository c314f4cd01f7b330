"""The devnet as the subnet owner's sandbox (issue 16): `validator-node devnet --keep-running`
with an owner key of the user's, then docs/sudo-owner.md's commands as written: a new challenge
built, signed, published and activated, the simulated miners answering it from payload files,
and its scores in the epoch lines; `kill` stops the devnet and every validator it started."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from validator_node.devnet import wait_for_text

ENV = dict(os.environ, PYTHONWARNINGS="ignore::DeprecationWarning")
VN = [sys.executable, "-m", "validator_node.cli"]


def vn(*args: str, cwd: Path) -> str:
    out = subprocess.run([*VN, *args], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=120)
    assert out.returncode == 0, f"{args}: {out.stdout}{out.stderr}"
    return out.stdout


MANIFEST = """[challenge]
challenge_id = "my-challenge"
name = "My challenge"
version = 1
abi_version = 1
emission_share = "0.1"
mechanism_id = 0
task_file = "my-challenge/tasks/task.bin"
activation_epoch = 0
nonce = {nonce}

[challenge.policy]
fuel = 100_000_000
host_functions = []
"""


def test_an_owner_publishes_a_challenge_into_a_running_sandbox_and_sees_it_scored(tmp_path: Path) -> None:
    key = tmp_path / "sudo.key"
    owner_ss58 = vn("registry", "keygen", "--out", str(key), cwd=tmp_path).split("ss58 ")[1].split()[0]
    out = tmp_path / "devnet.out"
    dn = tmp_path / "dn"
    with open(out, "w") as f:
        proc = subprocess.Popen(
            [*VN, "devnet", "--keep-running", "--owner-key", str(key), "--dir", str(dn),
             "--epoch-blocks", "12", "--block-interval", "0.5", "--miners", "3"],
            stdout=f, stderr=subprocess.STDOUT, env=ENV, cwd=tmp_path,
        )  # fmt: skip
    try:
        sheet = wait_for_text(out, r"next free nonce\s+(\d+)", 120)
        text = out.read_text()
        assert f"owner hotkey      {owner_ss58}" in text and f"--key {key}" in text
        assert "free share        mechanism 0: 0.100000000" in text
        nonce = int(sheet.group(1))
        assert nonce == 11  # the devnet's 5 challenges: 5 adds and 5 activations, signed with our key
        validator = re.search(r"(/ip4/127\.0\.0\.1/tcp/\d+/p2p/\w+)", text).group(1)  # type: ignore[union-attr]

        vn("challenge", "new", "my-challenge", "--lang", "wat", cwd=tmp_path)
        vn("challenge", "build", "my-challenge", cwd=tmp_path)
        (tmp_path / "my.manifest.toml").write_text(MANIFEST.format(nonce=nonce))
        wasm = "my-challenge/my-challenge.wasm"
        vn("registry", "sign", "my.manifest.toml", "--wasm", wasm, "--netuid", "7", "--key", str(key),
           "--out", "add.signed", cwd=tmp_path)  # fmt: skip
        reply = vn(
            "registry", "publish", "add.signed", "--wasm", wasm, "--validator", validator, cwd=tmp_path
        )
        assert "pooled; it applies" in reply, reply
        vn("registry", "command", "activate", "my-challenge", "--nonce", str(nonce + 1), "--netuid", "7",
           "--key", str(key), "--out", "activate.signed", cwd=tmp_path)  # fmt: skip
        reply = vn("registry", "publish", "activate.signed", "--validator", validator, cwd=tmp_path)
        assert "pooled; it applies" in reply, reply
        # the devnet says the simulated miners do not know it, and where answers go
        wait_for_text(out, r"challenge my-challenge is active but no simulated miner knows it", 90)
        answers = dn / "payloads" / "my-challenge"
        answers.mkdir(parents=True)
        (answers / "a.bin").write_bytes((tmp_path / "my-challenge" / "tasks" / "submission.bin").read_bytes())
        # the scaffold scores "hello there" against "hello world" 6/11: every miner gets it
        wait_for_text(out, r"my-challenge \{'\d+': 545454545", 120)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    text = out.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert "interrupted: stopping the validators" in text and "decided chains identical: True" in text
    assert f"subnet owner: {owner_ss58} (your --owner-key)" in text
    assert not (dn / "wallets" / "owner").exists()  # the owner's secret never entered the folder
    left = subprocess.run(["pgrep", "-f", f"wallet.path {dn}/wallets"], capture_output=True, text=True)
    assert left.stdout == "", "validators outlived the devnet"
