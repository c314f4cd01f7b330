"""The registry state machine: the lifecycle, the state root, and every refusal with its reason."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from registry_helpers import (
    ESCAPE_WAT,
    INTRUDER,
    NETUID,
    NO_EVALUATE_WAT,
    SUDO,
    good_wasm,
    manifest,
    modules_of,
    policy,
    wasm_of,
    wasmtime_validator,
)

from registry import (
    RegistryAction,
    RegistryError,
    RegistryState,
    apply,
    genesis,
    sign_command,
    sign_manifest,
    state_root,
)
from registry.state import STATUS_ACTIVE, STATUS_INACTIVE
from wire import decode, encode
from wire.envelope import seal

WASM_A = good_wasm(1)
WASM_B = good_wasm(2)
WASM_A2 = good_wasm(3)
MODULES = modules_of(WASM_A, WASM_B, WASM_A2)


def run(state: RegistryState, action: RegistryAction, height: int = 10, **kw: object) -> RegistryState:
    kw.setdefault("modules", MODULES)
    kw.setdefault("validate", wasmtime_validator)
    return apply(state, action, height, **kw)  # type: ignore[arg-type]


def refused(code: str, state: RegistryState, action: RegistryAction, **kw: object) -> RegistryError:
    with pytest.raises(RegistryError) as info:
        run(state, action, **kw)
    assert info.value.code == code, info.value
    return info.value


@pytest.fixture
def empty() -> RegistryState:
    return genesis(NETUID, SUDO.public_key, mechanism_count=2)


@pytest.fixture
def with_a(empty: RegistryState) -> RegistryState:
    return run(empty, sign_manifest(manifest(WASM_A, nonce=1), SUDO, NETUID))


def test_full_lifecycle(empty: RegistryState) -> None:
    s1 = run(empty, sign_manifest(manifest(WASM_A, nonce=1), SUDO, NETUID), height=5)
    entry = s1.get("sum-squares")
    assert entry is not None and entry.status == STATUS_INACTIVE and entry.registered_at == 5
    assert s1.active() == () and s1.last_nonce == 1

    s2 = run(s1, sign_command("activate", "sum-squares", 2, SUDO, NETUID), height=6)
    assert [m.challenge_id for m in s2.active()] == ["sum-squares"]

    upd = manifest(WASM_A2, version=2, nonce=3, emission_share_ppb=700_000_000)
    s3 = run(s2, sign_manifest(upd, SUDO, NETUID, op="update"), height=7)
    m = s3.get("sum-squares")
    assert m is not None and m.status == STATUS_ACTIVE  # an update keeps the status
    assert m.manifest.version == 2 and m.manifest.wasm_sha256 == hashlib.sha256(WASM_A2).digest()
    assert (m.registered_at, m.updated_at) == (5, 7)

    s4 = run(s3, sign_command("deactivate", "sum-squares", 4, SUDO, NETUID))
    assert s4.active() == () and s4.get("sum-squares") is not None
    s5 = run(s4, sign_command("remove", "sum-squares", 5, SUDO, NETUID))
    assert s5.challenges == () and s5.last_nonce == 5
    assert len({state_root(s) for s in (empty, s1, s2, s3, s4, s5)}) == 6


def test_activation_epoch_gates_active(with_a: RegistryState) -> None:
    s = run(
        with_a,
        sign_manifest(
            manifest(WASM_B, challenge_id="later", activation_epoch=9, nonce=2, emission_share_ppb=100),
            SUDO,
            NETUID,
        ),
    )
    s = run(s, sign_command("activate", "later", 3, SUDO, NETUID))
    assert s.active(epoch=8) == () and [m.challenge_id for m in s.active(epoch=9)] == ["later"]


def test_apply_never_mutates_and_state_is_frozen(with_a: RegistryState) -> None:
    before = encode(with_a)
    run(with_a, sign_command("activate", "sum-squares", 2, SUDO, NETUID))
    assert encode(with_a) == before
    with pytest.raises(dataclasses.FrozenInstanceError):
        with_a.last_nonce = 99  # type: ignore[misc]


def test_state_root_is_deterministic_and_survives_the_wire(empty: RegistryState) -> None:
    # sr25519 signatures are randomised, so "the same block" means the same signed actions
    actions = [
        sign_manifest(manifest(WASM_A, nonce=1), SUDO, NETUID),
        sign_manifest(manifest(WASM_B, challenge_id="aaa", nonce=2, emission_share_ppb=1), SUDO, NETUID),
        sign_command("activate", "aaa", 3, SUDO, NETUID),
    ]

    def build() -> RegistryState:
        s = empty
        for height, action in enumerate(actions):
            s = run(s, action, height=height)
        return s

    a, b = build(), build()
    assert state_root(a) == state_root(b)
    assert [e.manifest.challenge_id for e in a.challenges] == ["aaa", "sum-squares"]  # sorted by id
    again = decode(encode(a), RegistryState)
    assert again == a and state_root(again) == state_root(a)
    # and a root covers everything: one more applied nonce changes it
    assert state_root(run(a, sign_command("deactivate", "aaa", 4, SUDO, NETUID))) != state_root(a)


def test_actions_survive_the_wire(with_a: RegistryState) -> None:
    action = sign_command("activate", "sum-squares", 2, SUDO, NETUID)
    assert run(with_a, decode(encode(action), RegistryAction)) == run(with_a, action)


# --- refusals ---------------------------------------------------------------------------------


def test_forged_signer_is_refused(empty: RegistryState) -> None:
    err = refused("wrong_signer", empty, sign_manifest(manifest(WASM_A), INTRUDER, NETUID))
    assert "not by the subnet owner" in err.message


def test_forged_signature_claiming_sudo_is_refused(empty: RegistryState) -> None:
    forged = seal(manifest(WASM_A), INTRUDER, NETUID)
    forged = dataclasses.replace(forged, signer=SUDO.public_key)  # claims to be the owner
    refused("bad_signature", empty, RegistryAction(op="add", signed=forged))


def test_tampered_manifest_is_refused(empty: RegistryState) -> None:
    good = seal(manifest(WASM_A, emission_share_ppb=100), SUDO, NETUID)
    tampered_body = encode(manifest(WASM_A, emission_share_ppb=999_999_999))  # same signature, new body
    tampered = dataclasses.replace(good, body=tampered_body)
    refused("bad_signature", empty, RegistryAction(op="add", signed=tampered))
    # and the untampered one is fine
    assert run(empty, RegistryAction(op="add", signed=good)).get("sum-squares") is not None


def test_signature_for_another_subnet_is_refused(empty: RegistryState) -> None:
    refused("wrong_netuid", empty, sign_manifest(manifest(WASM_A), SUDO, NETUID + 1))


def test_replayed_action_is_refused(with_a: RegistryState) -> None:
    act = sign_command("activate", "sum-squares", 2, SUDO, NETUID)
    s = run(with_a, act)
    s = run(s, sign_command("deactivate", "sum-squares", 3, SUDO, NETUID))
    err = refused("stale_nonce", s, act)  # the old "activate" replayed after a deactivate
    assert "replay" in err.message


def test_stale_nonce_is_refused(with_a: RegistryState) -> None:
    refused("stale_nonce", with_a, sign_command("activate", "sum-squares", 1, SUDO, NETUID))
    refused("stale_nonce", with_a, sign_command("activate", "sum-squares", 0, SUDO, NETUID))


def test_command_replayed_under_another_op_is_refused(with_a: RegistryState) -> None:
    s = run(with_a, sign_command("activate", "sum-squares", 2, SUDO, NETUID))
    deact = sign_command("deactivate", "sum-squares", 3, SUDO, NETUID)
    err = refused("op_mismatch", s, dataclasses.replace(deact, op="remove"))
    assert "deactivate" in err.message


def test_module_hash_mismatch_is_refused(empty: RegistryState) -> None:
    m = manifest(WASM_A)
    # the node was handed other bytes under the manifest's hash
    refused("hash_mismatch", empty, sign_manifest(m, SUDO, NETUID), modules={m.wasm_sha256: WASM_B})
    # or the manifest lies about the size
    refused("hash_mismatch", empty, sign_manifest(manifest(WASM_A, wasm_size=len(WASM_A) + 1), SUDO, NETUID))


def test_missing_module_is_refused(empty: RegistryState) -> None:
    refused("module_missing", empty, sign_manifest(manifest(WASM_A), SUDO, NETUID), modules={})


def test_module_failing_validation_is_refused(empty: RegistryState) -> None:
    escape = wasm_of(ESCAPE_WAT)
    err = refused(
        "module_rejected", empty, sign_manifest(manifest(escape), SUDO, NETUID), modules=modules_of(escape)
    )
    assert "env.system" in err.message
    broken = wasm_of(NO_EVALUATE_WAT)
    err = refused(
        "module_rejected", empty, sign_manifest(manifest(broken), SUDO, NETUID), modules=modules_of(broken)
    )
    assert "evaluate" in err.message
    garbage = b"\x00asm\x01\x00\x00\x00\xff\xff"
    refused(
        "module_rejected", empty, sign_manifest(manifest(garbage), SUDO, NETUID), modules=modules_of(garbage)
    )


def test_shares_over_one_are_refused(with_a: RegistryState) -> None:
    s = run(with_a, sign_command("activate", "sum-squares", 2, SUDO, NETUID))  # 0.6
    s = run(
        s,
        sign_manifest(
            manifest(WASM_B, challenge_id="b", nonce=3, emission_share_ppb=400_000_001), SUDO, NETUID
        ),
    )
    err = refused("shares_exceeded", s, sign_command("activate", "b", 4, SUDO, NETUID))
    assert "1000000001" in err.message
    # exactly 1.0 is fine
    s = run(
        s,
        sign_manifest(
            manifest(WASM_B, challenge_id="b", version=2, nonce=4, emission_share_ppb=400_000_000),
            SUDO,
            NETUID,
            op="update",
        ),
    )
    s = run(s, sign_command("activate", "b", 5, SUDO, NETUID))
    # and an update of an active challenge may not push the sum past 1.0 either
    over = manifest(WASM_A2, version=2, nonce=6, emission_share_ppb=600_000_001)
    refused("shares_exceeded", s, sign_manifest(over, SUDO, NETUID, op="update"))


def test_shares_are_per_mechanism(with_a: RegistryState) -> None:
    s = run(with_a, sign_command("activate", "sum-squares", 2, SUDO, NETUID))
    other = manifest(WASM_B, challenge_id="m1", nonce=3, emission_share_ppb=1_000_000_000, mechanism_id=1)
    s = run(s, sign_manifest(other, SUDO, NETUID))
    s = run(s, sign_command("activate", "m1", 4, SUDO, NETUID))
    assert len(s.active()) == 2


def test_unknown_mechanism_is_refused(empty: RegistryState) -> None:
    err = refused("unknown_mechanism", empty, sign_manifest(manifest(WASM_A, mechanism_id=2), SUDO, NETUID))
    assert "has 2" in err.message


def test_version_must_increase(with_a: RegistryState) -> None:
    same = manifest(WASM_A2, version=1, nonce=2)
    refused("version_not_increasing", with_a, sign_manifest(same, SUDO, NETUID, op="update"))


def test_add_existing_and_update_unknown_are_refused(with_a: RegistryState, empty: RegistryState) -> None:
    refused("duplicate_challenge", with_a, sign_manifest(manifest(WASM_A, nonce=2), SUDO, NETUID))
    refused("unknown_challenge", empty, sign_manifest(manifest(WASM_A), SUDO, NETUID, op="update"))
    refused("unknown_challenge", empty, sign_command("activate", "nope", 1, SUDO, NETUID))


def test_lifecycle_order_is_enforced(with_a: RegistryState) -> None:
    refused("not_active", with_a, sign_command("deactivate", "sum-squares", 2, SUDO, NETUID))
    s = run(with_a, sign_command("activate", "sum-squares", 2, SUDO, NETUID))
    refused("already_active", s, sign_command("activate", "sum-squares", 3, SUDO, NETUID))


def test_bad_manifest_fields_are_refused(empty: RegistryState) -> None:
    refused("unsupported_abi", empty, sign_manifest(manifest(WASM_A, abi_version=2), SUDO, NETUID))
    refused("bad_id", empty, sign_manifest(manifest(WASM_A, challenge_id="../etc"), SUDO, NETUID))
    refused(
        "bad_policy",
        empty,
        sign_manifest(manifest(WASM_A, policy=policy(host_functions=("exec",))), SUDO, NETUID),
    )
    refused(
        "bad_policy",
        empty,
        sign_manifest(manifest(WASM_A, policy=policy(host_functions=("seed", "log"))), SUDO, NETUID),
    )


def test_policy_allows_whitelisted_imports(empty: RegistryState) -> None:
    wat = '(module (import "platform" "log" (func (param i32 i32)))' + good_wasm_body()
    wasm = wasm_of(wat)
    m = manifest(wasm, policy=policy(host_functions=("log",)))
    assert run(empty, sign_manifest(m, SUDO, NETUID), modules=modules_of(wasm)).get("sum-squares")
    refused("module_rejected", empty, sign_manifest(manifest(wasm), SUDO, NETUID), modules=modules_of(wasm))


def good_wasm_body() -> str:
    return """
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) i32.const 0)
  (func (export "evaluate") (param i32 i32 i32 i32) (result i64) i64.const 7))"""


def test_owner_change_follows_the_chain(with_a: RegistryState) -> None:
    from registry.state import with_chain_params

    moved = with_chain_params(with_a, sudo=INTRUDER.public_key)
    refused("wrong_signer", moved, sign_command("activate", "sum-squares", 2, SUDO, NETUID))
    assert run(moved, sign_command("activate", "sum-squares", 2, INTRUDER, NETUID)).active()


def test_default_validator_is_the_runtime(empty: RegistryState) -> None:
    """With no validator injected, the runtime's `validate_module` decides (when runtime/ exists)."""
    validation = pytest.importorskip("runtime.validation")
    escape = wasm_of(ESCAPE_WAT)
    with pytest.raises(RegistryError) as info:
        apply(empty, sign_manifest(manifest(escape), SUDO, NETUID), 1, modules=modules_of(escape))
    assert info.value.code == "module_rejected"
    assert hasattr(validation, "ModuleRejected")


def test_runtime_accepts_a_good_module_and_refuses_a_bad_policy(empty: RegistryState) -> None:
    pytest.importorskip("runtime.validation")
    s = apply(empty, sign_manifest(manifest(WASM_A), SUDO, NETUID), 1, modules=MODULES)
    assert s.get("sum-squares") is not None
    # a module bigger than the policy's own cap is refused by the runtime, with its reason
    small = manifest(WASM_A, policy=policy(max_module_bytes=16))
    with pytest.raises(RegistryError) as info:
        apply(empty, sign_manifest(small, SUDO, NETUID), 1, modules=MODULES)
    assert info.value.code == "module_rejected"
