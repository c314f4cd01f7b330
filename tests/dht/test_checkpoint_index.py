"""The subnet's checkpoint index (/bt-checkpoint/<netuid>) over real hosts on loopback: published
next to the snapshot, found by a host that holds nothing, converging on the newest, and refused
(with a reason, counted) whenever it does not prove where a certified state is."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace

import pytest
import trio

from consensus.messages import DecisionPacket
from dht import records
from dht.kad import BlobNotFound, Counters, DhtNode
from dht.localnet import dht_network, make_host
from dht.records import RECORD_VALUE_CAP, CheckpointIndex, RecordRefused
from tests.dht.certs import KEYS, NETUID, decision, vset_for
from validator_node.block import build_block
from validator_node.state_sync import block_header
from wire.codec import encode

KEY = records.checkpoint_key(NETUID)


def next_block(height: int, snapshot: bytes, signers: list | None = None) -> DecisionPacket:  # type: ignore[type-arg]
    """Block height+1, committing to sha256(snapshot), certified (by default) by a quorum."""
    block = build_block(height + 1, b"p" * 32, KEYS[0].public_key, 7, hashlib.sha256(snapshot).digest())
    return decision(height + 1, block, signers)


def index(height: int, state: bytes, **changes: object) -> CheckpointIndex:
    manifest = records.split(state)[0] if len(state) > RECORD_VALUE_CAP else None
    return replace(CheckpointIndex(height, next_block(height, state), manifest), **changes)  # type: ignore[arg-type]


def metrics(dht: DhtNode) -> Counters:
    assert isinstance(dht.metrics, Counters)
    return dht.metrics


async def test_the_newest_checkpoint_is_found_by_a_host_holding_nothing() -> None:
    small = os.urandom(4096)
    big = os.urandom(5 * 512 * 1024)  # 2.5 MiB: a chunked snapshot, named by its manifest
    async with dht_network(4, NETUID, vset_for, block_header=block_header) as net:
        assert await net.dhts[0].put_checkpoint(NETUID, 4, small, next_block(4, small)) == KEY
        await net.dhts[1].put_checkpoint(NETUID, 8, big, next_block(8, big))
        # every host now holds the index for 8: select keeps the higher height, and an older
        # index published afterwards replaces nothing
        await net.dhts[0].put_checkpoint(NETUID, 4, small, next_block(4, small))
        for d in net.dhts:
            rec = d.kad.value_store.get(KEY.encode())
            assert rec is not None
            assert d.checkpoints is not None and d.checkpoints.decode_valid(KEY, rec.value)[0].height == 8
        # host 3 forgets the index and the snapshot, and holds a stale (valid) index for 4 instead:
        # it must still find 8 and fetch the snapshot chunk by chunk
        d3 = net.dhts[3]
        for k in [
            KEY,
            records.blob_key(big),
            *(records.content_key(h) for h in records.split(big)[0].chunks),
        ]:
            d3.kad.value_store.store.pop(k.encode(), None)
        d3.kad.value_store.put(KEY.encode(), encode(index(4, small)))
        with trio.fail_after(20):  # a lost connection fails the test by name (dht_network)
            got = await d3.get_checkpoint(NETUID)
        assert got is not None
        height, snapshot, nb = got
        assert (height, snapshot) == (8, big) and nb.certificate.height == 9
        assert d3.checkpoints is not None
        assert d3.checkpoints.decode_valid(KEY, d3.kad.value_store.get(KEY.encode()).value)[0].height == 8  # type: ignore[union-attr]
        assert metrics(d3).get("dht_ops_total", op="get_checkpoint", result="ok") == 1


async def test_forged_checkpoint_indexes_are_refused_with_a_reason() -> None:
    snap = os.urandom(2048)
    big = os.urandom(RECORD_VALUE_CAP + 10)
    other_manifest = records.split(os.urandom(RECORD_VALUE_CAP + 10))[0]
    good = index(4, snap)
    nb = good.next_block
    forged = {
        "bad_certificate": encode(replace(good, next_block=next_block(4, snap, KEYS[2:]))),  # 30 of 100
        "wrong_height": encode(replace(good, height=5)),  # certificate is for block 5, not 6
        "block_hash_mismatch": encode(replace(good, next_block=replace(nb, block=nb.block + b"x"))),
        "root_mismatch": encode(index(4, big, snapshot=other_manifest)),  # chunks of another state
        "no_validator_set": encode(index(2000, snap)),  # a height whose validators we do not know
        "malformed": b"\x83\x01\x02\x03",
    }
    undecodable = decision(5, b"not a node block")  # certified, but not a block: no state root
    forged["malformed_block"] = encode(replace(good, next_block=undecodable))
    async with dht_network(3, NETUID, vset_for, block_header=block_header) as net:
        push = net.dhts[0].kad.value_store._store_at_peer
        target = net.hosts[1].get_id()
        for value in forged.values():
            assert await push(target, KEY.encode(), value) is False
        wrong_netuid = records.checkpoint_key(NETUID + 1)
        assert await push(target, wrong_netuid.encode(), encode(good)) is False
        assert net.dhts[1].kad.value_store.get(KEY.encode()) is None
        m1 = metrics(net.dhts[1])
        for reason in [*forged, "wrong_netuid"]:
            want = "malformed" if reason == "malformed_block" else reason
            assert m1.get("dht_records_refused_total", ns="bt-checkpoint", reason=want) >= 1, reason
        # a peer that serves a forged index (planted in its memory) is not believed; the index
        # is simply not found
        net.dhts[1].kad.value_store.put(KEY.encode(), forged["bad_certificate"])
        assert await net.dhts[2].get_checkpoint(NETUID) is None
        assert metrics(net.dhts[2]).get("dht_records_refused_total", reason="bad_certificate") >= 1
        # a valid index whose snapshot nobody serves: a clean error, counted
        net.dhts[1].kad.value_store.put(KEY.encode(), encode(good))
        with pytest.raises(BlobNotFound):
            await net.dhts[2].get_checkpoint(NETUID)
        assert metrics(net.dhts[2]).get("dht_ops_total", op="get_checkpoint", result="error") == 1
        # the writer refuses a forgery before storing or sending anything
        with pytest.raises(RecordRefused, match="bad_certificate"):
            await net.dhts[0].put_checkpoint(NETUID, 4, snap, next_block(4, snap, KEYS[2:]))
        with pytest.raises(RecordRefused, match="root_mismatch"):
            await net.dhts[0].put_checkpoint(NETUID, 4, os.urandom(100), nb)
        assert not net.dhts[0].store or not net.dhts[0].store.has(KEY)


async def test_a_dht_without_a_block_decoder_refuses_the_namespace() -> None:
    host = make_host("no-decoder")
    dht = DhtNode(host, NETUID, vset_for)
    with pytest.raises(Exception, match="No validator registered"):
        dht.validator.validate(KEY, encode(index(4, b"state")))
    with pytest.raises(RecordRefused, match="unknown_namespace"):
        await dht.put_checkpoint(NETUID, 4, b"state", next_block(4, b"state"))


def test_heights_without_a_known_set_are_judged_by_todays_chain() -> None:
    """A new node knows no set for the network's recent heights, only today's chain validators:
    a checkpoint index then needs signers holding more than a third of today's stake (the node
    checks the set the checkpoint names after fetching it); a decided block still needs a quorum."""
    from consensus.validators import ValidatorSet
    from tests.dht.certs import OUTSIDER

    snap = b"a state"
    # today's chain: KEYS[0] (40) and an outsider with 50 of 100: KEYS[:3] hold 40 of it
    today = ValidatorSet.of([(KEYS[0].public_key, 40), (OUTSIDER.public_key, 50), (KEYS[3].public_key, 10)])
    table = records.validators(NETUID, vset_for, block_header=block_header, trust_for=lambda h: today)
    ckey, value = KEY, encode(index(2000, snap))  # certified by KEYS[:3]; 2000: no known set
    table[records.NS_CHECKPOINT].validate(ckey, value)  # 40 of 100 of today's stake vouch
    with pytest.raises(RecordRefused, match="more than a third"):  # only KEYS[3] (10) vouches
        table[records.NS_CHECKPOINT].validate(
            ckey, encode(replace(index(2000, snap), next_block=next_block(2000, snap, KEYS[1:])))
        )
    with pytest.raises(RecordRefused, match="not in the validator set"):  # blocks need a quorum
        table[records.NS_BLOCK].validate(records.block_key(NETUID, 2001), encode(decision(2001)))
    # without a trust root such heights are refused, as before
    strict = records.validators(NETUID, vset_for, block_header=block_header)
    with pytest.raises(RecordRefused, match="no known validator set"):
        strict[records.NS_CHECKPOINT].validate(ckey, value)


def test_a_trimmed_copy_of_the_newest_index_never_wins() -> None:
    """At one height, the copy with the most signatures is selected: a peer cannot displace the
    full certificate with one trimmed to what a new node's DHT would still accept."""
    snap = b"a state"
    full = encode(index(8, snap, next_block=next_block(8, snap, KEYS)))
    trimmed = encode(index(8, snap, next_block=next_block(8, snap, KEYS[:2])))
    older = encode(index(4, snap))
    v = records.validators(NETUID, vset_for, block_header=block_header)[records.NS_CHECKPOINT]
    for values in ([trimmed, full, older], [full, trimmed], [older, trimmed, full]):
        assert values[v.select(KEY, values)] == full
