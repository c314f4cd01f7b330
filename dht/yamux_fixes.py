"""py-libp2p 0.8.1's yamux, made safe to cancel while it writes a frame.

The bug. Yamux writes a frame through the Noise session: `encrypt` advances the session's nonce
synchronously, then the ciphertext is written with awaits in between (a lock, then the socket's
`send_all`, in 64 KiB Noise messages for a large frame). A caller whose cancel scope fires at one
of those awaits (any `move_on_after` around a stream write, or a nursery cancelled because a
lookup already has its answer: KadDHT cancels its remaining queries as soon as a quorum answered)
leaves a message encrypted but never sent, or sent in part. The peer then decrypts the next
message with the wrong nonce ("Failed authentication of message"), and the whole connection is
closed, with every other stream on it: a DHT lookup in flight on that connection waits out its
timeout. Seen as `tests/dht/test_checkpoint_index.py` failing now and then under load (a host
"lost a connection"), and reproduced in a few rounds by cancelling concurrent stream writes at
random moments (`tests/dht/test_cancelled_writes.py`). Upstream's main branch writes the same way.

Not fixed here (seen once in a full `make test` under heavy load, after this fix): yamux's reader
task writes inline (the ACK of each inbound stream, ping replies). When both hosts are writing
large frames and both socket buffers are full, each reader waits for the write lock its own
writer holds, and neither side reads: a deadlock that only a timeout ends, by closing the
connection. The fix is a reader that never blocks on a write (control frames queued to a
writer task); see the report of issue 12.

The fix. Once a frame is handed to the session it is written whole: the write is shielded from
the caller's cancellation. Waiting for the write lock stays cancellable (nothing is written
then). A shielded write that cannot finish in `WRITE_DEADLINE` seconds (a peer that stopped
reading) closes the connection, since its byte stream may now hold half a message.
"""

from __future__ import annotations

import logging

import trio
from libp2p.io.exceptions import ConnectionClosedError
from libp2p.stream_muxer.yamux.yamux import Yamux

log = logging.getLogger(__name__)

#: How long one frame's write may block (on a peer that does not read) before the connection goes.
#: Shorter than the DHT's 15 s query timeout: a caller can no longer cancel a write, so a stuck
#: connection must end before the caller would have given up. (A full 16 MiB yamux window
#: still passes in 10 s at ~13 Mbit/s.)
WRITE_DEADLINE = 10.0


async def _write_frame_whole(self: Yamux, data: bytes) -> None:
    """Yamux._write_frame, with the write itself shielded from the caller's cancellation."""
    async with self._write_lock:  # cancellable: nothing has been encrypted or written yet
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + WRITE_DEADLINE
            await self.secured_conn.write(data)
        if scope.cancelled_caught:  # half a message may be on the wire: the session is over
            self.event_shutting_down.set()
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                try:
                    await self.secured_conn.close()
                except Exception as exc:  # already broken: closing is all we wanted
                    log.debug("closing a stalled yamux connection: %s", exc)
            log.warning("yamux: a frame to %s stalled for %.0f s; closed", self.peer_id, WRITE_DEADLINE)
            raise ConnectionClosedError(f"write to {self.peer_id} stalled", transport="yamux")
    await trio.lowlevel.checkpoint()


def install() -> None:
    """Idempotent, process-wide: every yamux connection (DHT, gossip, consensus links)."""
    if getattr(Yamux._write_frame, "__name__", "") != _write_frame_whole.__name__:
        Yamux._write_frame = _write_frame_whole  # type: ignore[method-assign]
