"""A local failure never decides validity and never stops a node on a decided block (issue 12,
item 8).

On 1be342a a module that failed on this host only (its wall clock fired on a busy machine, or the
sandbox could not open its files) either escaped block validation as a raw exception, or was
memoised as the module's verdict; a decided block then failed here, `apply_decided` raised and
the node exited, and replaying on restart did the same. The certificate is the authority: the
block is applied, the disagreement recorded and counted.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import wasmtime

from registry.manifest import ChallengeManifest, ModulePolicy
from registry.state import runtime_validator, sign_manifest
from tests.node.app_world import make_app
from tests.node.test_evidence import (
    CID,
    CUT,
    NETUID,
    OWNER,
    VALS,
    VSET,
    B,
    P,
    at_cut,
    vote,
    votes_body,
)
from validator_node.block import build_block
from validator_node.evaluation import Evaluator, SandboxAggregator
from validator_node.evidence import BitDefenseRounds
from validator_node.metrics import Metrics
from validator_node.pipeline.evidence import epoch_seed
from validator_node.pipeline.messages import EMPTY_BODY, BlockBody, RegistryItem
from validator_node.pipeline.state import LocalFailure, apply_body, derive_weights
from wire.codec import encode

TIP = b"t" * 32


def test_a_host_fault_in_aggregate_is_not_a_verdict_and_the_decided_weights_apply(tmp_path: Path) -> None:
    evaluator = Evaluator(tmp_path / "good", Metrics())
    healthy = SandboxAggregator(evaluator, runtime_validator, Metrics())
    s = at_cut(healthy)
    bundle = BitDefenseRounds().observe(CID, 0, epoch_seed(bytes(32)), CUT, s, VSET)
    s = apply_body(
        s, votes_body([vote(v, bundle) for v in VALS[:3]], [bundle]), height=5, parent=P, vset=VSET
    )
    for h in range(6, B):
        s = apply_body(s, EMPTY_BODY, height=h, parent=P, vset=VSET)
    decided = derive_weights(s, VSET, 0, healthy)  # what the quorum derived
    evaluator.close()
    assert any(uid != 0 for row in decided.rows for uid in row.uids)

    app, chain = make_app(tmp_path / "node", "evidence", NETUID, B)
    # this node's sandbox cannot open its files (its data dir is not a directory): a host fault
    (tmp_path / "not-a-dir").write_text("")
    app.aggregator = SandboxAggregator(
        Evaluator(tmp_path / "not-a-dir", app.metrics), app.validate_module, app.metrics
    )
    app.install(s, B - 1, TIP)
    data = build_block(
        B,
        TIP,
        VALS[0].public_key,
        0,
        app.root,
        encode(BlockBody(None, (), (), (), decided)),
        genesis=app.genesis_hash,
    )

    with pytest.raises(LocalFailure):  # the rules say "cannot tell here", not "invalid"
        apply_body(
            s, BlockBody(None, (), (), (), decided), height=B, parent=TIP, vset=VSET, aggregate=app.aggregator
        )
    reason = app.validate(B, data, 0)
    assert reason is not None and reason.startswith("local failure, not a verdict")
    assert app.metrics.get("local_failures_total", where="validate") == 1

    app.apply_decided(B, data)  # the certificate is the authority
    assert app.tip_height == B and app.state.weights[0] == decided
    assert app.metrics.get("decided_disagreements_total", reason="weights_underivable") == 1
    chain.close()


SPIN = bytes(
    wasmtime.wat2wasm(
        """(module
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) (i32.const 0))
  (func (export "evaluate") (param i32 i32 i32 i32) (result i64) (i64.const 0))
  (func (export "abi_version") (result i32) (loop $spin (br $spin)) (i32.const 1)))"""
    )
)


def test_a_wall_clock_timeout_at_registration_is_never_memoised_and_never_stops_a_decided_block(
    tmp_path: Path,
) -> None:
    """The ABI probe spins: its 50M probe fuel takes ~100 ms here, far past a 1 ms wall clock
    (5 ms ticks: the guard fires within 10 ms, and within 10 ms again on the 4x retry)."""
    app, chain = make_app(tmp_path, "evidence", NETUID, B)
    policy = ModulePolicy(wall_clock_ms=1)
    m = ChallengeManifest(
        "spin", "spin", 1, hashlib.sha256(SPIN).digest(), len(SPIN), 1, policy, 0, 0, b"", 0, 1
    )
    item = RegistryItem(sign_manifest(m, OWNER, NETUID), SPIN)
    body = BlockBody(app.chain_view, (item,), (), (), None)
    data = build_block(
        1, app.tip_hash, VALS[0].public_key, 0, app.root, encode(body), genesis=app.genesis_hash
    )

    reason = app.validate(1, data, chain.current_block())
    assert reason is not None and reason.startswith("local failure, not a verdict"), reason
    assert "timeout" in reason
    key = (hashlib.sha256(SPIN).digest(), encode(policy))
    assert key not in app._module_ok  # the next check runs the module again

    app.apply_decided(1, data)
    assert app.state.registry.get("spin") is not None
    assert app.metrics.get("decided_disagreements_total", reason="module_verdict") == 1
    chain.close()
