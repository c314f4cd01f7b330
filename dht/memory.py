"""KadDHT's in-memory value store, made a bounded cache in front of the node's SQLite record store.

py-libp2p's `ValueStore` keeps every record it is given in a dict for 24 hours (up to 50,000 of
up to 1 MiB each). A validator puts one decided block per height and one state snapshot per
epoch, and every peer pushes the same to it, so on a devnet (0.5 s blocks) that dict grew by
~1.8 MB a minute and was the main part of issue 12's memory growth. The byte budget `DhtNode`
enforced (512 MiB) bounded it only far above any sane RSS.

Here the dict is a cache: `trim` keeps it under a byte budget and a record count (records pushed
by peers go first, oldest first; then our own), and `get` answers a miss from the SQLite store for
the immutable namespaces (content, manifest, decided blocks), so a record evicted from memory is
still served to peers (each such answer costs one primary-key read and the record's validation).
The checkpoint index is mutable (`DhtNode._get_newest` relies on setting the memory copy aside to
ask the network), so it is neither read through nor evicted; there is one per subnet.
"""

from __future__ import annotations

from collections.abc import Callable

from libp2p.kad_dht.common import format_time_rfc3339
from libp2p.kad_dht.pb.kademlia_pb2 import Record
from libp2p.kad_dht.value_store import ValueStore

from dht.records import NS_BLOCK, NS_CHECKPOINT, NS_CONTENT, NS_MANIFEST

#: namespaces whose stored record is the answer (a key's value never changes, or the store keeps
#: the preferred one): served from SQLite on a memory miss
READ_THROUGH = tuple(f"/{ns}/".encode() for ns in (NS_CONTENT, NS_MANIFEST, NS_BLOCK))
PINNED = f"/{NS_CHECKPOINT}/".encode()

Backing = Callable[[str], "bytes | None"]


class BoundedValueStore(ValueStore):
    """A `ValueStore` whose dict is trimmed to a budget and whose misses fall back to `backing`
    (the node's `RecordStore.get`, which re-validates what it returns)."""

    def __init__(self, base: ValueStore, backing: Backing | None) -> None:
        super().__init__(base.host, base.local_peer_id)
        self.backing = backing
        self.read_through = 0

    def get(self, key: bytes) -> Record | None:
        found = super().get(key)
        if found is not None or self.backing is None or not key.startswith(READ_THROUGH):
            return found
        try:
            value = self.backing(key.decode())
        except Exception:  # not valid any more (the store deleted it) or undecodable key
            return None
        if value is None:
            return None
        self.read_through += 1
        # not put back into the dict: a peer walking old heights must not refill the cache.
        # Unsigned: KadDHT checks a record's signature only if it has one, and what a validator
        # accepts is decided by the record validators (hash or certificate), not by who sent it.
        return Record(key=key, value=value, timeReceived=format_time_rfc3339())

    def trim(self, max_bytes: int, max_records: int) -> list[bytes]:
        """Evict until at most `max_bytes` of values in at most `max_records` records are held:
        records pushed by peers first, oldest first, then our own (all of which the SQLite store
        holds). Returns the evicted keys."""
        total = sum(len(rec.value) for rec, _ in self.store.values())
        if total <= max_bytes and len(self.store) <= max_records:
            return []
        keys = [k for k in self.store if not k.startswith(PINNED)]
        order = [k for k in keys if k not in self.local_keys] + [k for k in keys if k in self.local_keys]
        evicted = []
        for k in order:
            if total <= max_bytes and len(self.store) <= max_records:
                break
            rec, _ = self.store.pop(k)
            total -= len(rec.value)
            evicted.append(k)
        # KadDHT's republish bookkeeping is keyed by the same keys and is never pruned by it
        for k in evicted:
            self.local_keys.discard(k)
            self._last_republish.pop(k, None)
        for k in [k for k in self._last_republish if k not in self.store]:
            del self._last_republish[k]
        return evicted
