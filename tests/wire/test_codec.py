"""The codec refuses everything that is not exactly a declared message, canonically encoded."""

from __future__ import annotations

import contextlib
from typing import Annotated

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wire import cbor
from wire.codec import U16, Bytes32, Len, decode, decode_any, encode, wire_message
from wire.errors import WireError


@wire_message("test.inner", version=1, max_size=1024)
class Inner:
    key: Bytes32
    weight: U16


@wire_message("test.sample", version=2, max_size=4096)
class Sample:
    height: int
    flag: bool
    name: Annotated[str, Len(0, 64)]
    blob: bytes
    items: Annotated[tuple[Inner, ...], Len(0, 16)]
    note: str | None


inners = st.builds(Inner, key=st.binary(min_size=32, max_size=32), weight=st.integers(0, 65535))
samples = st.builds(
    Sample,
    height=st.integers(-(2**63), 2**64 - 1),
    flag=st.booleans(),
    name=st.text(max_size=64),
    blob=st.binary(max_size=512),
    items=st.lists(inners, max_size=4).map(tuple),
    note=st.none() | st.text(max_size=20),
)


@given(samples)
def test_round_trip(msg: Sample) -> None:
    assert decode(encode(msg), Sample) == msg


@given(samples)
def test_bytes_do_not_depend_on_construction_order(msg: Sample) -> None:
    fields = dict(vars(msg))
    reordered = Sample(**dict(reversed(list(fields.items()))))
    assert encode(reordered) == encode(msg)


@settings(max_examples=200)
@given(samples, st.data())
def test_truncation_and_mutation_only_raise_wire_error(msg: Sample, data: st.DataObject) -> None:
    raw = encode(msg)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(WireError):
        decode(raw[:cut], Sample)
    mutated = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        mutated[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        out = decode(bytes(mutated), Sample)
    except WireError:
        return
    # If a mutation still decodes, it is a valid message whose canonical bytes are the input.
    assert encode(out) == bytes(mutated)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_raise_wire_error(raw: bytes) -> None:
    with contextlib.suppress(WireError):
        decode_any(raw, (Sample, Inner))


def sample(**kw: object) -> Sample:
    base = dict(height=1, flag=True, name="a", blob=b"x", items=(), note=None)
    base.update(kw)
    return Sample(**base)  # type: ignore[arg-type]


def raw_fields(**kw: object) -> list[object]:
    v = ["test.sample", 2, 1, True, "a", b"x", [], None]
    for i, name in enumerate(("height", "flag", "name", "blob", "items", "note")):
        if name in kw:
            v[2 + i] = kw[name]
    return v


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (raw_fields(height=True), "expected int"),
        (raw_fields(flag=1), "expected bool"),
        (raw_fields(blob="x"), "expected bytes"),
        (raw_fields(items=[["test.inner", 1, b"short", 1]]), "length 5"),
        (raw_fields(items=[["test.inner", 1, bytes(32), 70000]]), "out of range"),
        (raw_fields(name="n" * 65), "length 65"),
        (["test.sample", 3, 1, True, "a", b"x", [], None], "unsupported version"),
        (["test.nope", 2], "unknown message tag"),
        (["test.inner", 1, bytes(32), 1], "expected test.sample"),
        (raw_fields()[:-1], "expected 6 fields"),
    ],
)
def test_refuses_wrong_shapes(value: list[object], why: str) -> None:
    with pytest.raises(WireError, match=why):
        decode(cbor2.dumps(value, canonical=True), Sample)


def test_refuses_trailing_bytes_oversize_tags_floats_and_non_canonical() -> None:
    good = encode(sample())
    with pytest.raises(WireError, match="trailing"):
        decode(good + b"\x00", Sample)
    with pytest.raises(WireError, match="over the cap"):
        decode(b"\x80" * 5000, Sample)
    with pytest.raises(WireError, match="over its cap"):
        encode(sample(blob=b"x" * 5000))
    with pytest.raises(WireError, match="not allowed"):
        cbor.loads(cbor2.dumps(cbor2.CBORTag(1, 5)), 100)
    with pytest.raises(WireError, match="tag 99"):
        cbor.loads(cbor2.dumps(cbor2.CBORTag(99, 5)), 100)
    with pytest.raises(WireError):  # a bignum-tagged small int is not canonical, nor an int field
        decode(cbor2.dumps(raw_fields(height=cbor2.CBORTag(2, b"\x01"))), Sample)
    with pytest.raises(WireError, match="float"):
        cbor.loads(cbor2.dumps(1.5), 100)
    # 1 encoded in the 1-byte-argument form (0x18 0x01) instead of the canonical 0x01
    with pytest.raises(WireError, match="not canonical"):
        cbor.loads(b"\x18\x01", 100)
    with pytest.raises(WireError, match="empty"):
        cbor.loads(b"", 100)


def test_encode_refuses_wrong_python_types() -> None:
    with pytest.raises(WireError, match="expected int"):
        encode(sample(height=1.0))
    with pytest.raises(WireError, match="expected tuple"):
        encode(sample(items=[]))


def test_deep_nesting_is_refused_cleanly() -> None:
    deep = b"\x81" * 3000 + b"\x01"
    with pytest.raises(WireError):
        decode(deep, Sample)
    with pytest.raises(WireError):
        cbor.loads(deep, 10_000)
