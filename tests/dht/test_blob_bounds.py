"""A blob fetched for a signed reference is bounded by the reference (issue 12, item 6): hostile
manifests in a real DHT (4 py-libp2p hosts on loopback) cost at most a chunk or two, never the
bytes they list."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import trio

from dht import records
from dht.kad import Counters, DhtNode
from dht.localnet import dht_network
from dht.records import ChunkManifest, RecordRefused
from tests.dht.certs import NETUID, vset_for
from wire.codec import encode


def stored(dht: DhtNode, keys: list[str]) -> list[str]:
    """Which keys the node kept (its SQLite store or KadDHT's memory): what a fetch left behind."""
    assert dht.store is not None
    return [k for k in keys if dht.store.has(k) or dht.kad.value_store.get(k.encode()) is not None]


async def publish(dht: DhtNode, manifest: ChunkManifest, chunks: list[bytes]) -> str:
    for c in chunks:
        await dht._put(records.content_key(hashlib.sha256(c).digest()), c)
    key = records.manifest_key(manifest)
    await dht._put(key, encode(manifest))
    return key


async def test_a_manifest_of_another_size_is_refused_before_any_chunk(tmp_path: Path) -> None:
    """A reference signed for 300 KB names the manifest of a real 2.5 MiB value: not one chunk
    is fetched, and the refusal is counted."""
    big = os.urandom(5 * 512 * 1024)
    manifest, chunks = records.split(big)
    chunk_keys = [records.content_key(h) for h in manifest.chunks]
    async with dht_network(4, NETUID, vset_for, store_dir=tmp_path) as net:
        key = await publish(net.dhts[0], manifest, chunks)
        reader = net.dhts[3]
        for k in chunk_keys:  # the put replicated them: host 3 must not have them to begin with
            reader.kad.value_store.store.pop(k.encode(), None)
        claimed = os.urandom(300_000)
        with trio.fail_after(20), pytest.raises(RecordRefused, match="ref_mismatch"):
            await reader.get_blob(key, size=len(claimed), sha256=hashlib.sha256(claimed).digest())
        with trio.fail_after(20), pytest.raises(RecordRefused, match="ref_mismatch"):  # right size
            await reader.get_blob(key, size=len(big), sha256=hashlib.sha256(claimed).digest())
        assert stored(reader, chunk_keys) == []
        m = reader.metrics
        assert isinstance(m, Counters) and m.get("dht_blobs_refused_total", reason="ref_mismatch") == 2
        # the honest reference still fetches it
        with trio.fail_after(20):
            assert await reader.get_blob(key, size=len(big), sha256=hashlib.sha256(big).digest()) == big


async def test_chunks_longer_than_their_manifest_says_stop_the_fetch(tmp_path: Path) -> None:
    """A manifest that agrees with its reference (320 KiB in 10 chunks of 32 KiB) but lists the
    hashes of 256 KiB records: the first over-long chunk ends the fetch, nothing is kept, and at
    most the chunks already in flight (this blob's concurrency) were ever asked for."""
    chunk_size = 32 * 1024
    long_chunks = [os.urandom(256 * 1024) for _ in range(10)]
    manifest = ChunkManifest(
        total_size=10 * chunk_size,
        value_hash=hashlib.sha256(b"whatever the reference says").digest(),
        chunk_size=chunk_size,
        chunks=tuple(hashlib.sha256(c).digest() for c in long_chunks),
    )
    chunk_keys = [records.content_key(h) for h in manifest.chunks]
    async with dht_network(4, NETUID, vset_for, store_dir=tmp_path) as net:
        key = await publish(net.dhts[0], manifest, long_chunks)
        reader = net.dhts[3]
        for k in chunk_keys:
            reader.kad.value_store.store.pop(k.encode(), None)
        with trio.fail_after(20), pytest.raises(RecordRefused, match="bad_chunk"):
            await reader.get_blob(key, size=manifest.total_size, sha256=manifest.value_hash)
        assert stored(reader, chunk_keys) == []
        m = reader.metrics
        assert isinstance(m, Counters)
        assert m.get("dht_blobs_refused_total", reason="bad_chunk") == 1
