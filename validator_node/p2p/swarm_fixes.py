"""py-libp2p 0.8.1's swarm, adapted: an inbound connection's handler ends with it, and a stream
a peer opens can be refused before anything is spent on it.

`Swarm._do_handle_inbound_connection` upgrades an inbound connection and then, "to keep the
connection open", waits for the *swarm's* lifetime: every inbound connection, long closed, keeps
its handler task, its raw socket wrapper, its Noise session and its yamux state (buffers
included) and one slot of the swarm's inbound limiter until the node stops. Each miner or owner
submission, or any stranger's dial, leaked one (issue 12's devnet: ~8 a minute per validator), and
once the limiter's slots (max_connections - min_connections) were all held the node refused
every inbound connection, validators' included.

`release_inbound_handlers` makes the upgrade step wait until the connection it built is closed
and then end the handler (with a private exception, which the library's handler treats as a
failed connection: it closes the already closed raw connection and returns, freeing the slot).

`gate_inbound_streams` puts a check in front of every stream a peer opens: py-libp2p starts a
task per stream and negotiates its protocol (multiselect, two round trips of varint-framed
messages) before any handler, so per-protocol budgets come after the costliest part. Under the
adversary run's floods (~375 streams/s from 6 peer ids) that negotiation and the refusals kept
the target's event loop busy all the time and the honest decide rate fell to 65% of unloaded. A
stream the gate refuses is reset at once: a yamux RST, no task, no negotiation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import trio
from libp2p.network.connection.swarm_connection import SwarmConn


class ConnectionEnded(Exception):
    """The inbound connection closed: its handler may end (not an error)."""


def release_inbound_handlers(swarm: Any) -> None:
    """Patch this swarm instance (idempotent)."""
    if getattr(swarm, "_inbound_release_installed", False):
        return
    upgrade = swarm.upgrade_inbound_raw_conn

    async def upgrade_then_wait_for_close(raw_conn: Any, maddr: Any) -> Any:
        muxed = await upgrade(raw_conn, maddr)
        await wait_closed(muxed)
        raise ConnectionEnded

    swarm.upgrade_inbound_raw_conn = upgrade_then_wait_for_close
    swarm._inbound_release_installed = True


async def wait_closed(muxed: Any, poll: float = 1.0) -> None:
    """Until the muxed connection is closed (yamux and mplex set `event_closed`; else poll)."""
    event = getattr(muxed, "event_closed", None)
    if isinstance(event, trio.Event):
        await event.wait()
        return
    while not getattr(muxed, "is_closed", True):
        await trio.sleep(poll)


_original_handle_muxed_stream = SwarmConn._handle_muxed_stream


async def _handle_muxed_stream(self: SwarmConn, muxed_stream: Any) -> None:
    gate = getattr(self.swarm, "_bt_stream_gate", None)
    if gate is not None and not gate(self.muxed_conn.peer_id):
        with contextlib.suppress(Exception):
            await muxed_stream.reset()
        return
    await _original_handle_muxed_stream(self, muxed_stream)


def gate_inbound_streams(swarm: Any, admit: Callable[[Any], bool]) -> None:
    """Every stream a peer opens on this swarm's connections is first passed to `admit(peer_id)`;
    on False it is reset before protocol negotiation."""
    swarm._bt_stream_gate = admit
    if SwarmConn._handle_muxed_stream is not _handle_muxed_stream:
        SwarmConn._handle_muxed_stream = _handle_muxed_stream  # type: ignore[method-assign]
