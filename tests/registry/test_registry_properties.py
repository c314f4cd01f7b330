"""Random sequences of signed actions, valid and not: the registry's invariants always hold."""

from __future__ import annotations

import collections

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from registry_helpers import INTRUDER, NETUID, SUDO, good_wasm, manifest, modules_of, wasmtime_validator

from registry import (
    PPB,
    RegistryAction,
    RegistryError,
    RegistryState,
    apply,
    genesis,
    sign_command,
    sign_manifest,
)
from wire import decode, encode

WASMS = [good_wasm(i) for i in range(3)]
MODULES = modules_of(*WASMS)
OUTCOMES: collections.Counter[str] = collections.Counter()


def draw_action(data: st.DataObject, state: RegistryState) -> tuple[RegistryAction, int, bool]:
    """Mostly plausible actions (existing ids, the next nonce, the owner's key), sometimes not."""
    existing = [e.manifest.challenge_id for e in state.challenges]
    op = data.draw(st.sampled_from(["add", "update", "activate", "activate", "deactivate", "remove"]))
    if not existing and data.draw(st.integers(0, 4)):
        op = "add"
    fresh = [c for c in ("a", "b", "c") if c not in existing]
    if op == "add":
        ids = fresh if fresh and data.draw(st.integers(0, 4)) else ["a", "b", "c"]
    else:
        ids = existing if existing and data.draw(st.integers(0, 6)) else ["a", "b", "c"]
    cid = data.draw(st.sampled_from(ids))
    nonce = max(state.last_nonce + data.draw(st.sampled_from([1, 1, 1, 1, 2, 0, -1])), 0)
    bad = data.draw(st.integers(0, 9)) == 0
    key = INTRUDER if bad else SUDO
    if op in ("add", "update"):
        current = state.get(cid)
        version = (current.manifest.version if current else 0) + data.draw(st.sampled_from([1, 1, 2, 0]))
        m = manifest(
            WASMS[data.draw(st.integers(0, 2))],
            challenge_id=cid,
            version=version,
            nonce=nonce,
            emission_share_ppb=data.draw(st.sampled_from([0, 250_000_000, 600_000_000, PPB])),
            mechanism_id=data.draw(st.sampled_from([0, 0, 1, 2])),  # the subnet has 2
        )
        return sign_manifest(m, key, NETUID, op=op), nonce, bad
    return sign_command(op, cid, nonce, key, NETUID), nonce, bad


@settings(max_examples=70, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_invariants_hold_for_any_sequence(data: st.DataObject) -> None:
    state: RegistryState = genesis(NETUID, SUDO.public_key, mechanism_count=2)
    versions: dict[str, int] = {}
    for height in range(data.draw(st.integers(1, 24))):
        action, nonce, bad = draw_action(data, state)
        before = encode(state)
        try:
            new = apply(state, action, height, modules=MODULES, validate=wasmtime_validator)
        except RegistryError as exc:
            OUTCOMES[exc.code] += 1
            assert exc.code and exc.message  # every refusal names its reason
            assert encode(state) == before
            continue
        OUTCOMES["ok:" + action.op] += 1
        assert not bad, "an intruder's action was applied"
        assert new.last_nonce == nonce > state.last_nonce
        for mech in (0, 1):
            assert sum(m.emission_share_ppb for m in new.active() if m.mechanism_id == mech) <= PPB
        for e in new.challenges:
            m = e.manifest
            assert m.version >= versions.get(m.challenge_id, 0) and m.mechanism_id < new.mechanism_count
            versions[m.challenge_id] = m.version
        ids = [e.manifest.challenge_id for e in new.challenges]
        assert ids == sorted(set(ids))
        assert decode(encode(new), RegistryState) == new
        state = new
        versions = {k: v for k, v in versions.items() if k in ids}


def test_the_sequences_reach_every_outcome() -> None:
    """Guard against a vacuous property: the generated sequences applied and refused all kinds."""
    if not OUTCOMES:
        test_invariants_hold_for_any_sequence()
    for key in ("ok:add", "ok:update", "ok:activate", "ok:deactivate", "ok:remove", "wrong_signer",
                "stale_nonce", "shares_exceeded", "unknown_mechanism", "version_not_increasing"):  # fmt: skip
        assert OUTCOMES[key] > 0, (key, OUTCOMES)
