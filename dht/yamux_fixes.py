"""py-libp2p 0.8.1's yamux, fixed in two ways that each used to cost a whole connection.

1. A cancelled frame write. Yamux writes a frame through the Noise session: `encrypt` advances
the session's nonce synchronously, then the ciphertext is written with awaits in between (a lock,
then the socket's `send_all`, in 64 KiB Noise messages for a large frame). A caller whose cancel
scope fires at one of those awaits (any `move_on_after` around a stream write, or a nursery
cancelled because a lookup already has its answer: KadDHT cancels its remaining queries as soon
as a quorum answered) leaves a message encrypted but never sent, or sent in part. The peer then
decrypts the next message with the wrong nonce ("Failed authentication of message") and closes
the connection, with every other stream on it. Reproduced by `tests/dht/test_cancelled_writes.py`.
Fix: once a frame is handed to the session it is written whole (shielded from the caller's
cancellation; waiting for the write lock stays cancellable, nothing is written then). A shielded
write that cannot finish in `WRITE_DEADLINE` seconds (a peer that stopped reading) closes the
connection, since its byte stream may now hold half a message.

2. A reader that waits on writers: a mutual deadlock. The connection's one reader task
(`Yamux.handle_incoming`) answers some frames itself: the ACK of each stream the peer opens (or
an RST for a duplicate SYN) and the reply to a ping. It wrote them inline, taking the write lock,
so while a writer held that lock and was blocked on a full socket, nothing was read. When both
hosts write more than the two socket buffers hold and either opens a stream, both readers wait
for their own writers, each writer waits for the other side to read: nothing moves until
`WRITE_DEADLINE` closes the connection (before fix 1, for ever). Seen as
`tests/dht/test_checkpoint_index.py` failing now and then under load, and reproduced by
`tests/dht/test_yamux_reader_never_blocks.py` (two hosts flooding each other with new streams:
stalls on the first round). Upstream's main branch (and rust-yamux issue #227) has the same shape.
Fix: a frame the reader writes is queued ("owed") instead; a flusher task writes the owed frames
as soon as the lock is free, and every other frame write first writes what is owed, so an ACK
still precedes the stream's first data frame. The reader therefore keeps reading while writes
are blocked. The queue is bounded (`MAX_OWED`): past it the reader waits as before, which is
back-pressure on a peer that opens streams or pings faster than it reads our replies.

3. A receive window that is not enforced. The reader appends every DATA frame to its stream's
buffer and, when the peer has sent past the window it was granted, logs a warning and keeps the
data: a peer that ignores the window can park any amount of memory on one stream we do not read
(30 MB on an idle stream in a second, `tests/dht/test_yamux_window.py`). The yamux spec makes an
overrun a protocol error, and go-yamux ends the session on it ("recv window exceeded"). Fix: the
stream's `recv_window` going negative marks the connection as ending; the reader stops after
that frame and the connection is closed. What one connection can park is therefore its streams'
granted windows (each at most `MAX_WINDOW_SIZE`, 16 MiB) plus one frame.

Also: why a connection ended (`end_reason`), for the logs and the DHT test harness, which fails
a test that loses a connection and names the cause.
"""

from __future__ import annotations

import logging
import sys
from collections import deque

import trio
from libp2p.io.exceptions import ConnectionClosedError
from libp2p.stream_muxer.yamux.yamux import HEADER_SIZE, Yamux, YamuxStream

log = logging.getLogger(__name__)

#: How long one frame's write may block (on a peer that does not read) before the connection goes.
#: Shorter than the DHT's 15 s query timeout: a caller can no longer cancel a write, so a stuck
#: connection must end before the caller would have given up. (A full 16 MiB yamux window
#: still passes in 10 s at ~13 Mbit/s.)
WRITE_DEADLINE = 10.0

#: Control frames (12 bytes each) the reader may owe the peer before it waits for them to be
#: written: 12 KiB per connection at most.
MAX_OWED = 1024

_original_handle_incoming = Yamux.handle_incoming
_original_cleanup_on_error = Yamux._cleanup_on_error


def end_reason(muxed_conn: object) -> str:
    """Why this yamux connection ended, as far as its reader knew ("" while it runs)."""
    reason = getattr(muxed_conn, "__dict__", {}).get("_bt_end")
    if reason:
        return str(reason)
    return "closed locally" if getattr(muxed_conn, "is_closed", False) else ""


async def _cleanup_on_error(self: Yamux) -> None:
    """Yamux._cleanup_on_error (the reader's way out), remembering why it was taken: the
    exception being handled, if any (every path but EOF, GO_AWAY and an oversized frame)."""
    if "_bt_end" not in self.__dict__:
        exc = sys.exc_info()[1]
        self.__dict__["_bt_end"] = (
            f"{type(exc).__name__}: {exc}"
            if exc is not None
            else "ended by the peer (EOF, GO_AWAY or a bad frame)"
        )
        log.debug("yamux: connection to %s ended: %s", self.peer_id, self.__dict__["_bt_end"])
    await _original_cleanup_on_error(self)


def _owed(self: Yamux) -> deque[bytes]:
    owed: deque[bytes] | None = self.__dict__.get("_bt_owed")
    if owed is None:
        owed = self.__dict__["_bt_owed"] = deque()
    return owed


async def _handle_incoming(self: Yamux) -> None:
    """Yamux.handle_incoming, with its task remembered (that task's writes are queued), and the
    connection closed when the peer overran a receive window (fix 3)."""
    self.__dict__["_bt_reader"] = trio.lowlevel.current_task()
    await _original_handle_incoming(self)
    if self.__dict__.get("_bt_overrun") and not self.event_closed.is_set():
        log.warning("yamux: %s; connection closed", self.__dict__.get("_bt_end"))
        await self._cleanup_on_error()


def _get_recv_window(stream: YamuxStream) -> int:
    return int(stream.__dict__.get("_bt_recv_window", 0))


def _set_recv_window(stream: YamuxStream, value: int) -> None:
    """The library subtracts each DATA frame from the window and, below zero, only warns: here a
    negative window ends the connection (the reader's loop stops after this frame)."""
    if value < 0:
        conn = stream.muxed_conn
        if not conn.__dict__.get("_bt_overrun"):
            conn.__dict__["_bt_overrun"] = True
            conn.__dict__.setdefault(
                "_bt_end", f"peer overran stream {stream.stream_id}'s receive window by {-value} bytes"
            )
            conn.event_shutting_down.set()
    stream.__dict__["_bt_recv_window"] = value


async def _write_frame(self: Yamux, data: bytes) -> None:
    """Yamux._write_frame: never blocks the reader; writes owed frames first; a write once
    started is written whole (fixes 1 and 2 of the module docstring)."""
    owed = _owed(self)
    if (
        self.__dict__.get("_bt_reader") is trio.lowlevel.current_task()
        and len(data) == HEADER_SIZE
        and len(owed) < MAX_OWED
        and self._nursery is not None
    ):
        owed.append(data)
        if not self.__dict__.get("_bt_flushing"):
            self.__dict__["_bt_flushing"] = True
            self._nursery.start_soon(_flush_owed, self)
        return
    await _write_locked(self, data)


async def _flush_owed(self: Yamux) -> None:
    """Write what the reader owes, as soon as the write lock is free."""
    try:
        while _owed(self):
            await _write_locked(self, b"")
    except Exception as exc:  # the connection is broken: let the reader find out and clean up
        log.debug("yamux: owed control frames to %s not written: %s", self.peer_id, exc)
        self.__dict__.setdefault("_bt_end", f"a control frame write failed: {type(exc).__name__}: {exc}")
        with trio.CancelScope(shield=True), trio.move_on_after(1.0):
            try:
                await self.secured_conn.close()
            except Exception as close_exc:
                log.debug("closing a broken yamux connection: %s", close_exc)
    finally:
        self.__dict__["_bt_flushing"] = False


async def _write_locked(self: Yamux, data: bytes) -> None:
    async with self._write_lock:  # cancellable: nothing has been encrypted or written yet
        owed = _owed(self)
        payload = b"".join(owed) + data
        owed.clear()
        if not payload:
            return
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + WRITE_DEADLINE
            await self.secured_conn.write(payload)
        if scope.cancelled_caught:  # half a message may be on the wire: the session is over
            self.__dict__.setdefault("_bt_end", f"a frame write stalled for {WRITE_DEADLINE:.0f} s")
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
    """Idempotent, process-wide: every yamux connection (DHT, gossip, consensus links, clients).
    Call it before the first host is created; `validator_node/p2p/host.py` and `dht/` do."""
    if Yamux._write_frame is not _write_frame:
        Yamux._write_frame = _write_frame  # type: ignore[method-assign]
        Yamux.handle_incoming = _handle_incoming  # type: ignore[method-assign]
        Yamux._cleanup_on_error = _cleanup_on_error  # type: ignore[method-assign]
        YamuxStream.recv_window = property(_get_recv_window, _set_recv_window)  # type: ignore[assignment]
