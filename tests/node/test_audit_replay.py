"""Issue 15: anyone can audit. A devnet runs; `audit replay` in a separate process, reading only
the DHT (through one validator's multiaddr) and the chain, re-derives every epoch and exits 0 with
every check and its figures in its JSON; an export of the same heights is then tampered with (one
byte of a block, of a certificate signature, of a module, one chain record) and each replay fails
naming the item."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from validator_node.devnet import wait_for_text

ENV = dict(os.environ, PYTHONWARNINGS="ignore::DeprecationWarning")
VN = [sys.executable, "-m", "validator_node.cli"]
EPOCH_BLOCKS = 8
EPOCHS = 3


def backup(src: Path, dst: Path) -> Path:
    """A copy of a live SQLite file in WAL mode (a file copy would miss what the WAL holds)."""
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    return dst


def audit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VN, "audit", *args], capture_output=True, text=True, env=ENV, timeout=300)


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Run a devnet for three epochs; replay each epoch from the DHT; export the heights."""
    tmp = tmp_path_factory.mktemp("audit")
    dn, out = tmp / "dn", tmp / "devnet.out"
    with open(out, "w") as f:
        proc = subprocess.Popen(
            [*VN, "devnet", "--keep-running", "--dir", str(dn), "--epoch-blocks", str(EPOCH_BLOCKS),
             "--block-interval", "0.3", "--miners", "3"],
            stdout=f, stderr=subprocess.STDOUT, env=ENV, cwd=tmp,
        )  # fmt: skip
    try:
        wait_for_text(out, rf"epoch {EPOCHS - 1} closed", 240)
        addr = re.search(r"(/ip4/127\.0\.0\.1/tcp/\d+/p2p/\w+)", out.read_text()).group(1)  # type: ignore[union-attr]
        genesis_hash = hashlib.sha256((dn / "genesis.cbor").read_bytes()).hexdigest()
        chain = dn / "chain.sqlite"
        reports = {}
        for epoch in range(EPOCHS):
            r = audit("replay", "--from-dht", addr, "--netuid", "7", "--epoch", str(epoch), "--genesis-hash",
                      genesis_hash, "--chain", str(chain), "--rerun-evaluations", "--json")  # fmt: skip
            reports[epoch] = (r.returncode, r.stdout, r.stderr)
        export = tmp / "export"
        r = audit("export", "--from-dht", addr, "--netuid", "7", "--genesis-hash", genesis_hash,
                  "--to", str(EPOCHS * EPOCH_BLOCKS + 1), str(export))  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        chain = backup(chain, tmp / "chain.sqlite")  # the records so far, for the tampering
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    return {"reports": reports, "export": export, "chain": Path(chain), "genesis": genesis_hash, "tmp": tmp}


def test_replay_from_the_dht_and_the_chain_matches_every_epoch(audited: dict[str, object]) -> None:
    reports = audited["reports"]
    assert isinstance(reports, dict)
    for epoch, (code, stdout, stderr) in reports.items():
        assert code == 0, f"epoch {epoch}: {stdout[-3000:]}{stderr[-3000:]}"
        report = json.loads(stdout)
        checks = {c["item"]: c for c in report["checks"]}
        assert report["ok"] and report["source"].startswith("dht via /ip4/")
        assert checks["genesis"]["pinned"] and checks["genesis"]["epoch_blocks"] == EPOCH_BLOCKS
        heights = [c for c in report["checks"] if re.fullmatch(r"height \d+", c["item"])]
        assert len(heights) == (epoch + 1) * EPOCH_BLOCKS
        for c in heights:  # stake for and against, where the set came from
            assert 3 * c["stake_for"] > 2 * c["total_stake"]
            assert c["stake_for"] + c["stake_against"] == c["total_stake"] and c["set_from"]
        assert heights[0]["set_from"] == "the genesis record"
        weights = checks[f"epoch {epoch} weights"]
        assert weights["derived_rows"] == weights["decided_rows"]
        records = [c for c in report["checks"] if c["item"].startswith("chain record #")]
        assert len(records) >= 3 and all(c["epoch"] == epoch for c in records)  # 4 validators
        assert sum(1 for i in checks if i.startswith("module ")) == 5
        assert checks[f"state after epoch {epoch}"]["ok"]
        if epoch == 0:  # the devnet registers its challenges during epoch 0: nothing is scored
            continue
        assert weights["best_scores"] and set(weights["shares"]) >= {"maxsat", "lz-compress", "tsp-tour"}
        assert f"epoch {epoch} aggregate allways-swap" in checks
        reruns = [c for c in report["checks"] if c.get("rerun_score") is not None]
        assert reruns and all(c["rerun_score"] == c["median"] for c in reruns)


def _replay(
    audited: dict[str, object], export: Path, chain: Path, epoch: int = EPOCHS - 1
) -> tuple[int, str]:
    r = audit("replay", "--from-export", str(export), "--epoch", str(epoch),
              "--genesis-hash", str(audited["genesis"]), "--chain", str(chain))  # fmt: skip
    return r.returncode, r.stdout + r.stderr


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("what", ["none", "block", "certificate", "module", "chain record"])
def test_tampering_fails_naming_the_item(audited: dict[str, object], what: str) -> None:
    tmp = audited["tmp"]
    assert isinstance(tmp, Path)
    export, chain = tmp / f"export-{what}", tmp / f"chain-{what}.sqlite"
    shutil.copytree(audited["export"], export)  # type: ignore[arg-type]
    backup(audited["chain"], chain)  # type: ignore[arg-type]
    if what == "block":
        _flip(export / "blocks" / "5.cbor", 40)
    elif what == "certificate":
        _flip(export / "certificates" / "5.cbor", -3)  # inside the last signature
    elif what == "module":
        _flip(sorted((export / "modules").iterdir())[0], 200)
    elif what == "chain record":
        db = sqlite3.connect(chain)
        rid, weights = db.execute(
            "SELECT id, submitted FROM weights WHERE app_epoch = ? ORDER BY id", (EPOCHS - 1,)
        ).fetchone()
        w = json.loads(weights)
        w[-1] -= 1
        db.execute("UPDATE weights SET submitted = ? WHERE id = ?", (json.dumps(w), rid))
        db.commit()
        db.close()
    code, text = _replay(audited, export, chain)
    failed = [line for line in text.splitlines() if line.startswith("FAIL ")]
    if what == "none":
        assert code == 0 and not failed, text
        return
    assert code == 1 and len(failed) == 1, text
    expected = {
        "block": r"FAIL height 5: the block's bytes hash to",
        "certificate": r"FAIL height 5: certificate: bad signature",
        "module": r"FAIL module \S+ [0-9a-f]{16}: the bytes served hash to",
        "chain record": rf"FAIL chain record #{rid if what == 'chain record' else 0} .* does not verify",
    }[what]
    assert re.match(expected, failed[0]), failed[0]


def test_a_replay_without_its_input_says_so(audited: dict[str, object], tmp_path: Path) -> None:
    """Exit 2 (not 1, not 0) when the audit cannot be carried out: a height the epoch needs is
    missing, or the genesis record is not the pinned one."""
    export = tmp_path / "export"
    shutil.copytree(audited["export"], export)  # type: ignore[arg-type]
    (export / "blocks" / "7.cbor").unlink()
    code, text = _replay(audited, export, audited["chain"])  # type: ignore[arg-type]
    assert code == 2 and "FAIL height 7: export" in text and "has no decided block" in text, text
    r = audit("replay", "--from-export", str(export), "--epoch", "0", "--genesis-hash", "ab" * 32)
    assert r.returncode == 1 and "not the pinned" in r.stdout, r.stdout + r.stderr
