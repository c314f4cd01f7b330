"""py-libp2p 0.8.1's swarm, adapted so that an inbound connection's handler ends with it.

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
"""

from __future__ import annotations

from typing import Any

import trio


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
