"""`validator-node chain genesis|info|weights|advance` on a chain file in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from validator_node.chain.local import LocalChain
from validator_node.cli import main
from wire.keys import Hotkey


def cli(*argv: object) -> int:
    return main([str(a) for a in argv])


def test_genesis_info_weights_advance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    g, db = tmp_path / "genesis.json", tmp_path / "chain.sqlite"
    assert cli("chain", "genesis", "--out", g, "--validators", 2, "--miners", 3, "--block-time-ms", 0,
               "--rate-limit", 1) == 0  # fmt: skip
    doc = json.loads(g.read_text())
    assert len(doc["neurons"]) == 6 and doc["owner"] == Hotkey.from_name("owner").ss58
    assert cli("chain", "info", "--chain", db) == 2  # no chain yet, no genesis given
    assert "no chain" in capsys.readouterr().err
    assert cli("chain", "info", "--chain", db, "--genesis", g) == 0
    out = capsys.readouterr().out
    assert "block 1 " in out and "uid   2" in out and "permit" in out

    with LocalChain(db) as chain:  # what two validator processes would do
        for name in ("validator-0", "validator-1"):
            chain.set_weights(Hotkey.from_name(name), [0, 3, 4], [65535, 100, 200])
    assert cli("chain", "advance", "--chain", db, 5) == 0
    assert capsys.readouterr().out.strip() == "block 6"
    assert cli("chain", "weights", "--chain", db, "--epoch", 0) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "2 submissions from 2 hotkeys, 1 distinct vectors"
    assert out[0].startswith("block 1 epoch 0 uid 1 mech 0: 0:65535 3:100 4:200")
    assert (
        cli("chain", "weights", "--chain", db, "--json", "--hotkey", Hotkey.from_name("validator-1").ss58)
        == 0
    )
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["uid"] == 2
    assert cli("chain", "weights", "--chain", db, "--epoch", 99) == 0
    assert capsys.readouterr().out.strip() == "0 submissions from 0 hotkeys, 0 distinct vectors"
