"""The genesis record's `validators_as_miners` (issue 13, section 4): set once by
`validator-node genesis create --validators-as-miners`, carried into the application state from
height 0 and committed to by the state root; a version 1 record (from before the field) is
refused with one clear line."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tests.node.app_world import make_app
from validator_node.app import Application
from validator_node.cli import main
from validator_node.genesis import GenesisError, GenesisRecord, load, resolve
from validator_node.pipeline.snapshot import restore, snapshot, state_root
from validator_node.store import NodeStore
from wire import cbor
from wire.codec import encode

NETUID = 31
EPOCH = 4


def _create(tmp_path: Path, *extra: str) -> tuple[int, Path]:
    world = tmp_path / f"world{len(extra)}"
    _app, chain = make_app(world, "vam", NETUID, EPOCH)
    out = tmp_path / f"genesis{len(extra)}.cbor"
    code = main(
        ["genesis", "create", "--netuid", str(NETUID), "--epoch-blocks", str(EPOCH),
         "--chain.path", str(world / "chain.sqlite"), "--out", str(out), *extra]
    )  # fmt: skip
    chain.close()
    return code, out


def test_genesis_create_sets_the_flag_and_the_state_root_commits_to_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, plain_file = _create(tmp_path)
    assert code == 0
    code, paid_file = _create(tmp_path, "--validators-as-miners")
    assert code == 0
    plain, paid = load(plain_file), load(paid_file)
    assert plain.validators_as_miners is False and paid.validators_as_miners is True
    assert replace(paid, validators_as_miners=False) == plain  # the only difference

    capsys.readouterr()
    assert main(["genesis", "show", str(paid_file)]) == 0
    assert json.loads(capsys.readouterr().out)["validators_as_miners"] is True

    a, b = Application(plain), Application(paid)
    assert (a.state.validators_as_miners, b.state.validators_as_miners) == (False, True)
    assert a.root != b.root  # block 1's state root differs: the network is another one
    assert restore(snapshot(b.state)) == b.state
    assert state_root(restore(snapshot(b.state))) == b.root


def _as_version_1(record: GenesisRecord) -> bytes:
    """The record as the previous version wrote it: `node.genesis` v1, without the last field."""
    value = cbor.loads(encode(record), 1 << 20, plain_check=False)
    assert value[1] == 2 and value[-1] is False
    return cbor.dumps(["node.genesis", 1, *value[2:-1]])


def test_a_version_1_genesis_record_is_refused_with_a_clear_line(tmp_path: Path) -> None:
    code, f = _create(tmp_path)
    assert code == 0
    old = _as_version_1(load(f))
    f.write_bytes(old)
    with pytest.raises(GenesisError, match=r"unsupported version 1 .*older version"):
        load(f)
    store = NodeStore(tmp_path / "node" / "node.sqlite")
    store.set_genesis_record(old)
    with pytest.raises(GenesisError, match=r"cannot read.*older version"):
        resolve(store, netuid=NETUID, given=None, pin=None, chain=None, epoch_blocks=EPOCH)
    store.close()
