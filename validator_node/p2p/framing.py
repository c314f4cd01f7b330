"""Length-prefixed frames on a libp2p stream: u32 big-endian length, then the bytes.

A stream is a byte pipe (reads return arbitrary chunks), so every message is framed. The length
is checked against a cap *before* anything is buffered, so a peer cannot make us allocate
gigabytes by announcing them.
"""

from __future__ import annotations

import contextlib
from typing import Protocol

HEADER = 4


class FrameError(ValueError):
    """The peer sent a frame we refuse (over the cap, or the stream ended mid-frame)."""


class ReadableStream(Protocol):
    async def read(self, n: int | None = None) -> bytes: ...


class WritableStream(Protocol):
    async def write(self, data: bytes) -> None: ...


def frame(data: bytes) -> bytes:
    return len(data).to_bytes(HEADER, "big") + data


async def write_frame(stream: WritableStream, data: bytes) -> None:
    if len(data) > 65536:  # header and body apart: a large body is not copied whole once more
        await stream.write(len(data).to_bytes(HEADER, "big"))
        await stream.write(data)
    else:
        await stream.write(frame(data))


class FrameReader:
    def __init__(self, stream: ReadableStream, max_frame: int) -> None:
        self._stream = stream
        self._max = max_frame
        self._buf = bytearray()

    @property
    def stream(self) -> ReadableStream:
        return self._stream

    async def _fill(self, n: int) -> bool:
        while len(self._buf) < n:
            chunk = await self._stream.read(max(n - len(self._buf), 65536))
            if not chunk:
                return False
            self._buf += chunk
        return True

    async def read_header(self) -> int | None:
        """The next frame's announced size (checked against the cap), or None at a clean end of
        stream. Lets a caller reserve the bytes (p2p/budgets.py) before the body is buffered."""
        if not await self._fill(HEADER):
            if self._buf:
                raise FrameError("stream ended inside a frame header")
            return None
        size = int.from_bytes(self._buf[:HEADER], "big")
        if size > self._max:
            raise FrameError(f"frame of {size} bytes is over the cap of {self._max}")
        return size

    async def read_body(self, size: int) -> bytes:
        """The body of the frame whose header `read_header` returned. A large body is read into
        one buffer allocated at its final size (glibc maps it apart and unmaps it when freed),
        one stream chunk at a time: buffering it as a list of chunks, or a bytearray grown by
        appending, spreads it over the heap, where a small survivor keeps the freed pages (the
        adversary run's 16 MiB junk frames left ~65 MB of free heap in the target's RSS)."""
        need = HEADER + size
        if len(self._buf) >= need:
            data = bytes(memoryview(self._buf)[HEADER:need])
            del self._buf[:need]
            return data
        body = bytearray(size)
        view = memoryview(body)
        have = len(self._buf) - HEADER
        view[:have] = memoryview(self._buf)[HEADER:]
        self._buf.clear()
        while have < size:
            chunk = await self._stream.read(size - have)  # never past this frame
            if not chunk:
                raise FrameError("stream ended inside a frame")
            view[have : have + len(chunk)] = chunk
            have += len(chunk)
            del chunk
        view.release()
        return bytes(body)

    async def read_frame(self) -> bytes | None:
        """The next frame, or None at a clean end of stream."""
        size = await self.read_header()
        return None if size is None else await self.read_body(size)


async def reset_stream(stream: object) -> None:
    """Abort a stream we refuse or gave up on; a stream already gone is not an error."""
    with contextlib.suppress(Exception):
        await stream.reset()  # type: ignore[attr-defined]
