"""Message types: each defined once, as a frozen dataclass with a type tag, version and size cap.

A message encodes as the canonical CBOR array ``[tag, version, field_1, ..., field_n]`` in field
declaration order; a nested message encodes as its own array in the same form. Field types are
compiled once from the annotations into checkers, so encoding and decoding both refuse anything
that is not exactly the declared shape (a bool is not an int, a list is not bytes, a 31-byte hash
is not a 32-byte hash).

Supported field types: ``int``, ``bool``, ``str``, ``bytes``, ``tuple[T, ...]``, ``T | None``,
another message class, and ``Annotated[T, Len(...)]`` / ``Annotated[int, Range(...)]`` to bound them.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, TypeVar

from wire import cbor
from wire.errors import WireError
from wire.hashing import sha256

INT_MIN = -(2**63)
INT_MAX = 2**64 - 1
DEFAULT_MAX_SIZE = 64 * 1024


@dataclass(frozen=True)
class Len:
    """Length bounds (inclusive) for bytes, str and tuple fields."""

    min: int = 0
    max: int = 2**31

    @staticmethod
    def exact(n: int) -> Len:
        return Len(n, n)


@dataclass(frozen=True)
class Range:
    """Value bounds (inclusive) for int fields."""

    min: int = INT_MIN
    max: int = INT_MAX


Bytes32 = Annotated[bytes, Len.exact(32)]
Bytes64 = Annotated[bytes, Len.exact(64)]
U8 = Annotated[int, Range(0, 2**8 - 1)]
U16 = Annotated[int, Range(0, 2**16 - 1)]
U32 = Annotated[int, Range(0, 2**32 - 1)]
U64 = Annotated[int, Range(0, 2**64 - 1)]
I64 = Annotated[int, Range(INT_MIN, 2**63 - 1)]


@dataclass(frozen=True)
class MessageSpec:
    tag: str
    version: int
    max_size: int
    domain: str
    field_names: tuple[str, ...]
    # (value -> encodable) and (decoded -> value); both raise WireError on a shape mismatch
    encoders: tuple[Callable[[Any], Any], ...]
    decoders: tuple[Callable[[Any], Any], ...]


_REGISTRY: dict[str, type] = {}
M = TypeVar("M")


def wire_message(
    tag: str, version: int = 1, max_size: int = DEFAULT_MAX_SIZE, domain: str | None = None
) -> Callable[[type[M]], type[M]]:
    """Declare a message type. `domain` separates signature purposes (defaults to the tag)."""

    def wrap(cls: type[M]) -> type[M]:
        if tag in _REGISTRY:
            raise TypeError(f"wire tag {tag!r} is already registered by {_REGISTRY[tag].__qualname__}")
        dc = dataclass(frozen=True)(cls)
        hints = typing.get_type_hints(dc, include_extras=True)
        names: list[str] = []
        encs: list[Callable[[Any], Any]] = []
        decs: list[Callable[[Any], Any]] = []
        for f in dataclasses.fields(dc):
            names.append(f.name)
            enc, dec = _compile(hints[f.name], f"{tag}.{f.name}")
            encs.append(enc)
            decs.append(dec)
        dc.__wire__ = MessageSpec(
            tag, version, max_size, domain or tag, tuple(names), tuple(encs), tuple(decs)
        )
        _REGISTRY[tag] = dc
        return dc

    return wrap


class WireMessage:
    """Structural marker for type hints: any class declared with @wire_message."""

    __wire__: ClassVar[MessageSpec]


def spec_of(cls_or_msg: Any) -> MessageSpec:
    spec = getattr(cls_or_msg, "__wire__", None)
    if not isinstance(spec, MessageSpec):
        raise TypeError(f"{cls_or_msg!r} is not a wire message")
    return spec


def to_cbor_value(msg: Any) -> list[Any]:
    spec = spec_of(msg)
    out: list[Any] = [spec.tag, spec.version]
    for name, enc in zip(spec.field_names, spec.encoders, strict=True):
        out.append(enc(getattr(msg, name)))
    return out


def encode(msg: Any) -> bytes:
    """Canonical bytes of a message; refuses values that do not match the declared types."""
    data = cbor.dumps(to_cbor_value(msg))
    cap = spec_of(msg).max_size
    if len(data) > cap:
        raise WireError(f"{spec_of(msg).tag} encodes to {len(data)} bytes, over its cap of {cap}")
    return data


def digest(msg: Any) -> bytes:
    return sha256(encode(msg))


def decode(data: bytes, expected: type[M]) -> M:
    """Decode bytes that must be a message of type `expected` (checked before its size cap)."""
    spec = spec_of(expected)
    value = cbor.loads(data, spec.max_size, plain_check=False)
    return _from_value(value, expected)


def decode_any(data: bytes, allowed: tuple[type, ...], max_size: int | None = None) -> Any:
    """Decode one of several message types, dispatching on the tag."""
    by_tag = _TAG_TABLES.get(allowed)
    if by_tag is None:
        by_tag = _TAG_TABLES[allowed] = {spec_of(c).tag: c for c in allowed}
    cap = max_size if max_size is not None else max(spec_of(c).max_size for c in allowed)
    value = cbor.loads(data, cap, plain_check=False)
    if not isinstance(value, list) or not value or not isinstance(value[0], str):
        raise WireError("not a tagged message")
    cls = by_tag.get(value[0])
    if cls is None:
        raise WireError(f"unexpected message tag {value[0]!r}")
    if len(data) > cls.__wire__.max_size:
        raise WireError(f"{value[0]} is {len(data)} bytes, over its cap of {cls.__wire__.max_size}")
    return _from_value(value, cls)


_TAG_TABLES: dict[tuple[type, ...], dict[str, type]] = {}


def _from_value(value: Any, cls: type[M]) -> M:
    spec: MessageSpec = cls.__wire__  # type: ignore[attr-defined]
    if not isinstance(value, list) or len(value) < 2:
        raise WireError(f"{spec.tag}: not a tagged message array")
    tag, version = value[0], value[1]
    if tag != spec.tag:
        if isinstance(tag, str) and tag in _REGISTRY:
            raise WireError(f"expected {spec.tag}, got {tag}")
        raise WireError(f"unknown message tag {tag!r}")
    if version != spec.version or type(version) is not int:
        raise WireError(f"{spec.tag}: unsupported version {version!r} (expected {spec.version})")
    fields = value[2:]
    if len(fields) != len(spec.field_names):
        raise WireError(f"{spec.tag}: expected {len(spec.field_names)} fields, got {len(fields)}")
    kwargs = {name: dec(v) for name, dec, v in zip(spec.field_names, spec.decoders, fields, strict=True)}
    try:
        return cls(**kwargs)
    except WireError:
        raise
    except (TypeError, ValueError) as exc:
        raise WireError(f"{spec.tag}: {exc}") from None


# --- field type compilation -------------------------------------------------------------------


def _compile(tp: Any, where: str) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    bound: Any = None
    if typing.get_origin(tp) is Annotated:
        args = typing.get_args(tp)
        tp, bound = args[0], next((a for a in args[1:] if isinstance(a, Len | Range)), None)
    origin = typing.get_origin(tp)

    if tp is bool:
        return _scalar(bool, where), _scalar(bool, where)
    if tp is int:
        lo, hi = (bound.min, bound.max) if isinstance(bound, Range) else (INT_MIN, INT_MAX)

        def check_int(v: Any) -> int:
            if type(v) is not int:
                raise WireError(f"{where}: expected int, got {type(v).__name__}")
            if not lo <= v <= hi:
                raise WireError(f"{where}: {v} out of range [{lo}, {hi}]")
            return v

        return check_int, check_int
    if tp is bytes or tp is str:
        lo, hi = (bound.min, bound.max) if isinstance(bound, Len) else (0, 2**31)
        name = tp.__name__

        def check_len(v: Any) -> Any:
            if type(v) is not tp:
                raise WireError(f"{where}: expected {name}, got {type(v).__name__}")
            if not lo <= len(v) <= hi:
                raise WireError(f"{where}: length {len(v)} not in [{lo}, {hi}]")
            return v

        return check_len, check_len
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"{where}: only homogeneous tuple[T, ...] is supported")
        item_enc, item_dec = _compile(args[0], where + "[]")
        lo, hi = (bound.min, bound.max) if isinstance(bound, Len) else (0, 2**31)

        def enc_tuple(v: Any) -> list[Any]:
            if not isinstance(v, tuple):
                raise WireError(f"{where}: expected tuple, got {type(v).__name__}")
            if not lo <= len(v) <= hi:
                raise WireError(f"{where}: {len(v)} items not in [{lo}, {hi}]")
            return [item_enc(x) for x in v]

        def dec_tuple(v: Any) -> tuple[Any, ...]:
            if not isinstance(v, list):
                raise WireError(f"{where}: expected array, got {type(v).__name__}")
            if not lo <= len(v) <= hi:
                raise WireError(f"{where}: {len(v)} items not in [{lo}, {hi}]")
            return tuple(item_dec(x) for x in v)

        return enc_tuple, dec_tuple
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1 or len(typing.get_args(tp)) != 2:
            raise TypeError(f"{where}: only `T | None` unions are supported")
        inner_enc, inner_dec = _compile(args[0], where)
        return (lambda v: None if v is None else inner_enc(v)), (
            lambda v: None if v is None else inner_dec(v)
        )
    if isinstance(tp, type) and isinstance(getattr(tp, "__wire__", None), MessageSpec):
        nested = tp

        def enc_msg(v: Any) -> list[Any]:
            if type(v) is not nested:
                raise WireError(f"{where}: expected {nested.__name__}, got {type(v).__name__}")
            return to_cbor_value(v)

        return enc_msg, (lambda v: _from_value(v, nested))
    raise TypeError(f"{where}: unsupported field type {tp!r}")


def _scalar(tp: type, where: str) -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        if type(v) is not tp:
            raise WireError(f"{where}: expected {tp.__name__}, got {type(v).__name__}")
        return v

    return check


def registered_tags() -> dict[str, type]:
    return dict(_REGISTRY)
