"""py-libp2p 0.8.1's yamux, fixed where it cost a whole connection or unbudgeted memory.

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

4. A receive window that grows for anyone, and for nothing. py-libp2p doubles a stream's window
on every read that finds slack within 4 round trips, so the few small reads of protocol
negotiation already grant the peer 4 MiB on a stream nobody has read from; and it auto-tunes up
to 16 MiB whoever the peer is. On the submit protocol (open to anyone) a stream that read one
large frame then lets its sender park the next 16 MiB in our buffer before the frame's header
is checked against the node's in-flight budget. Fix: window updates follow go-yamux's
`sendWindowUpdate` (credit back to the target once half of it is free; double the target only
when such an update comes within 4 RTTs), and `cap_receive_window(stream, limit)` bounds one
stream's target; the submit server caps its streams at `SUBMIT_WINDOW`, so what they can park
outside the in-flight budget is `submit_streams` x that cap (`tests/dht/test_yamux_window.py`).

5. Unread bytes of a dead stream kept for up to 90 s. A stream reset (by either side) or closed
both ways with unread data keeps its buffer until a sweeper, every 30 s, drops streams closed for
60 s. A peer that opens streams, fills their 256 KiB window and resets them parks 256 KiB per
stream for that long: with the submit server refusing busy streams, the adversary run's junk
flood drove validator 0's live heap to 870 MB in 20 s. Fix: a reset stream's buffer is dropped
at once (the yamux spec: a reset discards; go-yamux's Read returns ErrStreamReset), and a
stream closed both ways keeps unread data for `STALE_STREAM_GRACE_S`, swept every
`STALE_STREAM_SWEEP_S` (a live reader drains a window in milliseconds), so what closed streams
can hold is what the peer sends in that time (`tests/dht/test_yamux_window.py`).

6. An event left behind by every stream that ends under a waiting reader. A reader waits with
`await stream_events[sid].wait()` and then re-arms with `stream_events[sid] = trio.Event()`; when
the stream is finalized meanwhile (reset, or closed and drained), the finalizer pops `sid` and
sets the event, and the woken reader puts a new Event back under an id no stream has any more. A
validator's DHT and gossip streams end that way thousands of times an hour: the one-hour soak's
tracemalloc showed ~2,600 such Events (and their stream-id ints) a quarter hour on a validator,
for ever. Fix: a connection's `stream_events` accepts an entry only for a stream it has
(`_StreamEvents`); the re-arming reader then finds no event, which py-libp2p already reads as
"stream removed" and ends the read (`tests/dht/test_yamux_events.py`).

Also: why a connection ended (`end_reason`), for the logs and the DHT test harness, which fails
a test that loses a connection and names the cause.
"""

from __future__ import annotations

import logging
import sys
from collections import deque

import trio
from libp2p.io.exceptions import ConnectionClosedError
from libp2p.stream_muxer.yamux import yamux as yamux_module
from libp2p.stream_muxer.yamux.yamux import HEADER_SIZE, MAX_WINDOW_SIZE, Yamux, YamuxStream

log = logging.getLogger(__name__)

#: How long one frame's write may block (on a peer that does not read) before the connection goes.
#: Shorter than the DHT's 15 s query timeout: a caller can no longer cancel a write, so a stuck
#: connection must end before the caller would have given up. (A full 16 MiB yamux window
#: still passes in 10 s at ~13 Mbit/s.)
WRITE_DEADLINE = 10.0

#: Control frames (12 bytes each) the reader may owe the peer before it waits for them to be
#: written: 12 KiB per connection at most.
MAX_OWED = 1024

#: How long a stream closed both ways keeps unread data, and how often that is checked (fix 5).
STALE_STREAM_GRACE_S = 10.0
STALE_STREAM_SWEEP_S = 2.0

_original_init = Yamux.__init__
_original_handle_incoming = Yamux.handle_incoming
_original_cleanup_on_error = Yamux._cleanup_on_error
_original_finalize_stream_locked = Yamux._finalize_stream_locked


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


def cap_receive_window(stream: object, limit: int) -> None:
    """Never let this stream's receive window grow past `limit` bytes (fix 4). Takes the stream a
    protocol handler gets (a NetStream over yamux) or a YamuxStream; other muxers are left alone."""
    muxed = getattr(stream, "muxed_stream", stream)
    if isinstance(muxed, YamuxStream):
        muxed.__dict__["_bt_max_window"] = limit
        muxed.target_recv_window = min(muxed.target_recv_window, limit)


async def _auto_tune_and_send_window_update(self: YamuxStream, *, bytes_read: int = 0) -> None:
    """The window update after a read, as go-yamux's `sendWindowUpdate` does it (fix 4): credit
    the peer back up to the stream's target only once half of it is free, and double the target
    (up to the stream's cap) only when such an update comes within 4 round trips of the last."""
    del bytes_read  # recomputed from what is granted and buffered, not counted per read
    cap = self.__dict__.get("_bt_max_window", MAX_WINDOW_SIZE)
    async with self.window_lock:
        buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
        current = self.recv_window + buffered
        target = min(self.target_recv_window, cap)
        if target - current < target // 2:
            return
        now = trio.current_time()
        rtt = self._effective_rtt()
        if rtt > 0 and now - self.epoch_start < rtt * 4:
            target = min(target * 2, cap)
        self.target_recv_window = target
        self.epoch_start = now
        delta = target - current
        self.recv_window += delta
    await self.send_window_update(delta, skip_lock=True)


def _finalize_stream_locked(self: Yamux, stream: YamuxStream, *, fully_closed: bool) -> None:
    """Yamux._finalize_stream_locked, dropping a reset stream's unread bytes first (fix 5): the
    library keeps the entry while its buffer is non-empty, and nobody may read a reset stream."""
    if fully_closed and stream.reset_received and self.stream_buffers.get(stream.stream_id):
        self.stream_buffers[stream.stream_id] = bytearray()
    _original_finalize_stream_locked(self, stream, fully_closed=fully_closed)


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


class _StreamEvents(dict):  # type: ignore[type-arg]
    """A connection's `stream_events`: an entry only for a stream the connection has (fix 6).
    Streams are registered in `streams` before their first event is set, in both places py-libp2p
    creates one, so only a reader re-arming after its stream's finalization is turned away."""

    def __init__(self, streams: dict[int, YamuxStream]) -> None:
        super().__init__()
        self._streams = streams

    def __setitem__(self, stream_id: int, event: trio.Event) -> None:
        if stream_id in self._streams:
            super().__setitem__(stream_id, event)


def _init(self: Yamux, *args: object, **kwargs: object) -> None:
    _original_init(self, *args, **kwargs)  # type: ignore[arg-type]
    self.stream_events = _StreamEvents(self.streams)


def install() -> None:
    """Idempotent, process-wide: every yamux connection (DHT, gossip, consensus links, clients).
    Call it before the first host is created; `validator_node/p2p/host.py` and `dht/` do."""
    if Yamux._write_frame is not _write_frame:
        Yamux._write_frame = _write_frame  # type: ignore[method-assign]
        Yamux.handle_incoming = _handle_incoming  # type: ignore[method-assign]
        Yamux._cleanup_on_error = _cleanup_on_error  # type: ignore[method-assign]
        YamuxStream.recv_window = property(_get_recv_window, _set_recv_window)  # type: ignore[assignment]
        YamuxStream._auto_tune_and_send_window_update = _auto_tune_and_send_window_update  # type: ignore[method-assign]
        Yamux._finalize_stream_locked = _finalize_stream_locked  # type: ignore[method-assign]
        Yamux.__init__ = _init  # type: ignore[method-assign]
        yamux_module._STALE_STREAM_GRACE_SECONDS = STALE_STREAM_GRACE_S
        yamux_module._STALE_STREAM_SWEEP_INTERVAL = STALE_STREAM_SWEEP_S
