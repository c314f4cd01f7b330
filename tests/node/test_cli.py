"""`validator-node`'s command line in Bittensor's conventions, and its one-line errors (issue 13,
sections 3 and 5).

Real processes, as an operator runs them: one validator of a devnet folder (wallets, the local
chain and a genesis record; it holds all stake, so it decides alone), started with the flags
`validator-node devnet` gives it (`devnet.node_command`) and each test's change to them. A test
whose node would run on the old code stops it with `--stop-at-height`, so that it fails by its
exit code instead of hanging. Every error is asserted to be one line naming the thing, with no
traceback. In-process tests cover option resolution and the chain choice.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from validator_node import devnet
from validator_node.cli import run as run_cli

ENV = dict(os.environ, PYTHONWARNINGS="ignore::DeprecationWarning")
CLI = [sys.executable, "-m", "validator_node.cli"]


@dataclass
class Net:
    root: Path
    v: devnet.DevnetValidator

    def command(self, data_dir: Path, *, stop_at: int | None = None) -> list[str]:
        """The devnet's command for the validator, with its own data folder, any free p2p port
        and no API (so that tests never share a port)."""
        cmd = devnet.node_command(self.root, self.v, stop_at)
        cmd = with_flag(cmd, "--data-dir", str(data_dir))
        cmd = with_flag(cmd, "--p2p.port", "0")
        return without_flag(cmd, "--api.port")

    def node_dir(self, data_dir: Path) -> Path:
        return data_dir / str(devnet.NETUID) / self.v.ss58


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Net:
    root = tmp_path_factory.mktemp("cli") / "dn"
    (v,), _ = devnet.create(root, 1, miners=1)
    return Net(root, v)


def with_flag(cmd: list[str], flag: str, value: str) -> list[str]:
    cmd = list(cmd)
    if flag in cmd:
        cmd[cmd.index(flag) + 1] = value
    else:
        cmd += [flag, value]
    return cmd


def without_flag(cmd: list[str], flag: str) -> list[str]:
    cmd = list(cmd)
    if flag in cmd:
        i = cmd.index(flag)
        del cmd[i : i + 2]
    return cmd


def run(
    cmd: list[str], env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, env=env or ENV, timeout=timeout)


def one_line_error(out: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The process failed with `code` and said why in exactly one line of stderr."""
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == code, (out.returncode, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def last_line_error(out: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """As `one_line_error`, for a node that logged its start before failing."""
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == code, (out.returncode, out.stderr)
    return out.stderr.strip().splitlines()[-1]


def height(node_dir: Path) -> int:
    import json

    try:
        return int(json.loads((node_dir / "status.json").read_text())["height"])
    except (OSError, ValueError, KeyError):
        return -1


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; whatever is still running at its end is killed."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def start(
    cmd: list[str], log: Path, procs: list[subprocess.Popen[bytes]], **kw: Any
) -> subprocess.Popen[bytes]:
    with open(log, "ab") as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=ENV, **kw)
    procs.append(p)
    return p


# --- conventions ---------------------------------------------------------------------------------


def test_version_prints_the_package_version() -> None:
    out = run([*CLI, "--version"])
    assert out.returncode == 0 and out.stdout.strip() == f"validator-node {version('platform-validator')}"


def test_run_refuses_to_start_without_a_chain(net: Net, tmp_path: Path) -> None:
    """No silent default: without --subtensor.network or --subtensor.chain_endpoint the node does
    not start (it used to run on the embedded local chain)."""
    cmd = without_flag(net.command(tmp_path / "data", stop_at=2), "--subtensor.network")
    line = one_line_error(run(cmd))
    assert "--subtensor.network" in line and "--subtensor.chain_endpoint" in line
    assert not (tmp_path / "data").exists()  # it stopped before touching anything


def test_devnet_names_the_local_chain(net: Net) -> None:
    cmd = devnet.node_command(net.root, net.v, None)
    assert cmd[cmd.index("--subtensor.network") + 1] == "local"


def test_chain_endpoint_is_taken_as_in_bittensor(net: Net, tmp_path: Path) -> None:
    """`--subtensor.chain_endpoint ws://...` selects a subtensor node; an unreachable one is one
    line naming it."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"ws://127.0.0.1:{port}"
    cmd = without_flag(net.command(tmp_path / "data"), "--subtensor.network")
    line = last_line_error(run([*cmd, "--subtensor.chain_endpoint", endpoint]))  # after the SDK's own
    assert line.startswith(f"validator-node run: cannot open the chain: {endpoint}: "), line


class FakeSubtensorChain:
    def __init__(self, netuid: int, network: str) -> None:
        self.netuid, self.network = netuid, network

    def current_block(self) -> int:
        return 1


def test_open_chain_endpoint_wins_over_the_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from validator_node.chain import subtensor

    monkeypatch.setattr(subtensor, "SubtensorChain", FakeSubtensorChain)
    opts = {"netuid": 7, "subtensor.network": "finney", "subtensor.chain_endpoint": "wss://node.example:443"}
    assert run_cli.open_chain(opts, tmp_path).network == "wss://node.example:443"
    assert run_cli.open_chain({**opts, "subtensor.chain_endpoint": None}, tmp_path).network == "finney"
    with pytest.raises(run_cli.ChainOpenError, match="embedded chain"):
        run_cli.open_chain({**opts, "subtensor.network": "local"}, tmp_path)
    with pytest.raises(run_cli.ChainOpenError, match="not a ws:// or wss:// URL"):
        run_cli.open_chain({**opts, "subtensor.chain_endpoint": "http://node.example"}, tmp_path)


# --- config file and environment -------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    run_cli.register(parser)
    return parser.parse_args(argv)


def test_config_tables_and_dotted_keys_are_options(tmp_path: Path) -> None:
    config = tmp_path / "v.toml"
    config.write_text(
        'netuid = 7\nwallet.name = "val0"\n"p2p.port" = 4001\n[subtensor]\nchain_endpoint = "ws://10.0.0.1:9944"\n'
    )
    opts = run_cli.resolve_options(parse(["--config", str(config)]), environ={})
    assert opts["wallet.name"] == "val0" and opts["p2p.port"] == 4001 and opts["netuid"] == 7
    assert opts["subtensor.chain_endpoint"] == "ws://10.0.0.1:9944"


def test_unknown_config_keys_and_variables_and_bad_values_name_the_key(tmp_path: Path) -> None:
    config = tmp_path / "v.toml"
    config.write_text('"wallet.nmae" = "val0"\n"logging.debug" = true\n')
    with pytest.raises(run_cli.OptionError) as err:
        run_cli.resolve_options(parse(["--config", str(config)]), environ={})
    assert "'logging.debug', 'wallet.nmae'" in str(err.value) and "command line only" in str(err.value)
    with pytest.raises(run_cli.OptionError, match="VALIDATOR_NODE_NETUD"):
        run_cli.resolve_options(parse([]), environ={"VALIDATOR_NODE_NETUD": "7"})
    with pytest.raises(run_cli.OptionError, match="VALIDATOR_NODE_P2P_PORT: 'abc' is not an int"):
        run_cli.resolve_options(parse([]), environ={"VALIDATOR_NODE_P2P_PORT": "abc"})
    config.write_text('"p2p.port" = "x"\n')
    with pytest.raises(run_cli.OptionError, match=r"key 'p2p\.port'"):
        run_cli.resolve_options(parse(["--config", str(config)]), environ={})
    with pytest.raises(run_cli.OptionError, match="not valid TOML"):
        config.write_text("netuid = \n")
        run_cli.resolve_options(parse(["--config", str(config)]), environ={})
    # the pm2 process file's settings and the allocation tracer's reach the node too: not errors
    others = {"VALIDATOR_NODE_BIN": "x", "VALIDATOR_NODE_ENV_FILE": "x", "VALIDATOR_NODE_MEMTRACE": "1"}
    assert run_cli.resolve_options(parse([]), environ=others)["netuid"] is None


def test_run_refuses_an_unknown_environment_variable(net: Net, tmp_path: Path) -> None:
    env = dict(ENV, VALIDATOR_NODE_WALLET_NMAE="validator0")  # a typo: used to be ignored
    line = one_line_error(run(net.command(tmp_path / "data", stop_at=2), env=env))
    assert "VALIDATOR_NODE_WALLET_NMAE" in line


def test_run_refuses_an_unknown_config_key(net: Net, tmp_path: Path) -> None:
    config = tmp_path / "v.toml"
    config.write_text('"wallet.nmae" = "validator0"\n')
    line = one_line_error(run([*net.command(tmp_path / "data", stop_at=2), "--config", str(config)]))
    assert "'wallet.nmae'" in line and str(config) in line


# --- one-line errors ---------------------------------------------------------------------------------


def test_run_with_a_missing_wallet_is_one_line(net: Net, tmp_path: Path) -> None:
    cmd = with_flag(net.command(tmp_path / "data"), "--wallet.name", "nosuch")
    line = one_line_error(run(cmd))
    assert "cannot load hotkey nosuch/default" in line and str(net.root / "wallets" / "nosuch") in line


def test_miner_submit_with_a_missing_wallet_or_payload_is_one_line(net: Net, tmp_path: Path) -> None:
    payload = tmp_path / "answer.bin"
    payload.write_bytes(b"answer")
    cmd = [
        *CLI,
        "miner",
        "submit",
        "--netuid",
        "7",
        "--challenge",
        "maxsat",
        "--epoch",
        "1",
        "--validator",
        net.v.multiaddr(),
        "--wallet.path",
        str(net.root / "wallets"),
        "--wallet.name",
        "nosuch",
        "--file",
    ]
    line = one_line_error(run([*cmd, str(payload)]))
    assert "cannot load hotkey nosuch/default" in line and str(net.root / "wallets" / "nosuch") in line
    line = one_line_error(run([*cmd, str(tmp_path / "missing.bin")]))
    assert f"cannot read the payload file {tmp_path / 'missing.bin'}" in line


def test_an_unopenable_chain_names_the_file_and_why(net: Net, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "chain.sqlite"
    cmd = with_flag(net.command(tmp_path / "data"), "--chain.path", str(missing))
    line = one_line_error(run(cmd))
    assert str(missing) in line and f"the directory {missing.parent} does not exist" in line
    cmd = with_flag(cmd, "--chain.path", str(tmp_path))
    assert f"{tmp_path}: is a directory" in one_line_error(run(cmd))


def test_unopenable_says_why(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """What SQLite's "unable to open database file" leaves out (as root, permissions simulated)."""
    existing = tmp_path / "chain.sqlite"
    existing.write_bytes(b"")
    assert run_cli._unopenable(existing) == "" and run_cli._unopenable(tmp_path / "new.sqlite") == ""
    monkeypatch.setattr(run_cli.os, "access", lambda path, mode: False)
    assert run_cli._unopenable(existing).startswith("permission denied")
    assert (
        run_cli._unopenable(tmp_path / "new.sqlite")
        == f"permission denied: cannot create a file in {tmp_path}"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_chain_without_permission_names_the_file_and_why(net: Net, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    cmd = with_flag(net.command(tmp_path / "data"), "--chain.path", str(locked / "chain.sqlite"))
    assert f"permission denied: cannot create a file in {locked}" in one_line_error(run(cmd))


@pytest.mark.parametrize("which", ["p2p", "api"])
def test_a_port_in_use_is_one_line(net: Net, tmp_path: Path, which: str) -> None:
    """The p2p port taken: py-libp2p logged the failure at a level we silence and the node ran
    listening nowhere. The API port taken: a traceback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        cmd = with_flag(net.command(tmp_path / "data", stop_at=2), f"--{which}.port", str(port))
        line = last_line_error(run(cmd))
    what = "p2p" if which == "p2p" else "the HTTP API"
    assert line.startswith(f"validator-node run: cannot listen for {what} on 127.0.0.1:{port} "), line
    assert line.endswith("Address already in use"), line


# --- one signer per hotkey: the data directory's lock ----------------------------------------------------


def test_a_second_run_on_one_data_dir_exits_at_once_naming_the_first(
    net: Net, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    """A second `run` on the same hotkey and data folder exits with one line naming the first's
    pid, before it opens a store or a socket; the first keeps deciding. After a kill -9 of the
    first the kernel has released the lock: a new run starts with no cleanup."""
    data = tmp_path / "data"
    node_dir = net.node_dir(data)
    cmd = net.command(data)
    first = start(cmd, tmp_path / "first.log", processes)
    devnet.wait_until(lambda: height(node_dir) >= 1, 60, "the first node to decide")
    began = time.monotonic()
    out = run(cmd, timeout=60)
    line = one_line_error(out)  # nothing logged before it: no store, chain or p2p was opened
    assert f"{node_dir} is in use by another validator-node (pid {first.pid})" in line
    assert time.monotonic() - began < 30
    assert first.poll() is None
    h = height(node_dir)
    devnet.wait_until(lambda: height(node_dir) > h, 30, "the first node to keep deciding")
    first.send_signal(signal.SIGKILL)
    first.wait()
    h = height(node_dir)
    again = start(cmd, tmp_path / "again.log", processes)
    devnet.wait_until(lambda: height(node_dir) > h, 60, "a new node on the folder to decide")
    assert (node_dir / "node.lock").read_text().strip() == str(again.pid)
    again.send_signal(signal.SIGTERM)
    assert again.wait(30) == 0


# --- signals ---------------------------------------------------------------------------------------------


def test_sigint_stops_a_node_started_with_sigint_ignored(
    net: Net, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    """A background job of a shell script starts with SIGINT ignored (Python then installs no
    KeyboardInterrupt handler); `kill -INT` must still stop the node cleanly. It used to be
    ignored for good."""
    data = tmp_path / "data"
    node_dir = net.node_dir(data)
    # exactly what `validator-node run ... &` in a non-interactive shell does to the signal
    cmd = ["sh", "-c", "trap '' INT; exec \"$@\"", "sh", *net.command(data)]
    log = tmp_path / "node.log"
    proc = start(cmd, log, processes)
    devnet.wait_until(lambda: height(node_dir) >= 1, 60, "the node to decide")
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(30)
    except subprocess.TimeoutExpired:
        pytest.fail("SIGINT did not stop a node started with SIGINT ignored")
    text = log.read_text()
    assert code == 0 and "SIGINT: stopping" in text and "Traceback" not in text
