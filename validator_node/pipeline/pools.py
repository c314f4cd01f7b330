"""Bounds on what waits for a block, and the door checks for the owner's registry items.

Anything a peer can put in a pool costs every validator memory now and proposal work at every
height, so each pool is capped in count and in bytes, and an item is checked at the door
(cheapest check first, the signature only after dedup) instead of when a proposal walks the pool.
A registry item in particular can be ~1 MiB: only one the subnet owner signed, for one of the
next `NONCE_WINDOW` nonces, whose module is exactly the one its manifest names and small enough
for a block, is pooled. Pure, like the rules.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Generic, TypeVar

from registry.manifest import (
    COMMAND_OPS,
    MANIFEST_OPS,
    ChallengeCommand,
    ChallengeManifest,
)
from registry.state import RegistryState
from validator_node.pipeline.messages import RegistryItem
from wire.codec import decode, encode
from wire.envelope import verify_envelope
from wire.errors import WireError

# The owner's next actions a validator holds: a burst of up to one block's worth (a block carries
# at most 16 registry items), never an action numbered beyond it.
NONCE_WINDOW = 16
# Largest item a block could ever carry (the body's budget less room for the rest of the body):
# a larger one would wait in the pool for ever.
MAX_REGISTRY_ITEM_BYTES = 1024 * 1024 - 64 * 1024

K = TypeVar("K")
V = TypeVar("V")


class Refused(ValueError):
    """An item refused at the door: `code` is a short label for metrics, the message says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Pool(dict[K, V], Generic[K, V]):
    """A dict of pending items that keeps the total of their sizes and refuses past its caps.

    Insertion order is arrival order, so a proposer that takes the first items tries the oldest."""

    def __init__(self, kind: str, max_items: int, max_bytes: int, size: Callable[[V], int]) -> None:
        super().__init__()
        self.kind = kind
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._size = size
        self.bytes = 0

    def room_for(self, item: V) -> Refused | None:
        """Why `item` may not be added now (None: it fits)."""
        if len(self) >= self.max_items:
            return Refused("pool_full", f"the {self.kind} pool holds its maximum of {self.max_items} items")
        if self.bytes + self._size(item) > self.max_bytes:
            return Refused("pool_full", f"the {self.kind} pool holds its maximum of {self.max_bytes} bytes")
        return None

    def __setitem__(self, key: K, value: V) -> None:
        old = super().get(key)
        if old is not None:
            self.bytes -= self._size(old)
        super().__setitem__(key, value)
        self.bytes += self._size(value)

    def __delitem__(self, key: K) -> None:
        self.bytes -= self._size(self[key])
        super().__delitem__(key)

    def pop(self, key: K, *default: V | None) -> V | None:  # type: ignore[override]
        if key in self:
            value = self[key]
            del self[key]
            return value
        if default:
            return default[0]
        raise KeyError(key)


def registry_key(item: RegistryItem) -> bytes:
    """An item's identity in the pool, without hashing its module: the signed action, and whether
    the module travels with it (a pooled module always matches the hash its signed manifest
    names, so these two decide the item; a copy stripped of its module is another item)."""
    flag = b"\x00" if item.module is None else b"\x01"
    return hashlib.sha256(encode(item.action) + flag).digest()


def registry_nonce(item: RegistryItem) -> int:
    """The signed nonce of a registry item (-1 if its body does not decode)."""
    cls = ChallengeManifest if item.action.op in MANIFEST_OPS else ChallengeCommand
    try:
        return int(decode(item.action.signed.body, cls).nonce)
    except WireError:
        return -1


def check_registry_cheap(item: RegistryItem, registry: RegistryState) -> ChallengeManifest | ChallengeCommand:
    """The checks that cost no signature and no hash of the module; raises Refused. Returns the
    signed body, decoded once here for `check_registry_signed`."""
    env = item.action.signed
    op = item.action.op
    if op not in MANIFEST_OPS + COMMAND_OPS:
        raise Refused("unknown_op", f"unknown registry op {op!r}")
    if env.netuid != registry.netuid:
        raise Refused("wrong_netuid", f"signed for netuid {env.netuid}, the registry is {registry.netuid}")
    if env.signer != registry.sudo:
        raise Refused("wrong_signer", "registry action not signed by the subnet owner")
    if item.module is not None:
        if op not in MANIFEST_OPS:
            raise Refused("stray_module", f"a {op} action carries no module")
        if len(item.module) > MAX_REGISTRY_ITEM_BYTES:
            raise Refused(
                "too_large",
                f"a {len(item.module)}-byte module cannot fit a block ({MAX_REGISTRY_ITEM_BYTES} max)",
            )
    cls = ChallengeManifest if op in MANIFEST_OPS else ChallengeCommand
    try:
        body: ChallengeManifest | ChallengeCommand = decode(env.body, cls)
    except WireError:
        raise Refused("malformed", f"the signed body is not a {op} message") from None
    nonce = body.nonce
    if nonce <= registry.last_nonce:
        raise Refused(
            "stale_nonce", f"stale nonce: the registry has applied nonce {registry.last_nonce} (replay?)"
        )
    if nonce > registry.last_nonce + NONCE_WINDOW:
        raise Refused(
            "nonce_too_far",
            f"nonce {nonce} is more than {NONCE_WINDOW} past the last applied {registry.last_nonce}",
        )
    if isinstance(body, ChallengeManifest) and item.module is not None:
        m = body
        if len(item.module) != m.wasm_size or len(item.module) > m.policy.max_module_bytes:
            raise Refused(
                "module_size",
                f"module is {len(item.module)} B; the manifest says {m.wasm_size} B "
                f"(policy cap {m.policy.max_module_bytes} B)",
            )
    return body


def check_registry_signed(
    item: RegistryItem, netuid: int, body: ChallengeManifest | ChallengeCommand
) -> None:
    """The owner's signature, then the module's hash (after dedup: these cost CPU); raises Refused.
    `body` is what `check_registry_cheap` decoded."""
    try:
        verify_envelope(item.action.signed, type(body), netuid)
    except WireError as exc:
        raise Refused("bad_signature" if "signature" in str(exc) else "malformed", str(exc)) from None
    module = item.module
    if isinstance(body, ChallengeManifest) and module is not None and _sha(module) != body.wasm_sha256:
        raise Refused("module_hash", "the module is not the one the signed manifest names")


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
