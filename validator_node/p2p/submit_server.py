"""The server side of the submit protocol: miners and the subnet owner hand items to a validator.

One reply per frame (`ok`, `ok: <note>` or `refused: <reason>`: submit_replies). The protocol is
open to anyone and a frame may be 17 MiB (a large submission), so what a stream can hold is capped:
streams open at once, in total and per peer, and bytes of frames being read or handled at once, in
total and per peer (reserved from the frame's header before its body is buffered). Over a cap the stream gets
`refused: busy: ...` and is closed; the refusal is counted in `p2p_over_budget_total`.

Bytes the muxer buffers before a frame's header is read are outside that reservation, so each
stream's yamux receive window is capped at `SUBMIT_WINDOW` (py-libp2p would grow it to 16 MiB for
any peer that keeps us reading): all submit streams together park at most
`submit_streams` x `SUBMIT_WINDOW` beyond the in-flight budget. At 1 MiB a 17 MiB submission still
crosses a 100 ms round trip in under 2 s.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

import trio

from dht.yamux_fixes import cap_receive_window
from validator_node.metrics import Metrics
from validator_node.p2p.budgets import ConcurrencyLimit, OverLimit, P2PLimits
from validator_node.p2p.framing import FrameError, FrameReader, reset_stream, write_frame
from validator_node.p2p.submit_replies import reply_for
from wire.errors import WireError

log = logging.getLogger("validator_node.p2p")

MAX_SUBMIT_FRAME = 17 * 1024 * 1024
SUBMIT_WINDOW = 1024 * 1024
FRAME_TIMEOUT = 30.0  # a frame's header, and then its body, must arrive within this


class SubmitServer:
    def __init__(
        self,
        on_submit: Callable[[object], str | None] | None,
        metrics: Metrics,
        limits: P2PLimits,
        refuse: Callable[[object, str, str, str], Awaitable[None]],
    ) -> None:
        self.on_submit = on_submit
        self.metrics = metrics
        self.refuse = refuse
        self.streams: ConcurrencyLimit[str] = ConcurrencyLimit(
            limits.submit_streams, limits.submit_streams_per_peer
        )
        self.bytes: ConcurrencyLimit[str] = ConcurrencyLimit(
            limits.submit_inflight_bytes, limits.submit_inflight_bytes_per_peer
        )

    async def handle(self, stream: object) -> None:
        peer = stream.muxed_conn.peer_id.to_string()  # type: ignore[attr-defined]
        cap_receive_window(stream, SUBMIT_WINDOW)
        try:
            with self.streams.hold(peer):
                await self._serve(stream, peer)
        except OverLimit:
            await self.refuse(stream, "submit", "busy: too many submit streams", peer)

    async def _serve(self, stream: object, peer: str) -> None:
        from validator_node.pipeline.messages import SUBMIT_TYPES
        from wire.codec import decode_any

        reader = FrameReader(stream, MAX_SUBMIT_FRAME)  # type: ignore[arg-type]
        try:
            while True:
                with trio.fail_after(FRAME_TIMEOUT):
                    size = await reader.read_header()
                if size is None:
                    break
                if not self.bytes.try_acquire(peer, size):
                    await self.refuse(stream, "submit", "busy: too many bytes in flight", peer)
                    return
                try:
                    with trio.fail_after(FRAME_TIMEOUT):
                        data = await reader.read_body(size)
                    try:
                        item = decode_any(data, SUBMIT_TYPES)
                        reason = self.on_submit(item) if self.on_submit else "not accepting"
                    except WireError as exc:
                        self.metrics.inc("items_refused_total", kind="malformed")
                        reason = f"malformed: {exc}"
                    del data
                    await write_frame(stream, reply_for(reason))  # type: ignore[arg-type]
                finally:
                    self.bytes.release(peer, size)
        except (FrameError, trio.TooSlowError) as exc:
            self.metrics.inc("items_refused_total", kind="bad_frame")
            log.info("submit stream refused: %s", exc)
            await reset_stream(stream)
        except Exception as exc:
            log.debug("submit stream ended: %s", exc)
            await reset_stream(stream)
        else:
            with contextlib.suppress(Exception):
                await stream.close()  # type: ignore[attr-defined]
