"""Kademlia lookups for this project's record keys (/bt-content/<hex> is 76 bytes, longer than a
peer id): py-libp2p 0.8.1's FIND_NODE handler reset the stream for any non-multihash key over 50
bytes, so every iterative lookup for one of our keys learned no peer beyond its own routing table."""

from __future__ import annotations

import hashlib
import os

import trio

from dht import records
from dht.localnet import dht_network
from tests.dht.certs import NETUID, vset_for


async def test_find_node_for_a_record_key_is_answered() -> None:
    key = records.content_key(hashlib.sha256(b"x").digest()).encode()
    assert len(key) > 50
    async with dht_network(3, NETUID, vset_for) as net:
        asker, asked = net.dhts[0], net.hosts[1].get_id()
        with trio.fail_after(10):
            peers = await asker.kad.peer_routing._query_peer_for_closest(asked, key)
        # host 1 knows hosts 0 and 2; it leaves out the requester
        assert net.hosts[2].get_id() in peers


async def test_a_blob_replicates_along_a_line_of_hosts() -> None:
    """Host 0 knows only host 1, host 3 only host 2: a put and a get must walk the line."""
    value = os.urandom(4096)
    async with dht_network(4, NETUID, vset_for, topology="line") as net:
        key = await net.dhts[0].put_blob(value)
        with trio.fail_after(30):
            got = await net.dhts[3].get_blob(key)
        assert got == value
