"""A referenced payload is fetched within the bounds of its signed reference (issue 12, item 6):
`PayloadDuty._payload_of` against a real DHT (4 py-libp2p hosts on loopback) holding a hostile
manifest, and a node-wide cap on referenced payloads fetched at once."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import trio

from dht import records
from dht.kad import DhtNode
from dht.localnet import dht_network
from tests.dht.certs import NETUID, vset_for
from validator_node.metrics import Metrics
from validator_node.payloads import PAYLOAD_FETCH_CONCURRENCY, PayloadDuty, PayloadStore, dht_key_of
from validator_node.pipeline.messages import PayloadRef
from validator_node.pipeline.state import Admitted


class Duty(PayloadDuty):
    """The payload half of a ValidatorNode: its DHT, payload store and metrics, nothing else."""

    def __init__(self, dht: DhtNode, path: Path) -> None:
        self.dht = dht
        self.metrics = Metrics()
        self.payloads = PayloadStore(path)
        self.app = SimpleNamespace(state=SimpleNamespace(epoch_of=lambda height: 0))


def admitted(ref: PayloadRef) -> Admitted:
    return Admitted(ref.sha256, "c", b"m" * 32, 1, 5, b"", b"s" * 32, payload_ref=ref)


async def test_a_reference_naming_a_bigger_manifest_fetches_no_chunk(tmp_path: Path) -> None:
    big = os.urandom(5 * 512 * 1024)  # 2.5 MiB, 3 chunks, really in the DHT
    claimed = os.urandom(300_000)  # what the signed reference says the payload is
    ref = PayloadRef(hashlib.sha256(claimed).digest(), len(claimed), dht_key_of(big))
    chunk_keys = [records.content_key(h) for h in records.split(big)[0].chunks]
    async with dht_network(4, NETUID, vset_for, store_dir=tmp_path) as net:
        await net.dhts[0].put_blob(big)
        reader = net.dhts[3]
        for k in chunk_keys:
            reader.kad.value_store.store.pop(k.encode(), None)
        duty = Duty(reader, tmp_path / "payloads.sqlite")
        with trio.fail_after(20):  # refused at once: no waiting out the 30 s patience
            assert await duty._payload_of(admitted(ref)) is None
        assert reader.store is not None
        assert [k for k in chunk_keys if reader.store.has(k)] == []
        assert [k for k in chunk_keys if reader.kad.value_store.get(k.encode())] == []
        assert duty.metrics.get("payloads_refused_total", reason="ref_mismatch") == 1
        duty.payloads.close()


async def test_referenced_payloads_are_fetched_a_few_at_a_time(tmp_path: Path) -> None:
    values = [os.urandom(300_000 + i) for i in range(5)]
    refs = [PayloadRef(hashlib.sha256(v).digest(), len(v), dht_key_of(v)) for v in values]
    async with dht_network(3, NETUID, vset_for, store_dir=tmp_path) as net:
        for v in values:
            await net.dhts[0].put_blob(v)
        reader = net.dhts[2]
        duty = Duty(reader, tmp_path / "payloads.sqlite")
        in_flight, most = 0, 0
        real_get_blob = reader.get_blob

        async def counting_get_blob(*args: Any, **kwargs: Any) -> bytes:
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            try:
                await trio.sleep(0.05)  # let every evaluation that would fetch now reach this point
                return await real_get_blob(*args, **kwargs)
            finally:
                in_flight -= 1

        reader.get_blob = counting_get_blob  # type: ignore[method-assign]
        got: list[bytes | None] = [None] * len(refs)

        async def one(i: int) -> None:
            got[i] = await duty._payload_of(admitted(refs[i]))

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for i in range(len(refs)):
                    nursery.start_soon(one, i)
        assert got == values
        assert most == PAYLOAD_FETCH_CONCURRENCY
        duty.payloads.close()
