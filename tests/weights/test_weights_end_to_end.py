"""Registry -> decided scores -> weight matrix -> every validator's set_weights on the local chain."""

from __future__ import annotations

import hashlib
from pathlib import Path

import wasmtime

from registry import ChallengeManifest, ModulePolicy, apply, genesis, sign_command, sign_manifest
from validator_node.chain.base import Hyperparameters
from validator_node.chain.local import Genesis, GenesisNeuron, LocalChain
from validator_node.weights import WeightLimits, from_manifests, weight_rows
from wire.keys import Hotkey, public_key_of

WAT = """(module (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) i32.const 0)
  (func (export "evaluate") (param i32 i32 i32 i32) (result i64) i64.const ID))"""


def test_registry_to_chain(tmp_path: Path) -> None:
    owner = Hotkey.from_name("e2e-owner")
    vals = [Hotkey.from_name(f"e2e-val-{i}") for i in range(3)]
    miners = [Hotkey.from_name(f"e2e-miner-{i}") for i in range(5)]
    neurons = [GenesisNeuron(owner.ss58, 10**12, True)]
    neurons += [GenesisNeuron(v.ss58, 10**12, True) for v in vals]
    neurons += [GenesisNeuron(m.ss58, 0, False) for m in miners]
    hp = Hyperparameters(tempo=20, weights_rate_limit=10, min_allowed_weights=2, max_weight_limit=30_000)
    chain = LocalChain(tmp_path / "c.sqlite", Genesis(1, owner.ss58, tuple(neurons), hp, block_time_ms=0))

    # the sudo key is the chain's subnet owner
    state = genesis(1, public_key_of(chain.subnet_owner()), hp.mechanism_count)
    modules = {}
    nonce = 0
    for cid, share in (("alpha", 500_000_000), ("beta", 300_000_000)):
        wasm = bytes(wasmtime.wat2wasm(WAT.replace("ID", str(len(cid)))))
        sha = hashlib.sha256(wasm).digest()
        modules[sha] = wasm
        m = ChallengeManifest(
            challenge_id=cid, name=cid, version=1, wasm_sha256=sha, wasm_size=len(wasm),
            abi_version=1, policy=ModulePolicy(), emission_share_ppb=share, mechanism_id=0, task=b"",
            activation_epoch=0, nonce=nonce + 1,
        )  # fmt: skip
        state = apply(state, sign_manifest(m, owner, 1), 1, modules=modules, validate=lambda _w, _p: None)
        state = apply(state, sign_command("activate", cid, nonce + 2, owner, 1), 1)
        nonce += 2

    decided = {"alpha": {4: 900_000_000, 5: 300_000_000}, "beta": {5: 10, 6: 30, 99: 5}}
    limits = WeightLimits.of(chain.metagraph(), chain.hyperparameters())
    rows = weight_rows(from_manifests(state.active(epoch=0), decided), owner_uid=0, limits=limits)
    (row,) = rows
    for v in vals:  # every honest validator derives and submits the identical vector
        chain.set_weights(v, row.uids, row.weights)
    records = chain.weight_records()
    assert len(records) == 3 and len({(r.uids, r.stored) for r in records}) == 1
    assert records[0].stored == row.weights and 0 in row.uids  # 20% burnt to the owner
    assert chain.refusals() == []
    chain.close()
