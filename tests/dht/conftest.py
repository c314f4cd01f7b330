from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _quiet_libp2p() -> Iterator[None]:
    """py-libp2p resets its logger on some imports and logs refused values in hex: silence it."""
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    yield
