"""py-libp2p 0.8.1's KadDHT, adapted where it cannot serve this project's records.

FIND_NODE for a record key. The library's stream handler accepts a FIND_NODE key only if it
decodes as a multihash or is at most 50 bytes long, and resets the stream otherwise. Every key
of ours is longer (`/bt-content/<64 hex>` is 76 bytes, `/bt-manifest/...` 77), and KadDHT's own
`put_value` / `get_value` walk the network with FIND_NODE *for the record key*: so each peer
asked answered with a reset, a lookup never learned a peer beyond its own routing table, and a
record reached only the putter's direct neighbours (a line of four hosts could not pass one blob
from end to end; other implementations' PUTs of our keys never got as far as PUT_VALUE).
Upstream's main branch has no such length check (it answers for any non-empty key); the check
sits inline in a 600-line handler, so instead of copying the handler we give it a `multihash`
whose `decode` also accepts a well-formed key of our namespaces (`records.parse_key`), and
delegates everything else to the real module. Other long keys are still reset, as before.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import libp2p.kad_dht.kad_dht as _kad_module

from dht.records import RecordRefused, parse_key


class _RecordKeyMultihash(ModuleType):
    """The `multihash` module as KadDHT's handler sees it: a record key of ours passes."""

    def __init__(self, real: ModuleType) -> None:
        super().__init__(real.__name__, real.__doc__)
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def decode(self, value: bytes, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._real.decode(value, *args, **kwargs)
        except Exception:
            if is_record_key(value):
                return None  # the handler only needs "no exception"
            raise


def is_record_key(value: bytes) -> bool:
    """True for the bytes of a canonical key of one of our namespaces (at most 128 ASCII bytes)."""
    try:
        parse_key(value.decode("ascii"))
    except (UnicodeDecodeError, RecordRefused):
        return False
    return True


def install() -> None:
    """Idempotent: point KadDHT's handler at the shim."""
    current = _kad_module.multihash
    if not isinstance(current, _RecordKeyMultihash):
        _kad_module.multihash = _RecordKeyMultihash(current)  # type: ignore[attr-defined]
