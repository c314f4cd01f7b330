"""Real multi-host DHT over loopback: 4 py-libp2p hosts (TCP + Noise + yamux) in one trio process."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import trio

from consensus.messages import MAX_BLOCK_SIZE
from dht import records
from dht.kad import DHT_PROTOCOL_ID, BlobNotFound, Counters, DhtNode
from dht.localnet import dht_network
from dht.records import RECORD_VALUE_CAP, ChunkManifest, RecordRefused
from tests.dht.certs import KEYS, NETUID, OUTSIDER, decision, vset_for
from wire.codec import decode, encode


def forget(dht: DhtNode, *keys: str) -> None:
    """Drop keys from a node's in-memory KadDHT store, so its next get must go to the network."""
    for k in keys:
        dht.kad.value_store.store.pop(k.encode(), None)


def held_by(net_dhts: list[DhtNode], key: str) -> list[int]:
    return [i for i, d in enumerate(net_dhts) if d.kad.value_store.get(key.encode()) is not None]


async def test_protocol_id_is_the_standard_kademlia_one() -> None:
    assert DHT_PROTOCOL_ID == "/ipfs/kad/1.0.0"


async def test_chunked_blob_put_on_one_host_is_fetched_and_verified_by_another(tmp_path: Path) -> None:
    value = os.urandom(5 * 512 * 1024)  # 2.5 MiB: three chunks
    manifest, _ = records.split(value)
    chunk_keys = [records.content_key(h) for h in manifest.chunks]
    async with dht_network(4, NETUID, vset_for, store_dir=tmp_path) as net:
        key = await net.dhts[0].put_blob(value)
        assert key == records.blob_key(value) and key.startswith("/bt-manifest/")
        assert len(manifest.chunks) == 3
        # every chunk and the manifest replicated to the other hosts (each under the record cap)
        for k in [key, *chunk_keys]:
            assert held_by(net.dhts, k) == [0, 1, 2, 3]
        # host 3 forgets them all: it must fetch the manifest and every chunk over the network
        forget(net.dhts[3], key, *chunk_keys)
        with trio.fail_after(20):
            got = await net.dhts[3].get_blob(key)
        assert got == value
        store3 = net.dhts[3].store
        assert store3 is not None and store3.has(key) and all(store3.has(k) for k in chunk_keys)
        metrics = net.dhts[3].metrics
        assert isinstance(metrics, Counters)
        assert metrics.get("dht_ops_total", op="get_blob", result="ok") == 1
        # small blobs are one content record, addressable by their sha256 alone
        small = b"payload " * 100
        small_key = await net.dhts[1].put_blob(small)
        forget(net.dhts[2], small_key)
        assert await net.dhts[2].get_blob(hashlib.sha256(small).digest()) == small
        # nobody has it: a clean BlobNotFound, counted
        with pytest.raises(BlobNotFound):
            await net.dhts[2].get_blob(hashlib.sha256(b"never stored").hexdigest())
        assert metrics is not None
        m2 = net.dhts[2].metrics
        assert isinstance(m2, Counters) and m2.get("dht_ops_total", op="get_blob", result="not_found") == 1


async def test_decided_block_put_and_get_across_hosts(tmp_path: Path) -> None:
    pkt = decision(5)
    big = decision(6, block=os.urandom(MAX_BLOCK_SIZE))  # too big for one record: goes by reference
    assert len(encode(big)) > RECORD_VALUE_CAP
    async with dht_network(3, NETUID, vset_for, store_dir=tmp_path) as net:
        k5 = await net.dhts[0].put_decision(NETUID, 5, pkt)
        k6 = await net.dhts[0].put_decision(NETUID, 6, big)
        assert (k5, k6) == (records.block_key(NETUID, 5), records.block_key(NETUID, 6))
        ref = net.dhts[1].kad.value_store.get(k6.encode())
        assert ref is not None and decode(ref.value, records.DecisionRef).certificate == big.certificate
        forget(net.dhts[2], k5, k6)
        with trio.fail_after(20):
            assert await net.dhts[2].get_decision(NETUID, 5) == pkt
            assert await net.dhts[2].get_decision(NETUID, 6) == big
            assert await net.dhts[2].get_decision(NETUID, 7) is None
        # a certificate without a quorum is refused before anything is stored or sent
        with pytest.raises(RecordRefused, match="not a quorum"):
            await net.dhts[0].put_decision(NETUID, 8, decision(8, signers=KEYS[2:]))
        assert held_by(net.dhts, records.block_key(NETUID, 8)) == []
        assert net.dhts[0].store is not None and not net.dhts[0].store.has(records.block_key(NETUID, 8))


async def test_forged_records_pushed_to_a_peer_are_refused_and_counted() -> None:
    """Raw PUT_VALUE straight to host 1, bypassing host 0's own validation."""
    async with dht_network(3, NETUID, vset_for) as net:
        push = net.dhts[0].kad.value_store._store_at_peer
        target = net.hosts[1].get_id()
        good = b"honest bytes"
        m = ChunkManifest(total_size=10, value_hash=b"\1" * 32, chunk_size=4, chunks=(b"\2" * 32,))
        forged = {
            "hash_mismatch": (records.content_key(hashlib.sha256(good).digest()), b"tampered bytes"),
            "bad_manifest": (records.manifest_key(m), encode(m)),  # 10 bytes in 4-byte chunks is 3, not 1
            "bad_certificate": (
                records.block_key(NETUID, 3),
                encode(decision(3, signers=[*KEYS[1:3], OUTSIDER])),
            ),
            "wrong_height": (records.block_key(NETUID, 4), encode(decision(4, cert_height=5))),
            "no_validator_set": (records.block_key(NETUID, 5000), encode(decision(5000))),
            "wrong_netuid": (records.block_key(NETUID + 1, 3), encode(decision(3, netuid=NETUID + 1))),
            "unknown_namespace": ("/pk/whatever", b"x"),
        }
        for key, value in forged.values():
            assert await push(target, key.encode(), value) is False
            assert net.dhts[1].kad.value_store.get(key.encode()) is None
        m1 = net.dhts[1].metrics
        assert isinstance(m1, Counters)
        for reason in forged:
            assert m1.get("dht_records_refused_total", reason=reason) >= 1, reason
        # a peer that *serves* a forged record (planted straight into its memory) is not believed
        planted = records.content_key(hashlib.sha256(b"the real value").digest())
        net.dhts[1].kad.value_store.put(planted.encode(), b"a forged value")
        with pytest.raises(BlobNotFound):
            await net.dhts[2].get_blob(planted)
        m2 = net.dhts[2].metrics
        assert isinstance(m2, Counters) and m2.get("dht_records_refused_total", reason="hash_mismatch") == 1
        # the same path accepts an honest record, so the refusals above are the validator's doing
        ok_key = records.content_key(hashlib.sha256(good).digest())
        assert await push(target, ok_key.encode(), good) is True
        assert net.dhts[1].kad.value_store.get(ok_key.encode()) is not None


async def test_records_survive_a_restart_through_the_store(tmp_path: Path) -> None:
    value = os.urandom(RECORD_VALUE_CAP + 1)  # two chunks
    pkt = decision(9)  # sr25519 signatures are randomized: build the packet once
    async with dht_network(3, NETUID, vset_for, store_dir=tmp_path) as net:
        key = await net.dhts[0].put_blob(value)
        await net.dhts[0].put_decision(NETUID, 9, pkt)
    # only host 0 wrote these to SQLite (peers keep pushed records in memory); after a restart,
    # host 2 can fetch them only because host 0 reloads its store into the DHT
    async with dht_network(3, NETUID, vset_for, store_dir=tmp_path) as net:
        assert net.dhts[2].store is not None and not net.dhts[2].store.has(key)
        with trio.fail_after(20):
            assert await net.dhts[2].get_blob(key) == value
            assert await net.dhts[2].get_decision(NETUID, 9) == pkt
            # republish pushes what host 0 stored to the peers closest to each key (the get above
            # already copied it to hosts 1 and 2: KadDHT's entry correction; undo that first)
            k9 = records.block_key(NETUID, 9)
            forget(net.dhts[1], k9)
            forget(net.dhts[2], k9)
            assert net.dhts[2].store is not None and net.dhts[2].store.delete(k9)
            assert held_by(net.dhts, k9) == [0]
            assert await net.dhts[0].republish("/bt-block/") == 1
            assert held_by(net.dhts, k9) == [0, 1, 2]


async def test_memory_held_for_peers_is_trimmed_to_the_budget() -> None:
    """Any peer can push valid content records; KadDHT caps its memory store by count only."""
    async with dht_network(3, NETUID, vset_for) as net:
        own = await net.dhts[1].put_blob(b"host 1's own record")
        value = os.urandom(5 * 512 * 1024)
        await net.dhts[0].put_blob(value)  # manifest + 3 chunks pushed into host 1's memory
        host1 = net.dhts[1]
        held = sum(len(r.value) for r, _ in host1.kad.value_store.store.values())
        assert held > len(value)
        host1.memory_budget = 1024 * 1024
        evicted = host1.trim_memory()
        assert evicted >= 2
        assert sum(len(r.value) for r, _ in host1.kad.value_store.store.values()) <= 1024 * 1024
        assert host1.kad.value_store.get(own.encode()) is not None  # peers' records went first
        m1 = host1.metrics
        assert isinstance(m1, Counters) and m1.get("dht_memory_evicted_total") == evicted
        # the others still serve it
        assert await host1.get_blob(records.blob_key(value)) == value
