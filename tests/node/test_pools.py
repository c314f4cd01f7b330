"""What waits for a block is checked at the door and bounded (issue 12, item 1).

The attack measured on 1be342a: anyone who reaches the submit port sends registry items whose
envelope merely *names* the owner's key, with ~900 KiB modules and nonces near 2^63; every
validator kept all of them (300 items: 264 MiB) and every proposal walked them all.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from consensus.validators import ValidatorSet
from registry.manifest import OP_ACTIVATE, OP_ADD, ChallengeManifest, ModulePolicy, RegistryAction
from registry.state import sign_command, sign_manifest
from tests.node.toy_subnet import STAKES
from validator_node.app import Application
from validator_node.chain.base import Hyperparameters
from validator_node.chain.local import Genesis, GenesisNeuron, LocalChain
from validator_node.devnet.challenges import ExampleChallenge
from validator_node.genesis import record_from_chain
from validator_node.pipeline import proposal
from validator_node.pipeline.messages import BlockBody, RegistryItem, Submission
from validator_node.pipeline.pools import NONCE_WINDOW
from validator_node.pipeline.state import AppState, Draft
from wire.codec import decode, encode
from wire.envelope import SignedEnvelope, seal
from wire.keys import Hotkey

NETUID = 7
B = 6
OWNER = Hotkey.from_name("pools-owner")
VALS = [Hotkey.from_name(f"pools-v{i}") for i in range(len(STAKES))]
MINERS = [Hotkey.from_name(f"pools-m{i}") for i in range(3)]
VSET = ValidatorSet.of((v.public_key, s) for v, s in zip(VALS, STAKES, strict=True))
ATTACKER = Hotkey.from_name("pools-attacker")
MODULE = bytes(range(256)) * (900 * 4)  # 900 KiB: not wasm, and it never needs to be


def make_app(root: Path, **hp: int) -> tuple[Application, LocalChain]:
    neurons = (
        GenesisNeuron(OWNER.ss58, 0, False),
        *(GenesisNeuron(v.ss58, s, True) for v, s in zip(VALS, STAKES, strict=True)),
        *(GenesisNeuron(m.ss58, 0, False) for m in MINERS),
    )
    genesis = Genesis(NETUID, OWNER.ss58, neurons, Hyperparameters(tempo=B, **hp), 0, 1)
    root.mkdir(parents=True, exist_ok=True)
    chain = LocalChain(root / "chain.sqlite", genesis)
    return Application(record_from_chain(chain, NETUID, B)), chain


def manifest(nonce: int, module: bytes = MODULE, cid: str = "big") -> ChallengeManifest:
    return ChallengeManifest(
        cid, cid, 1, hashlib.sha256(module).digest(), len(module), 1, ModulePolicy(),
        100_000_000, 0, b"", 0, nonce,
    )  # fmt: skip


def forged(nonce: int) -> RegistryItem:
    """An add whose envelope names the owner but is signed by someone else."""
    env = seal(manifest(nonce), ATTACKER, NETUID)
    return RegistryItem(
        RegistryAction(OP_ADD, SignedEnvelope(NETUID, OWNER.public_key, env.body, env.signature)), MODULE
    )


def test_forged_900_kib_registry_items_are_refused_at_the_door_and_cost_proposals_nothing(
    tmp_path: Path,
) -> None:
    app, chain = make_app(tmp_path)
    # the measurement: 300 forged ~900 KiB items, half far-future nonces, half in the window
    items = [forged(2**63 - 1 - i) for i in range(150)] + [forged(1 + i % NONCE_WINDOW) for i in range(150)]
    reasons = [app.offer(item) for item in items]
    assert all(r is not None for r in reasons)
    assert len(app.registry_pool) == 0 and app.registry_pool.bytes == 0
    assert app.metrics.get("pool_refused_total", kind="registry", reason="nonce_too_far") == 150
    assert app.metrics.get("pool_refused_total", kind="registry", reason="bad_signature") == 150
    # the same forgery again is a duplicate: no second signature check
    assert app.offer(items[-1]) == "duplicate"
    # the next height is unaffected: the proposal carries no registry item and applies cleanly
    data = app.propose(1, VALS[0].public_key, chain.current_block())
    assert decode(decode_block_body(data), BlockBody).registry == ()
    assert app.validate(1, data, chain.current_block()) is None
    app.apply_decided(1, data)
    chain.close()


def decode_block_body(data: bytes) -> bytes:
    from validator_node.block import Block

    return decode(data, Block).body


def test_owner_items_need_a_nonce_in_the_window_and_the_named_module(tmp_path: Path) -> None:
    app, chain = make_app(tmp_path)
    good = RegistryItem(sign_manifest(manifest(1), OWNER, NETUID), MODULE)
    far = RegistryItem(sign_manifest(manifest(NONCE_WINDOW + 1), OWNER, NETUID), MODULE)
    short = RegistryItem(sign_manifest(manifest(2), OWNER, NETUID), MODULE[:-1])
    other = RegistryItem(sign_manifest(manifest(3), OWNER, NETUID), MODULE[:-1] + b"x")
    stray = RegistryItem(sign_command(OP_ACTIVATE, "big", 4, OWNER, NETUID), b"\0asm")
    assert app.offer(good) is None
    assert app.offer(good) == "duplicate"
    assert "more than" in (app.offer(far) or "")
    assert "module is" in (app.offer(short) or "")
    assert "not the one" in (app.offer(other) or "")
    assert "carries no module" in (app.offer(stray) or "")
    assert len(app.registry_pool) == 1
    m = app.metrics
    for reason in ("duplicate", "nonce_too_far", "module_size", "module_hash", "stray_module"):
        assert m.get("pool_refused_total", kind="registry", reason=reason) == 1, reason
    chain.close()


def test_the_registry_pool_is_capped_in_count_and_bytes(tmp_path: Path) -> None:
    app, chain = make_app(tmp_path)
    # the owner's own items: many commands for the same nonces (count cap)
    cmds = [
        RegistryItem(sign_command(OP_ACTIVATE, f"c{i}", 1 + i % NONCE_WINDOW, OWNER, NETUID), None)
        for i in range(40)
    ]
    results = [app.offer(c) for c in cmds]
    assert results[:32] == [None] * 32
    assert all("maximum of 32 items" in (r or "") for r in results[32:])
    app2, chain2 = make_app(tmp_path / "b")
    bigs = [
        RegistryItem(sign_manifest(manifest(1 + i % NONCE_WINDOW, cid=f"b{i}"), OWNER, NETUID), MODULE)
        for i in range(20)
    ]
    results = [app2.offer(b) for b in bigs]
    kept = results.count(None)
    assert kept == 18 and app2.registry_pool.bytes <= 16 * 1024 * 1024  # 18 x ~900 KiB
    assert app2.metrics.get("pool_refused_total", kind="registry", reason="pool_full") == 2
    chain.close()
    chain2.close()


@pytest.mark.parametrize("kind", ["registry", "submission"])
def test_a_proposal_tries_a_bounded_number_of_pooled_items(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However many items a pool holds, a proposal checks at most a fixed number of them."""
    app, chain = make_app(tmp_path)
    tried = {"n": 0}
    method = "registry_item" if kind == "registry" else "submission"
    real = getattr(Draft, method)

    def counting(self: Draft, *args: object) -> object:
        tried["n"] += 1
        return real(self, *args)

    monkeypatch.setattr(Draft, method, counting)
    stranger = Hotkey.from_name("pools-stranger")
    registry = [RegistryItem(sign_command(OP_ACTIVATE, f"x{i}", 1, OWNER, NETUID), None) for i in range(600)]
    subs = [seal(Submission("none", 0, i, b"x"), stranger, NETUID) for i in range(3000)]
    state: AppState = app.state
    proposal.build_body(
        state,
        height=2 if kind == "submission" else 1,
        parent=bytes(32),
        vset=VSET,
        epoch_info=app.chain_view,
        registry_pool=registry if kind == "registry" else [],
        submission_pool=subs if kind == "submission" else [],
        attestation_pool=[],
    )
    bound = proposal.TRIES_PER_SLOT * (16 if kind == "registry" else 256)
    assert 0 < tried["n"] <= bound
    assert len(encode(subs[0])) > 0
    chain.close()


def test_a_copy_stripped_of_its_module_cannot_shadow_the_owners_item(tmp_path: Path) -> None:
    app, chain = make_app(tmp_path)
    full = RegistryItem(sign_manifest(manifest(1), OWNER, NETUID), MODULE)
    stripped = RegistryItem(full.action, None)  # anyone relaying the owner's action can do this
    assert app.offer(stripped) is None
    assert app.offer(full) is None  # not a "duplicate" of the stripped copy
    chain.close()


def test_registry_items_are_proposed_in_nonce_order_whatever_order_they_arrived_in(tmp_path: Path) -> None:
    from validator_node.devnet import example_challenges

    app, chain = make_app(tmp_path)
    c = next(c for c in example_challenges() if c.challenge_id == "maxsat")
    m = ChallengeManifest(
        "maxsat", "maxsat", 1, hashlib.sha256(c.wasm).digest(), len(c.wasm), 1,
        ModulePolicy.from_dict(c.policy), 500_000_000, 0, c.task, 0, 1,
    )  # fmt: skip
    add = RegistryItem(sign_manifest(m, OWNER, NETUID), c.wasm)
    activate = RegistryItem(sign_command(OP_ACTIVATE, "maxsat", 2, OWNER, NETUID), None)
    assert app.offer(activate) is None and app.offer(add) is None  # the activate arrives first
    data = app.propose(1, VALS[0].public_key, chain.current_block())
    assert decode(decode_block_body(data), BlockBody).registry == (add, activate)
    chain.close()


def test_the_owner_hears_what_a_pooled_action_will_do(tmp_path: Path) -> None:
    """`registry publish` used to answer a bare `ok` for actions that were then silently dropped
    (issue 16): the outlook applies the action, after the pooled ones before it, to a copy."""
    app, chain = make_app(tmp_path)
    add = RegistryItem(sign_manifest(manifest(1), OWNER, NETUID), MODULE)
    deactivate = RegistryItem(sign_command("deactivate", "big", 2, OWNER, NETUID), None)
    activate = RegistryItem(sign_command(OP_ACTIVATE, "big", 3, OWNER, NETUID), None)
    unknown = RegistryItem(sign_command(OP_ACTIVATE, "nope", 4, OWNER, NETUID), None)
    for item in (add, deactivate, activate, unknown):
        assert app.offer(item) is None
    assert app.registry_outlook(add).startswith("pooled; it applies on the registry as decided at height 0")
    # the add leaves "big" inactive, so the deactivate after it would be dropped
    out = app.registry_outlook(deactivate)
    assert "would be dropped: not_active" in out and "after the 1 pooled action(s)" in out
    assert app.registry_outlook(activate).startswith("pooled; it applies")
    assert "would be dropped: unknown_challenge" in app.registry_outlook(unknown)
    assert len(app.registry_pool) == 4  # advice only: nothing left the pool
    chain.close()


def test_a_full_quota_of_the_closing_epoch_does_not_refuse_the_next_epochs_submissions(
    tmp_path: Path,
) -> None:
    """Found running `devnet --keep-running` (issue 16): miners that submit as soon as a validator's
    tip is the epoch's last block were refused "rate limited" for the *next* epoch (24 of 42
    answers), and pooled ones were pruned, because the closing epoch's per-miner counts were checked
    although the next block opens a new epoch and resets them."""
    from validator_node.pipeline.state import MAX_SUBMISSIONS_PER_MINER

    app, chain = make_app(tmp_path)
    c = offer_active_maxsat(app)
    miner = MINERS[0]

    def decide(h: int) -> None:
        app.apply_decided(h, app.propose(h, VALS[0].public_key, chain.current_block()))

    decide(1)
    for n in range(MAX_SUBMISSIONS_PER_MINER):
        assert app.offer(seal(Submission("maxsat", 0, n, c.payloads[0]), miner, NETUID)) is None
    for h in range(2, B + 1):  # the epoch's last block is B
        decide(h)
    assert app.state.miner_counts[(miner.public_key, "maxsat")] == MAX_SUBMISSIONS_PER_MINER
    assert app.tip_height == B and app.state.is_epoch_end(B)
    nxt = seal(Submission("maxsat", 1, 0, c.payloads[0]), miner, NETUID)
    assert app.offer(nxt) is None
    decide(B + 1)  # and it survives the prune after the block that opens epoch 1, then is taken
    assert app.state.submissions and any(a.miner == miner.public_key for a in app.state.submissions.values())
    chain.close()


def test_an_offered_envelope_is_parsed_once_and_a_duplicate_costs_no_signature_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: an item was CBOR-decoded two or three times at the door (its tag, then its body
    again to open the envelope), and a replayed submission paid a signature check before the
    duplicate check. Now: one parse of the body, cheap checks and dedup, then the signature."""
    import wire.cbor
    import wire.envelope

    app, chain = make_app(tmp_path)
    c = offer_active_maxsat(app)
    app.apply_decided(1, app.propose(1, VALS[0].public_key, chain.current_block()))
    env = seal(Submission("maxsat", 0, 0, c.payloads[0]), MINERS[0], NETUID)

    parses, verifies = [0], [0]
    real_loads, real_verify = wire.cbor.loads, wire.envelope.keys.verify

    def counting_loads(*a: object, **k: object) -> object:
        parses[0] += 1
        return real_loads(*a, **k)  # type: ignore[arg-type]

    def counting_verify(*a: object) -> bool:
        verifies[0] += 1
        return real_verify(*a)  # type: ignore[arg-type]

    monkeypatch.setattr(wire.cbor, "loads", counting_loads)
    monkeypatch.setattr(wire.envelope.keys, "verify", counting_verify)
    assert app.offer(env) is None
    assert (parses[0], verifies[0]) == (1, 1)
    assert app.offer(env) == "duplicate"
    assert (parses[0], verifies[0]) == (2, 1)  # the replay: parsed, found pooled, never verified
    forged = SignedEnvelope(NETUID, env.signer, env.body, bytes(64))
    assert "bad signature" in (app.offer(forged) or "")
    chain.close()


def offer_active_maxsat(app: Application) -> ExampleChallenge:
    """Pool the owner's add and activate of the maxsat example (the next block applies both)."""
    from validator_node.devnet import example_challenges

    c = next(c for c in example_challenges() if c.challenge_id == "maxsat")
    m = ChallengeManifest(
        "maxsat", "maxsat", 1, hashlib.sha256(c.wasm).digest(), len(c.wasm), 1,
        ModulePolicy.from_dict(c.policy), 500_000_000, 0, c.task, 0, 1,
    )  # fmt: skip
    assert app.offer(RegistryItem(sign_manifest(m, OWNER, NETUID), c.wasm)) is None
    assert app.offer(RegistryItem(sign_command(OP_ACTIVATE, "maxsat", 2, OWNER, NETUID), None)) is None
    return c
