"""KadDHT's in-memory value store is a bounded cache in front of the SQLite store (dht.memory).

Issue 12: on a devnet each node's RSS grew ~2.8 MB a minute; the largest part was py-libp2p's
value store keeping every decided block and every epoch's snapshot put or pushed to it for a day.
"""

from __future__ import annotations

from pathlib import Path

import trio

from dht import records
from dht.localnet import dht_network
from tests.dht.certs import NETUID, decision, vset_for
from wire.codec import encode

HEIGHTS = 999  # the test validator set is known below height 1000 (tests.dht.certs)
BLOCK = 18_000  # bytes: ~the 20 minutes of devnet blocks (2,281 of ~7.5 KB) in all
SMALL = 5_000  # small content records (e.g. payloads peers pushed): the count bound


def held(dht: object) -> tuple[int, int]:
    vs = dht.kad.value_store  # type: ignore[attr-defined]
    return len(vs.store), sum(len(r.value) for r, _ in vs.store.values())


async def test_a_node_that_decides_for_hours_holds_a_bounded_cache(tmp_path: Path) -> None:
    async with dht_network(1, NETUID, vset_for, store_dir=tmp_path) as net:
        node = net.dhts[0]
        assert node.store is not None
        keys = []
        for h in range(1, HEIGHTS + 1):
            pkt = decision(h, block=h.to_bytes(4, "big") * (BLOCK // 4))
            key, value = records.block_key(NETUID, h), encode(pkt)
            # what put_decision does on this node, without the network: store, then KadDHT's put
            node.store.put(key, value)
            node.kad.value_store.put(key.encode(), value)
            keys.append((key, value))
        for i in range(SMALL):
            value = b"payload %d" % i
            node.kad.value_store.put(records.blob_key(value).encode(), value)
        node.trim_memory()  # what the node's trim task runs every few seconds
        count, size = held(node)
        assert size <= 16 * 1024 * 1024 and count <= 4096, (count, size)
        assert count < HEIGHTS + SMALL
        # what left memory is still served: KadDHT's get (which answers peers) reads the store
        for key, value in (keys[0], keys[HEIGHTS // 2], keys[-1]):
            rec = node.kad.value_store.get(key.encode())
            assert rec is not None and rec.value == value


async def test_a_block_evicted_from_memory_is_still_served_to_peers(tmp_path: Path) -> None:
    pkts = {h: decision(h) for h in (1, 2, 3)}
    async with dht_network(3, NETUID, vset_for, store_dir=tmp_path) as net:
        for h, pkt in pkts.items():
            await net.dhts[0].put_decision(NETUID, h, pkt)
        # the others hold pushed copies in memory only; host 0 evicts everything it holds
        for d in net.dhts[1:]:
            for h in pkts:
                d.kad.value_store.store.pop(records.block_key(NETUID, h).encode(), None)
        net.dhts[0].memory_budget = 0
        assert net.dhts[0].trim_memory() >= 3
        assert held(net.dhts[0]) == (0, 0)
        with trio.fail_after(20):
            assert await net.dhts[2].get_decision(NETUID, 2) == pkts[2]


async def test_a_restarted_node_serves_its_store_without_loading_it_into_memory(tmp_path: Path) -> None:
    pkts = {h: decision(h) for h in range(1, 41)}
    async with dht_network(1, NETUID, vset_for, store_dir=tmp_path) as net:
        for h, pkt in pkts.items():
            await net.dhts[0].put_decision(NETUID, h, pkt)
    async with dht_network(1, NETUID, vset_for, store_dir=tmp_path) as net:
        assert held(net.dhts[0]) == (0, 0)
        rec = net.dhts[0].kad.value_store.get(records.block_key(NETUID, 7).encode())
        assert rec is not None and rec.value == encode(pkts[7])
