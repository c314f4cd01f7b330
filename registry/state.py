"""The challenge registry as a pure state machine: ``apply(state, action, height, ...) -> new state``.

This is what a decided block applies, so it must give the same answer on every validator: no
clock, no I/O, no floats, no dict order. The state is a frozen wire message, so its root (sha256
of its canonical encoding) is a value every validator can compare. Module bytes are an input
(the node fetched them from its store or the DHT by hash); module validation is injected so the
state machine can be tested without the runtime and so the runtime's own checks stay in one place.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Callable, Mapping
from typing import Annotated

from registry.manifest import (
    COMMAND_OPS,
    MANIFEST_OPS,
    OP_ACTIVATE,
    OP_ADD,
    OP_DEACTIVATE,
    OP_REMOVE,
    OP_UPDATE,
    PPB,
    SUPPORTED_ABI_VERSIONS,
    ChallengeCommand,
    ChallengeManifest,
    ModulePolicy,
    RegistryAction,
    id_is_valid,
    policy_problem,
)
from wire import U8, U16, U64, Bytes32, Len, WireError, digest, wire_message
from wire.envelope import SignedEnvelope, open_envelope, open_unverified, seal
from wire.keys import Hotkey

MAX_CHALLENGES = 64
STATUS_INACTIVE = "inactive"
STATUS_ACTIVE = "active"


class RegistryError(ValueError):
    """A refused action. `code` is stable (for tests, metrics and evidence); `message` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ModuleCheckFailed(Exception):
    """Raised by a module validator when a module may not be registered (kind + human message)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


# (wasm bytes, policy) -> anything; raises ModuleCheckFailed to refuse the module.
ModuleValidator = Callable[[bytes, ModulePolicy], object]


def runtime_validator(wasm: bytes, policy: ModulePolicy) -> object:
    """The default validator: the runtime's own registration checks (imported lazily)."""
    from runtime.policy import Policy, PolicyError
    from runtime.validation import ModuleRejected, validate_module

    try:
        runtime_policy = Policy.from_dict(policy.to_dict())
    except PolicyError as exc:
        raise ModuleCheckFailed("bad_policy", str(exc)) from None
    try:
        return validate_module(wasm, runtime_policy)
    except ModuleRejected as exc:
        raise ModuleCheckFailed(
            str(getattr(exc, "kind", "rejected")), str(getattr(exc, "message", exc))
        ) from None


@wire_message("registry.entry", version=1, max_size=512 * 1024)
class ChallengeEntry:
    """A registered challenge: its current signed manifest, status and the heights that changed it."""

    signed: SignedEnvelope  # the sudo-signed manifest, kept so anyone can re-verify it
    status: Annotated[str, Len(1, 16)]
    registered_at: U64
    updated_at: U64

    @functools.cached_property
    def manifest(self) -> ChallengeManifest:
        """The decoded manifest (verified when the entry was applied; decoded once per entry)."""
        return open_unverified(self.signed, ChallengeManifest)


@wire_message("registry.state", version=1, max_size=64 * 1024 * 1024)
class RegistryState:
    """All registered challenges (sorted by id), the sudo key and the replay-protection nonce."""

    netuid: U16
    sudo: Bytes32  # sr25519 public key of the subnet owner (read from the chain)
    mechanism_count: U8
    last_nonce: U64
    challenges: Annotated[tuple[ChallengeEntry, ...], Len(0, MAX_CHALLENGES)]

    def get(self, challenge_id: str) -> ChallengeEntry | None:
        for entry in self.challenges:
            if entry.manifest.challenge_id == challenge_id:
                return entry
        return None

    def manifests(self) -> tuple[ChallengeManifest, ...]:
        return tuple(e.manifest for e in self.challenges)

    def active(self, epoch: int | None = None) -> tuple[ChallengeManifest, ...]:
        """Active challenges (those whose activation epoch has come, when `epoch` is given), by id."""
        out = []
        for entry in self.challenges:
            m = entry.manifest
            if entry.status == STATUS_ACTIVE and (epoch is None or m.activation_epoch <= epoch):
                out.append(m)
        return tuple(out)


def genesis(netuid: int, sudo: bytes, mechanism_count: int = 1) -> RegistryState:
    """The empty registry for a subnet whose owner (sudo) key is `sudo`."""
    return RegistryState(
        netuid=netuid, sudo=bytes(sudo), mechanism_count=mechanism_count, last_nonce=0, challenges=()
    )


def state_root(state: RegistryState) -> bytes:
    """sha256 of the canonical encoding: equal states give equal roots on every validator."""
    return digest(state)


def with_chain_params(
    state: RegistryState, *, sudo: bytes | None = None, mechanism_count: int | None = None
) -> RegistryState:
    """Follow the chain: a changed owner key or mechanism count (applied by a decided block)."""
    return dataclasses.replace(
        state,
        sudo=state.sudo if sudo is None else bytes(sudo),
        mechanism_count=state.mechanism_count if mechanism_count is None else mechanism_count,
    )


def apply(
    state: RegistryState,
    action: RegistryAction,
    height: int,
    modules: Mapping[bytes, bytes] | None = None,
    validate: ModuleValidator | None = None,
) -> RegistryState:
    """Apply one action at block `height`; return the new state or raise RegistryError.

    `modules` maps sha256 -> module bytes for the modules the node has fetched; `add` and `update`
    need theirs. `validate` defaults to the runtime's module validation.
    """
    if type(height) is not int or height < 0:
        raise RegistryError("bad_height", f"height must be a non-negative int, got {height!r}")
    op = action.op
    env = action.signed
    if op not in MANIFEST_OPS + COMMAND_OPS:
        raise RegistryError("unknown_op", f"unknown registry op {op!r}")
    if env.netuid != state.netuid:
        raise RegistryError("wrong_netuid", f"signed for netuid {env.netuid}, registry is {state.netuid}")
    if env.signer != state.sudo:
        raise RegistryError(
            "wrong_signer",
            f"signed by {env.signer.hex()[:16]}, not by the subnet owner {state.sudo.hex()[:16]}",
        )
    body_type: type = ChallengeManifest if op in MANIFEST_OPS else ChallengeCommand
    try:
        body = open_envelope(env, body_type, state.netuid)
    except WireError as exc:
        code = "bad_signature" if "bad signature" in str(exc) else "malformed"
        raise RegistryError(code, str(exc)) from None
    if body.nonce <= state.last_nonce:
        raise RegistryError(
            "stale_nonce",
            f"nonce {body.nonce} is not above the last applied nonce {state.last_nonce} (replay?)",
        )
    if op in MANIFEST_OPS:
        new = _apply_manifest(state, op, env, body, height, modules or {}, validate or runtime_validator)
    else:
        new = _apply_command(state, op, body, height)
    return dataclasses.replace(new, last_nonce=body.nonce)


def _apply_manifest(
    state: RegistryState,
    op: str,
    env: SignedEnvelope,
    m: ChallengeManifest,
    height: int,
    modules: Mapping[bytes, bytes],
    validate: ModuleValidator,
) -> RegistryState:
    existing = state.get(m.challenge_id)
    if op == OP_ADD and existing is not None:
        raise RegistryError("duplicate_challenge", f"challenge {m.challenge_id!r} is already registered")
    if op == OP_UPDATE:
        if existing is None:
            raise RegistryError("unknown_challenge", f"no challenge {m.challenge_id!r} to update")
        if m.version <= existing.manifest.version:
            raise RegistryError(
                "version_not_increasing",
                f"version {m.version} of {m.challenge_id!r} is not above the current "
                f"{existing.manifest.version}",
            )
    if op == OP_ADD and len(state.challenges) >= MAX_CHALLENGES:
        raise RegistryError("too_many_challenges", f"the registry holds at most {MAX_CHALLENGES} challenges")
    check_manifest(m, state.mechanism_count)
    status = existing.status if existing is not None else STATUS_INACTIVE
    if status == STATUS_ACTIVE:
        _check_shares(state, m.mechanism_id, m.emission_share_ppb, excluding=m.challenge_id)
    wasm = modules.get(m.wasm_sha256)
    if wasm is None:
        raise RegistryError("module_missing", f"module {m.wasm_sha256.hex()} is not available")
    check_module(m, wasm, validate)
    entry = ChallengeEntry(
        signed=env,
        status=status,
        registered_at=existing.registered_at if existing is not None else height,
        updated_at=height,
    )
    return _with_entry(state, entry)


def check_manifest(m: ChallengeManifest, mechanism_count: int) -> None:
    """The checks that need only the manifest (and the subnet's mechanism count)."""
    if not id_is_valid(m.challenge_id):
        raise RegistryError("bad_id", f"challenge id {m.challenge_id!r} must match [a-z0-9][a-z0-9_-]*")
    if m.mechanism_id >= mechanism_count:
        raise RegistryError(
            "unknown_mechanism",
            f"mechanism {m.mechanism_id} does not exist (the subnet has {mechanism_count})",
        )
    if m.abi_version not in SUPPORTED_ABI_VERSIONS:
        raise RegistryError(
            "unsupported_abi", f"ABI version {m.abi_version} (supported: {sorted(SUPPORTED_ABI_VERSIONS)})"
        )
    problem = policy_problem(m.policy)
    if problem:
        raise RegistryError("bad_policy", problem)


def check_module(m: ChallengeManifest, wasm: bytes, validate: ModuleValidator | None = None) -> None:
    """The module must be exactly the one the manifest names, and pass the runtime's validation."""
    actual = hashlib.sha256(wasm).digest()
    if actual != m.wasm_sha256 or len(wasm) != m.wasm_size:
        raise RegistryError(
            "hash_mismatch",
            f"module is sha256 {actual.hex()[:16]}.. / {len(wasm)} B, manifest says "
            f"{m.wasm_sha256.hex()[:16]}.. / {m.wasm_size} B",
        )
    try:
        (validate or runtime_validator)(wasm, m.policy)
    except ModuleCheckFailed as exc:
        raise RegistryError("module_rejected", f"{exc.kind}: {exc.message}") from None


def open_signed_manifest(env: SignedEnvelope, netuid: int, sudo: bytes | None = None) -> ChallengeManifest:
    """Verify a signed manifest's signature (and signer, when `sudo` is known) and decode it."""
    if env.netuid != netuid:
        raise RegistryError("wrong_netuid", f"signed for netuid {env.netuid}, expected {netuid}")
    if sudo is not None and env.signer != sudo:
        raise RegistryError(
            "wrong_signer", f"signed by {env.signer.hex()[:16]}, not by the subnet owner {sudo.hex()[:16]}"
        )
    try:
        return open_envelope(env, ChallengeManifest, netuid)
    except WireError as exc:
        code = "bad_signature" if "bad signature" in str(exc) else "malformed"
        raise RegistryError(code, str(exc)) from None


def _apply_command(state: RegistryState, op: str, cmd: ChallengeCommand, height: int) -> RegistryState:
    if cmd.op != op:
        raise RegistryError("op_mismatch", f"the signed command is {cmd.op!r}, the action says {op!r}")
    existing = state.get(cmd.challenge_id)
    if existing is None:
        raise RegistryError("unknown_challenge", f"no challenge {cmd.challenge_id!r}")
    if op == OP_REMOVE:
        return dataclasses.replace(state, challenges=tuple(e for e in state.challenges if e is not existing))
    m = existing.manifest
    if op == OP_ACTIVATE:
        if existing.status == STATUS_ACTIVE:
            raise RegistryError("already_active", f"challenge {cmd.challenge_id!r} is already active")
        if m.mechanism_id >= state.mechanism_count:
            raise RegistryError("unknown_mechanism", f"mechanism {m.mechanism_id} no longer exists")
        _check_shares(state, m.mechanism_id, m.emission_share_ppb, excluding=m.challenge_id)
        status = STATUS_ACTIVE
    else:
        assert op == OP_DEACTIVATE
        if existing.status != STATUS_ACTIVE:
            raise RegistryError("not_active", f"challenge {cmd.challenge_id!r} is not active")
        status = STATUS_INACTIVE
    return _with_entry(state, dataclasses.replace(existing, status=status, updated_at=height))


def _check_shares(state: RegistryState, mechanism_id: int, share: int, excluding: str) -> None:
    """Active challenges of one mechanism may claim at most 1.0 of its emission; the rest is burnt."""
    others = sum(
        m.emission_share_ppb
        for m in state.active()
        if m.mechanism_id == mechanism_id and m.challenge_id != excluding
    )
    if others + share > PPB:
        raise RegistryError(
            "shares_exceeded",
            f"active emission shares on mechanism {mechanism_id} would sum to {others + share} ppb, "
            f"over {PPB}",
        )


def _with_entry(state: RegistryState, entry: ChallengeEntry) -> RegistryState:
    cid = entry.manifest.challenge_id
    rest = [e for e in state.challenges if e.manifest.challenge_id != cid]
    rest.append(entry)
    rest.sort(key=lambda e: e.manifest.challenge_id)
    return dataclasses.replace(state, challenges=tuple(rest))


# Convenience constructors for the signer side (CLI, tests, the sudo tooling).


def sign_manifest(
    manifest: ChallengeManifest, hotkey: Hotkey, netuid: int, op: str = OP_ADD
) -> RegistryAction:
    """Sign a manifest with the sudo hotkey into an `add`/`update` action."""
    if op not in MANIFEST_OPS:
        raise ValueError(f"manifests are signed for {MANIFEST_OPS}, not {op!r}")
    return RegistryAction(op=op, signed=seal(manifest, hotkey, netuid))


def sign_command(op: str, challenge_id: str, nonce: int, hotkey: Hotkey, netuid: int) -> RegistryAction:
    """Sign a lifecycle command (activate/deactivate/remove) with the sudo hotkey."""
    if op not in COMMAND_OPS:
        raise ValueError(f"commands are {COMMAND_OPS}, not {op!r}")
    cmd = ChallengeCommand(op=op, challenge_id=challenge_id, nonce=nonce)
    return RegistryAction(op=op, signed=seal(cmd, hotkey, netuid))


__all__ = [
    "OP_ACTIVATE",
    "OP_ADD",
    "OP_DEACTIVATE",
    "OP_REMOVE",
    "OP_UPDATE",
    "STATUS_ACTIVE",
    "STATUS_INACTIVE",
    "ChallengeEntry",
    "ModuleCheckFailed",
    "ModuleValidator",
    "RegistryError",
    "RegistryState",
    "apply",
    "check_manifest",
    "check_module",
    "genesis",
    "open_signed_manifest",
    "runtime_validator",
    "sign_command",
    "sign_manifest",
    "state_root",
    "with_chain_params",
]
