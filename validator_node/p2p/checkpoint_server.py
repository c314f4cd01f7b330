"""Serving checkpoints and the genesis proof on `/bt-platform/checkpoint/1.0.0`, and asking for them.

A mixin of `ConsensusTransport`, kept apart from the consensus links: any peer may ask (a joiner
has no link yet), so the server is bounded in concurrent streams (in total and per peer) and in
requests per peer, and the newest checkpoint is read off the event loop at most once per
`checkpoint_cache_s`, one copy shared by every request meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from validator_node.p2p.budgets import OverLimit
from validator_node.p2p.framing import FrameError, FrameReader, reset_stream, write_frame

log = logging.getLogger("validator_node.p2p")

CHECKPOINT_PROTOCOL = "/bt-platform/checkpoint/1.0.0"
MAX_CHECKPOINT_FRAME = 300 * 1024 * 1024


class CheckpointRefused(Exception):
    """The peer refused our checkpoint request (busy or rate limited): ask another."""


class CheckpointServing:
    """Mixin: the transport provides host, metrics, limits, checkpoint, genesis, the budgets
    (`_checkpoint_streams`, `_checkpoint_rate`) and `_refuse`."""

    host: Any
    metrics: Any
    limits: Any
    checkpoint: Callable[[], bytes | None] | None
    genesis: Callable[[], bytes | None] | None
    _checkpoint_streams: Any
    _checkpoint_rate: Any
    _checkpoint_lock: trio.Lock
    _checkpoint_cache: tuple[float, bytes | None] | None

    async def _refuse(self, stream: object, protocol: str, reason: str, peer: str) -> None: ...

    async def _on_checkpoint_stream(self, stream: object) -> None:
        """Serve our newest checkpoint (verifiable by the requester: see pipeline/snapshot.py).

        Any peer may ask (a joiner has no link yet), so: at most `checkpoint_streams` served at
        once in total and one per peer, and a per-peer request rate; over either the requester
        gets `refused: <reason>` and a reset. What is served comes from `_checkpoint_reply`."""
        peer = stream.muxed_conn.peer_id.to_string()  # type: ignore[attr-defined]
        try:
            with self._checkpoint_streams.hold(peer):
                if not self._checkpoint_rate.allow(peer, requests=1):
                    await self._refuse(stream, "checkpoint", "rate limited", peer)
                    return
                await self._serve_checkpoint(stream)
        except OverLimit:
            await self._refuse(stream, "checkpoint", "busy", peer)

    async def _serve_checkpoint(self, stream: object) -> None:
        try:
            with trio.fail_after(10):
                request = await FrameReader(stream, 64).read_frame()  # type: ignore[arg-type]
            data = await self._checkpoint_reply(request)
            with trio.fail_after(60):
                await write_frame(stream, data)  # type: ignore[arg-type]
                await stream.close()  # type: ignore[attr-defined]
        except Exception as exc:
            log.debug("checkpoint stream ended: %s", exc)
            await reset_stream(stream)

    async def _checkpoint_reply(self, request: bytes | None) -> bytes:
        """The reply to one request on the checkpoint protocol (b"" when we have nothing):
        `latest` is our newest checkpoint, `genesis` the genesis record with a certified block
        naming its hash (node.genesis); both under the same stream and rate bounds."""
        if request == b"genesis":
            self.metrics.inc("genesis_served_total")
            return (self.genesis() if self.genesis else None) or b""
        if request != b"latest":
            raise FrameError(f"unknown checkpoint request {request!r}")
        self.metrics.inc("checkpoints_served_total")
        return await self._latest_checkpoint() or b""

    async def _latest_checkpoint(self) -> bytes | None:
        """Our newest checkpoint, read off the event loop at most once per `checkpoint_cache_s`
        and shared by every request meanwhile (one copy in memory however many are served)."""
        if self.checkpoint is None:
            return None
        async with self._checkpoint_lock:
            now = trio.current_time()
            cached = self._checkpoint_cache
            if cached is None or now - cached[0] >= self.limits.checkpoint_cache_s:
                self._checkpoint_cache = None  # let the old copy go before reading the new one
                data = await trio.to_thread.run_sync(self.checkpoint)
                cached = self._checkpoint_cache = (trio.current_time(), data)
            return cached[1]

    async def request_checkpoint(self, peer_id: str) -> bytes | None:
        from libp2p.custom_types import TProtocol
        from libp2p.peer.id import ID

        with trio.fail_after(60):
            stream = await self.host.new_stream(ID.from_base58(peer_id), [TProtocol(CHECKPOINT_PROTOCOL)])
            await write_frame(stream, b"latest")
            data = await FrameReader(stream, MAX_CHECKPOINT_FRAME).read_frame()
            await stream.close()
        if data is not None and data.startswith(b"refused: "):  # never a checkpoint's first bytes
            raise CheckpointRefused(data.decode(errors="replace"))
        return data or None
