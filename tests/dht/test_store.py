"""The SQLite record store: validated writes and reads, caps, persistence."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
from libp2p.records.validator import NamespacedValidator

from dht import records
from dht.records import RecordRefused
from dht.store import RecordStore, StoreFull
from tests.dht.certs import KEYS, NETUID, decision, vset_for
from wire.codec import encode


def ckey(value: bytes) -> str:
    return records.content_key(hashlib.sha256(value).digest())


@pytest.fixture
def validator() -> NamespacedValidator:
    return records.make_validator(NETUID, vset_for)


def test_put_get_persist_and_wal(tmp_path: Path, validator: NamespacedValidator) -> None:
    path = tmp_path / "sub" / "dht.sqlite"
    pkt = decision(3)
    with RecordStore(path, validator) as store:
        assert store.put(ckey(b"one"), b"one") is True
        assert store.put(ckey(b"one"), b"one") is False  # identical: nothing written
        assert store.put(records.block_key(NETUID, 3), encode(pkt)) is True
        assert (store.count, store.total_bytes) == (2, 3 + len(encode(pkt)))
    with RecordStore(path, validator) as store:  # reopened: counts rebuilt from the file
        assert store.get(ckey(b"one")) == b"one"
        assert store.get(records.block_key(NETUID, 3)) == encode(pkt)
        assert store.get(ckey(b"missing")) is None
        assert store.keys("/bt-block/") == [records.block_key(NETUID, 3)]
        assert (store.count, store.total_bytes) == (2, 3 + len(encode(pkt)))
        assert store.delete(ckey(b"one")) and not store.has(ckey(b"one")) and store.count == 1
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_a_second_valid_block_record_follows_the_dht_select_rule(
    tmp_path: Path, validator: NamespacedValidator
) -> None:
    a = encode(decision(3))
    b = encode(decision(3, signers=[KEYS[0], KEYS[1], KEYS[3]]))  # same block, other signers
    small, large = sorted([a, b])
    key = records.block_key(NETUID, 3)
    with RecordStore(tmp_path / "s.sqlite", validator) as store:
        assert store.put(key, large) is True
        assert store.put(key, small) is True  # preferred: replaces
        assert store.put(key, large) is False  # not preferred: kept out
        assert store.get(key) == small and store.count == 1 and store.total_bytes == len(small)


def test_invalid_records_are_never_written(tmp_path: Path, validator: NamespacedValidator) -> None:
    with RecordStore(tmp_path / "s.sqlite", validator) as store:
        with pytest.raises(RecordRefused, match="hash_mismatch"):
            store.put(ckey(b"one"), b"two")
        with pytest.raises(RecordRefused, match="not a quorum"):
            store.put(records.block_key(NETUID, 3), encode(decision(3, signers=KEYS[3:])))
        with pytest.raises(RecordRefused, match="oversize"):
            big = b"x" * (records.RECORD_VALUE_CAP + 1)
            store.put(ckey(big), big)
        assert store.count == 0 and store.keys() == []


def test_caps_refuse_instead_of_evicting(tmp_path: Path, validator: NamespacedValidator) -> None:
    with RecordStore(tmp_path / "a.sqlite", validator, max_records=2) as store:
        store.put(ckey(b"1"), b"1")
        store.put(ckey(b"2"), b"2")
        with pytest.raises(StoreFull):
            store.put(ckey(b"3"), b"3")
        assert store.keys() == sorted([ckey(b"1"), ckey(b"2")])
    with RecordStore(tmp_path / "b.sqlite", validator, max_total_bytes=10) as store:
        store.put(ckey(b"123456"), b"123456")
        with pytest.raises(StoreFull):
            store.put(ckey(b"abcde"), b"abcde")
        store.put(ckey(b"abcd"), b"abcd")  # exactly at the cap
        assert store.total_bytes == 10


def test_a_record_corrupted_on_disk_is_not_served(tmp_path: Path, validator: NamespacedValidator) -> None:
    path = tmp_path / "c.sqlite"
    with RecordStore(path, validator) as store:
        store.put(ckey(b"good"), b"good")
    db = sqlite3.connect(path)
    db.execute("UPDATE records SET value = ? WHERE key = ?", (b"evil", ckey(b"good")))
    db.commit()
    db.close()
    with RecordStore(path, validator) as store:
        with pytest.raises(RecordRefused, match="hash_mismatch"):
            store.get(ckey(b"good"))
        assert not store.has(ckey(b"good")) and store.count == 0  # and it was dropped
