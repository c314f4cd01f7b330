"""A node whose disk fills up stops voting cleanly (issue 12, "disk full"): one clear error line,
no vote on the wire that is not on disk, no crash; it keeps serving reads (the HTTP API).

Real: a `ValidatorNode` (the only validator of a real LocalChain, so it decides alone) whose data
directory is a 16 MiB tmpfs that the test fills to the last byte while the node runs. Mounting
needs root (CAP_SYS_ADMIN): the test skips, saying so, where it cannot mount.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from validator_node.chain.base import Hyperparameters
from validator_node.chain.local import Genesis, GenesisNeuron, LocalChain
from validator_node.node import NodeConfig, ValidatorNode
from wire.keys import Hotkey

pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)

OWNER = Hotkey.from_name("disk-full-owner")
VALIDATOR = Hotkey.from_name("disk-full-validator")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for a real full disk needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(directory: Path) -> None:
    """Write until the filesystem refuses (ENOSPC): from now on only already allocated pages fit."""
    with open(directory / "filler", "wb", buffering=0) as f:
        for size in (65536, 512):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC


async def wait_for(pred: Any, timeout: float, what: str) -> None:
    with trio.move_on_after(timeout):
        while not pred():
            await trio.sleep(0.05)
        return
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def test_a_full_disk_stops_voting_cleanly(
    small_disk: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hp = Hyperparameters(tempo=100, weights_rate_limit=0, min_allowed_weights=1, max_weight_limit=65535)
    neurons = (GenesisNeuron(OWNER.ss58, 0, False), GenesisNeuron(VALIDATOR.ss58, 10**12, True))
    chain = LocalChain(tmp_path / "chain.sqlite", Genesis(7, OWNER.ss58, neurons, hp, block_time_ms=0))
    cfg = NodeConfig(
        netuid=7,
        data_dir=small_disk / "node",
        epoch_blocks=1000,
        block_interval=0.05,
        status_interval=0.1,
        dht=False,
        api_port=0,
    )
    node = ValidatorNode(cfg, VALIDATOR, chain)
    events: list[str] = []  # the order of vote writes and sends, as the node executes them
    append_vote, broadcast, send = node.store.append_vote, node.transport.broadcast, node.transport.send

    def recording_append_vote(record: Any) -> None:
        try:
            append_vote(record)
        except Exception:
            events.append("persist failed")
            raise
        events.append("persisted")

    def recording_broadcast(data: bytes) -> None:
        events.append("sent")
        broadcast(data)

    def recording_send(to: bytes, data: bytes) -> None:
        events.append("sent")
        send(to, data)

    node.store.append_vote = recording_append_vote  # type: ignore[method-assign]
    node.transport.broadcast = recording_broadcast  # type: ignore[method-assign]
    node.transport.send = recording_send  # type: ignore[method-assign]
    caplog.set_level(logging.INFO, logger="validator_node")
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            await wait_for(lambda: node.app.tip_height >= 3, 30, "the node to decide alone")
            fill(small_disk)
            await wait_for(lambda: node._voting_halted is not None, 60, "the node to stop voting")
            assert node._voting_halted is not None and node._voting_halted.startswith("disk full")
            assert "persist failed" in events
            assert "sent" not in events[events.index("persist failed") :]  # nothing after it left
            height = node.app.tip_height
            await trio.sleep(1.0)  # it no longer decides, and it is still running
            assert node.app.tip_height == height
            assert "sent" not in events[events.index("persist failed") :]
            # reads are still served
            url = f"http://127.0.0.1:{node.api_port}/api/status"
            body = await trio.to_thread.run_sync(lambda: urllib.request.urlopen(url, timeout=10).read())
            status = json.loads(body)
            assert status["voting_halted"].startswith("disk full") and status["height"] == height
            assert node.metrics.get("voting_halted") == 1
            assert node.metrics.get("store_write_failed_total", what="status") >= 1
            node._done.set()
    finally:
        node.evaluator.close()
        node.payloads.close()
        node.store.close()
        chain.close()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len([m for m in errors if m.startswith("stopped voting")]) == 1
    assert len([m for m in errors if m.startswith("cannot write status.json")]) == 1
    assert all("\n" not in m for m in errors)
