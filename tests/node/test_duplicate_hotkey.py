"""One signer per hotkey across machines (issue 13): two nodes on one hotkey are detected at the
p2p handshake (validator_node/p2p/host.py `_refuse_second_signer`).

Real `ConsensusTransport`s (libp2p hosts on loopback, one process), as in test_gossip_reconnect:
a second peer id attesting a validator we hold a live link with is refused and the first link
kept, whichever side dials; a peer attesting our own hotkey is refused; both are counted in
`duplicate_hotkey_total{kind}` and logged at ERROR at most once per 10 s; a validator whose old
link has closed (a restart under a new peer id) is accepted. The node stays usable throughout:
the first link still carries frames and other validators still link.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

import pytest
import trio

from validator_node.metrics import Metrics
from validator_node.p2p.attestation import DuplicateHotkey
from validator_node.p2p.host import ConsensusTransport, Link
from wire.keys import Hotkey

NETUID = 7
KEYS = {name: Hotkey.from_name(f"duplicate-{name}") for name in ("a", "b", "c")}
PERMITTED = frozenset(k.public_key for k in KEYS.values())


class Node:
    """A transport with its inbound frames, runnable and stoppable on its own."""

    def __init__(self, key: str, seed: str) -> None:
        self.hotkey = KEYS[key]
        self.metrics = Metrics()
        self._send, self.inbound = trio.open_memory_channel[tuple[bytes, bytes]](64)
        self.t = ConsensusTransport(
            hotkey=self.hotkey,
            netuid=NETUID,
            peer_seed=hashlib.sha256(f"duplicate-peer-{seed}".encode()).digest(),
            listen_host="127.0.0.1",
            listen_port=0,
            permitted=lambda: PERMITTED,
            current_block=lambda: 1,
            metrics=self.metrics,
            inbound=self._send,
        )
        self.scope = trio.CancelScope()

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self.scope:
            await self.t.run([], task_status=task_status)

    async def start(self, nursery: trio.Nursery) -> Node:
        await nursery.start(self._run)
        return self

    @property
    def addr(self) -> str:
        return self.t.addrs()[0]

    def duplicates(self, kind: str) -> float:
        return self.metrics.get("duplicate_hotkey_total", kind=kind)

    def linked_peer(self, key: str) -> str | None:
        link = self.t.book.links.get(KEYS[key].public_key)
        return None if link is None else link.peer_id


async def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    with trio.move_on_after(timeout):
        while not pred():
            await trio.sleep(0.02)
        return
    raise AssertionError(f"timed out waiting for {what}")


def duplicate_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.ERROR and r.getMessage().startswith("duplicate hotkey")
    ]


async def test_a_second_peer_id_for_a_linked_validator_is_refused_and_the_first_link_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A second machine runs validator a's hotkey under another peer id and dials b: b refuses it
    (before answering the handshake), keeps the first link, logs one ERROR line however often
    the duplicate redials, and counts every refusal."""
    caplog.set_level(logging.INFO, logger="validator_node.p2p")
    async with trio.open_nursery() as nursery:
        b = await Node("b", "b").start(nursery)
        a1 = await Node("a", "a1").start(nursery)
        a2 = await Node("a", "a2").start(nursery)
        a1.t.dial(b.addr)
        await wait_for(lambda: b.linked_peer("a") == a1.t.peer_id, 20, "the first link")
        a2.t.dial(b.addr)
        await wait_for(lambda: b.duplicates("peer") >= 2, 20, "the duplicate refused twice (it redials)")
        assert b.linked_peer("a") == a1.t.peer_id  # the first link stays
        assert a2.t.peer_id not in b.t.admitted  # no gossip from the duplicate either
        assert a2.linked_peer("b") is None
        # the first link still carries frames: the node keeps deciding with it
        a1.t.send(KEYS["b"].public_key, b"vote")
        with trio.fail_after(10):
            assert await b.inbound.receive() == (KEYS["a"].public_key, b"vote")
        # a third validator still links
        c = await Node("c", "c").start(nursery)
        c.t.dial(b.addr)
        await wait_for(lambda: b.linked_peer("c") == c.t.peer_id, 20, "another validator's link")
        nursery.cancel_scope.cancel()
    errors = duplicate_errors(caplog)
    assert len(errors) == 1, errors  # rate-limited: the redials are counted, not logged
    assert a2.t.peer_id in errors[0] and a1.t.peer_id in errors[0] and KEYS["a"].ss58 in errors[0]
    assert b.metrics.get("p2p_peers_refused_total", reason="duplicate_hotkey") >= 2
    assert b.duplicates("self") == 0


async def test_dialling_a_duplicate_refuses_it_and_leaves_it_no_link(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """b dials the duplicate itself (an address from the chain, say): b refuses its attestation
    and resets the stream, so the duplicate, which had answered and linked, does not keep a link
    to b that nobody reads."""
    caplog.set_level(logging.INFO, logger="validator_node.p2p")
    async with trio.open_nursery() as nursery:
        b = await Node("b", "b").start(nursery)
        a1 = await Node("a", "a1").start(nursery)
        a2 = await Node("a", "a2").start(nursery)
        a1.t.dial(b.addr)
        await wait_for(lambda: b.linked_peer("a") == a1.t.peer_id, 20, "the first link")
        b.t.dial(a2.addr)
        await wait_for(lambda: b.duplicates("peer") >= 1, 20, "the duplicate refused")
        await wait_for(lambda: a2.linked_peer("b") is None, 10, "the duplicate's side of the link to close")
        assert b.linked_peer("a") == a1.t.peer_id
        nursery.cancel_scope.cancel()
    assert len(duplicate_errors(caplog)) == 1


async def test_a_new_peer_id_is_accepted_once_the_old_link_has_closed() -> None:
    """A validator restarted under a new peer id (its peer key was lost) is not a duplicate:
    its old link closed when the old process went away, so the new one is accepted."""
    async with trio.open_nursery() as nursery:
        b = await Node("b", "b").start(nursery)
        old = await Node("a", "a1").start(nursery)
        old.t.dial(b.addr)
        await wait_for(lambda: b.linked_peer("a") == old.t.peer_id, 20, "the old link")
        old.scope.cancel()  # the old process ends: its connections close
        await wait_for(lambda: b.linked_peer("a") is None, 10, "the old link to close")
        new = await Node("a", "a2").start(nursery)
        new.t.dial(b.addr)
        await wait_for(lambda: b.linked_peer("a") == new.t.peer_id, 20, "the new link")
        assert b.metrics.total("duplicate_hotkey_total") == 0
        nursery.cancel_scope.cancel()


async def test_a_peer_attesting_our_own_hotkey_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    """Another machine runs this node's own hotkey: refused, counted as kind="self", one ERROR
    line; the node still links with other validators."""
    caplog.set_level(logging.INFO, logger="validator_node.p2p")
    async with trio.open_nursery() as nursery:
        b = await Node("b", "b").start(nursery)
        twin = await Node("b", "b-twin").start(nursery)
        twin.t.dial(b.addr)
        await wait_for(lambda: b.duplicates("self") >= 2, 20, "our own hotkey refused twice")
        assert not b.t.book.links and not twin.t.book.links
        a = await Node("a", "a").start(nursery)
        a.t.dial(b.addr)
        await wait_for(lambda: b.linked_peer("a") == a.t.peer_id, 20, "another validator's link")
        nursery.cancel_scope.cancel()
    errors = duplicate_errors(caplog)
    assert len(errors) == 1 and "own hotkey" in errors[0] and twin.t.peer_id in errors[0], errors
    assert b.metrics.get("p2p_peers_refused_total", reason="self") >= 2
    assert b.duplicates("peer") == 0


class FakeStream:
    def __init__(self) -> None:
        self.was_reset = False

    async def reset(self) -> None:
        self.was_reset = True


async def test_a_link_is_checked_again_as_it_is_installed(caplog: pytest.LogCaptureFixture) -> None:
    """Two handshakes for one hotkey under different peer ids can both pass their first check
    (each awaits the other side in between); the check repeated where the link is installed,
    with no await before it, refuses the later one. The same peer id is a redial: accepted."""
    caplog.set_level(logging.INFO, logger="validator_node.p2p")
    node = Node("b", "b")
    hk = KEYS["a"].public_key
    send, _ = trio.open_memory_channel[bytes](1)
    node.t.book.links[hk] = Link(hk, "first-peer", send, 1)
    node.t._refuse_second_signer(hk, "first-peer")  # the same peer id: not a duplicate
    stream = FakeStream()
    with pytest.raises(DuplicateHotkey) as refused:
        await node.t._run_link(stream, None, hk, "second-peer")  # type: ignore[arg-type]
    assert refused.value.kind == "peer" and stream.was_reset
    assert node.t.book.links[hk].peer_id == "first-peer"
    for _ in range(3):
        with pytest.raises(DuplicateHotkey):
            node.t._refuse_second_signer(hk, "second-peer")
    with pytest.raises(DuplicateHotkey) as refused:
        node.t._refuse_second_signer(KEYS["b"].public_key, "twin-peer")
    assert refused.value.kind == "self"
    assert node.duplicates("peer") == 4 and node.duplicates("self") == 1
    assert len(duplicate_errors(caplog)) == 2  # one per kind and hotkey within 10 s
    send.close()
