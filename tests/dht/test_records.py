"""Record keys, validators and chunking: pure, no network."""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from libp2p.records.utils import InvalidRecordType

from consensus.messages import PHASE_PREPARE, VoteSignature
from dht import records
from dht.records import (
    RECORD_VALUE_CAP,
    ChunkManifest,
    ContentValidator,
    DecisionValidator,
    ManifestValidator,
    RecordRefused,
    join,
    split,
)
from tests.dht.certs import KEYS, NETUID, OUTSIDER, decision, vset_for
from wire.codec import encode

values = st.binary(min_size=1, max_size=4000)
chunk_sizes = st.integers(min_value=1, max_value=700)


# --- split / join --------------------------------------------------------------------------------


@given(values, chunk_sizes)
def test_split_join_round_trip(value: bytes, chunk_size: int) -> None:
    manifest, chunks = split(value, chunk_size)
    assert join(manifest, chunks) == value
    assert len(chunks) == -(-len(value) // chunk_size)
    assert all(len(c) == chunk_size for c in chunks[:-1]) and 1 <= len(chunks[-1]) <= chunk_size
    # the manifest survives its own wire form and validates under its key
    ManifestValidator().validate(records.manifest_key(manifest), encode(manifest))


@given(values, chunk_sizes, st.data())
def test_any_tampered_chunk_is_refused(value: bytes, chunk_size: int, data: st.DataObject) -> None:
    manifest, chunks = split(value, chunk_size)
    i = data.draw(st.integers(0, len(chunks) - 1), label="chunk")
    kind = data.draw(st.sampled_from(["flip", "truncate", "extend", "drop", "duplicate"]), label="kind")
    bad = list(chunks)
    if kind == "flip":
        pos = data.draw(st.integers(0, len(bad[i]) - 1))
        bad[i] = bad[i][:pos] + bytes([bad[i][pos] ^ data.draw(st.integers(1, 255))]) + bad[i][pos + 1 :]
    elif kind == "truncate":
        bad[i] = bad[i][:-1]
    elif kind == "extend":
        bad[i] = bad[i] + b"\0"
    elif kind == "drop":
        del bad[i]
    else:
        bad.insert(i, bad[i])
    with pytest.raises(RecordRefused):
        join(manifest, bad)


@given(values, chunk_sizes, st.data())
def test_any_tampered_manifest_is_refused(value: bytes, chunk_size: int, data: st.DataObject) -> None:
    manifest, chunks = split(value, chunk_size)
    field = data.draw(st.sampled_from(["total_size", "value_hash", "chunk_size", "chunks"]))
    if field == "total_size":
        bad = replace(
            manifest, total_size=data.draw(st.integers(0, 10_000).filter(lambda n: n != len(value)))
        )
    elif field == "chunk_size":
        bad = replace(manifest, chunk_size=data.draw(st.integers(1, 800).filter(lambda n: n != chunk_size)))
    elif field == "value_hash":
        bad = replace(manifest, value_hash=data.draw(st.binary(min_size=32, max_size=32)))
    else:
        i = data.draw(st.integers(0, len(chunks) - 1))
        h = data.draw(st.binary(min_size=32, max_size=32))
        bad = replace(manifest, chunks=(*manifest.chunks[:i], h, *manifest.chunks[i + 1 :]))
    if field == "chunk_size":
        # another chunk size can describe the same chunks (a 1-byte value, any size >= 1): then
        # join must still return exactly the original value, never anything else
        with contextlib.suppress(RecordRefused):
            assert join(bad, chunks) == value
    else:
        with pytest.raises(RecordRefused):
            join(bad, chunks)
    # and a manifest record whose bytes changed no longer matches its key
    with pytest.raises(RecordRefused, match="hash_mismatch"):
        ManifestValidator().validate(records.manifest_key(manifest), encode(bad))


def test_split_refuses_empty_and_bad_chunk_sizes() -> None:
    with pytest.raises(ValueError):
        split(b"")
    with pytest.raises(ValueError):
        split(b"x", 0)
    with pytest.raises(ValueError):
        split(b"x", RECORD_VALUE_CAP + 1)


def test_blob_key_is_content_key_up_to_the_cap_then_manifest_key() -> None:
    small = b"a" * RECORD_VALUE_CAP
    assert records.blob_key(small) == "/bt-content/" + hashlib.sha256(small).hexdigest()
    big = small + b"b"
    manifest, chunks = split(big)
    assert records.blob_key(big) == records.manifest_key(manifest) and len(chunks) == 2
    assert all(len(encode(manifest)) < 1024 and len(c) <= RECORD_VALUE_CAP for c in chunks)


# --- content and manifest validators -------------------------------------------------------------


def test_content_validator_refusals() -> None:
    v = ContentValidator()
    good = b"hello"
    key = records.content_key(hashlib.sha256(good).digest())
    v.validate(key, good)
    for bad_key, value, reason in [
        (key, b"hellO", "hash_mismatch"),
        ("/bt-content/" + hashlib.sha256(good).hexdigest().upper(), good, "bad_key"),  # lowercase only
        (key + "/x", good, "bad_key"),
        ("/bt-content/" + hashlib.sha256(good).hexdigest()[:63], good, "bad_key"),
        (key, b"", "malformed"),
    ]:
        with pytest.raises(RecordRefused) as exc:
            v.validate(bad_key, value)
        assert exc.value.reason == reason, bad_key
    oversize = b"z" * (RECORD_VALUE_CAP + 1)
    with pytest.raises(RecordRefused) as exc:
        v.validate(records.content_key(hashlib.sha256(oversize).digest()), oversize)
    assert exc.value.reason == "oversize"


def test_manifest_validator_refuses_inconsistent_or_garbage_manifests() -> None:
    v = ManifestValidator()
    inconsistent = ChunkManifest(total_size=10, value_hash=b"\0" * 32, chunk_size=4, chunks=(b"\0" * 32,))
    too_big = ChunkManifest(
        total_size=records.MAX_BLOB_SIZE + 1, value_hash=b"\0" * 32, chunk_size=1, chunks=(b"\0" * 32,)
    )
    for m, reason in [(inconsistent, "bad_manifest"), (too_big, "oversize")]:
        with pytest.raises(RecordRefused) as exc:
            v.validate(records.manifest_key(m), encode(m))
        assert exc.value.reason == reason
    garbage = b"\xa1\x01\x02"  # a CBOR map: hashes to its key but is no manifest
    with pytest.raises(RecordRefused) as exc:
        v.validate("/bt-manifest/" + hashlib.sha256(garbage).hexdigest(), garbage)
    assert exc.value.reason == "malformed"


def test_namespaced_validator_is_strict() -> None:
    v = records.make_validator(NETUID, vset_for)
    for key in ["/pk/abc", "/ipns/abc", "plain", "/bt-other/x"]:
        with pytest.raises(InvalidRecordType):
            v.validate(key, b"x")


# --- decided blocks ------------------------------------------------------------------------------


def test_decision_validator_accepts_a_certified_block() -> None:
    v = DecisionValidator(NETUID, vset_for)
    pkt = decision(7)
    v.validate(records.block_key(NETUID, 7), encode(pkt))
    assert v.decode_valid(records.block_key(NETUID, 7), encode(pkt)) == pkt


def _forged() -> dict[str, tuple[str, bytes]]:
    k7 = records.block_key(NETUID, 7)
    pkt = decision(7)
    sig0 = pkt.certificate.signatures[0]
    bad_sig = VoteSignature(signer=sig0.signer, signature=bytes(64))
    tampered_sig = replace(pkt.certificate, signatures=(bad_sig, *pkt.certificate.signatures[1:]))
    return {
        "outsider signer": (k7, encode(decision(7, signers=[KEYS[0], KEYS[1], OUTSIDER]))),
        "no quorum (60 of 100 stake)": (k7, encode(decision(7, signers=KEYS[1:3] + KEYS[3:]))),
        "zeroed signature": (k7, encode(replace(pkt, certificate=tampered_sig))),
        "prepare, not commit": (k7, encode(decision(7, phase=PHASE_PREPARE))),
        "signed for another subnet": (k7, encode(decision(7, netuid=NETUID + 1))),
        "certificate for another height": (k7, encode(decision(8))),
        "block bytes swapped": (k7, encode(replace(pkt, block=b"another block"))),
        "key for another subnet": (records.block_key(NETUID + 1, 7), encode(pkt)),
        "height with leading zero": (f"/bt-block/{NETUID}/07", encode(pkt)),
        "unknown validator set": (records.block_key(NETUID, 5000), encode(decision(5000))),
        "garbage": (k7, b"\x00\x01garbage"),
        "a manifest, not a decision": (k7, encode(split(b"abc")[0])),
    }


@pytest.mark.parametrize("case", list(_forged()))
def test_decision_validator_refuses(case: str) -> None:
    key, value = _forged()[case]
    with pytest.raises(RecordRefused):
        DecisionValidator(NETUID, vset_for).validate(key, value)


_PKT = decision(7)
_PKT_BYTES = encode(_PKT)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(_PKT_BYTES) - 1), st.integers(1, 255))
def test_any_flipped_byte_in_a_decision_record_is_refused(pos: int, mask: int) -> None:
    bad = _PKT_BYTES[:pos] + bytes([_PKT_BYTES[pos] ^ mask]) + _PKT_BYTES[pos + 1 :]
    with pytest.raises(RecordRefused):
        DecisionValidator(NETUID, vset_for).validate(records.block_key(NETUID, 7), bad)


def test_decision_ref_must_point_at_the_certified_block() -> None:
    v = DecisionValidator(NETUID, vset_for)
    block = bytes(range(256)) * 8
    pkt = decision(7, block=block)
    manifest, _ = split(block, 1000)
    good = records.DecisionRef(certificate=pkt.certificate, block=manifest)
    v.validate(records.block_key(NETUID, 7), encode(good))
    other, _ = split(block + b"!", 1000)
    with pytest.raises(RecordRefused, match="block_hash_mismatch"):
        v.validate(records.block_key(NETUID, 7), encode(replace(good, block=other)))


def test_decision_select_is_deterministic_across_orders() -> None:
    """Two valid certificates for one block (different signer subsets): every node keeps the same."""
    v = DecisionValidator(NETUID, vset_for)
    a, b = encode(decision(7)), encode(decision(7, signers=[KEYS[0], KEYS[1], KEYS[3]]))
    assert a != b
    assert [a, b][v.select("k", [a, b])] == [b, a][v.select("k", [b, a])]
