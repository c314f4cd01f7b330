"""No chain test may reach a network: a socket connect or DNS lookup during a test fails it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

_guard = {"on": False, "seen": []}


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _guard["on"] and event in ("socket.connect", "socket.getaddrinfo"):
        _guard["seen"].append((event, args))  # type: ignore[attr-defined]
        raise RuntimeError(f"chain tests must not touch the network: {event} {args!r}")


sys.addaudithook(_audit)


@pytest.fixture(autouse=True)
def no_network() -> Iterator[None]:
    _guard["on"], _guard["seen"] = True, []
    try:
        yield
    finally:
        _guard["on"] = False
    assert not _guard["seen"], _guard["seen"]
