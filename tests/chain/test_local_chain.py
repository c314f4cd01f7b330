"""The embedded local chain: genesis, block time, a file shared across processes, and set_weights checks."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from validator_node.chain import rules
from validator_node.chain.base import Chain, Hyperparameters
from validator_node.chain.local import Genesis, GenesisNeuron, LocalChain
from validator_node.chain.rules import WeightsRefused
from wire import keys
from wire.keys import Hotkey

NETUID = 3
OWNER = Hotkey.from_name("chain-owner")
VALS = [Hotkey.from_name(f"chain-val-{i}") for i in range(3)]
MINERS = [Hotkey.from_name(f"chain-miner-{i}") for i in range(4)]
TAO = 10**9


def make_genesis(**hp: object) -> Genesis:
    neurons = [GenesisNeuron(OWNER.ss58, 1000 * TAO, True)]
    neurons += [GenesisNeuron(v.ss58, (100 + i) * TAO, True) for i, v in enumerate(VALS)]
    neurons += [GenesisNeuron(m.ss58, 0, False) for m in MINERS]
    params = dict(tempo=10, weights_rate_limit=5, min_allowed_weights=1, max_weight_limit=65535)
    params.update(hp)
    return Genesis(
        netuid=NETUID,
        owner=OWNER.ss58,
        neurons=tuple(neurons),
        hyperparameters=Hyperparameters(**params),  # type: ignore[arg-type]
        block_time_ms=0,
        genesis_block=100,
    )


@pytest.fixture
def chain(tmp_path: Path) -> LocalChain:
    c = LocalChain(tmp_path / "chain.sqlite", make_genesis())
    yield c  # type: ignore[misc]
    c.close()


def test_genesis_reads(chain: LocalChain) -> None:
    assert isinstance(chain, Chain)
    mg = chain.metagraph()
    assert mg.n == 8 and mg.uid_of(VALS[1].ss58) == 2 and mg.uid_of("nobody") is None
    assert [n.uid for n in mg.validators()] == [0, 1, 2, 3]
    assert mg.neurons[1].stake == 100 * TAO and isinstance(mg.neurons[1].stake, int)
    assert chain.subnet_owner() == OWNER.ss58
    assert chain.hyperparameters().tempo == 10
    assert chain.current_block() == 100


def test_block_time_is_derived_from_an_injected_clock(tmp_path: Path) -> None:
    now = [1_000.0]
    g = Genesis(
        netuid=1,
        owner=OWNER.ss58,
        neurons=(),
        block_time_ms=12_000,
        genesis_time_ms=1_000_000,
        genesis_block=1,
    )
    c = LocalChain(tmp_path / "c.sqlite", g, clock=lambda: now[0])
    assert c.current_block() == 1
    now[0] += 11.999
    assert c.current_block() == 1
    now[0] += 0.001
    assert c.current_block() == 2
    assert c.advance(5) == 7
    now[0] += 24
    assert c.current_block() == 9
    c.close()


def test_genesis_time_defaults_to_creation_and_is_shared(tmp_path: Path) -> None:
    g = Genesis(netuid=1, owner=OWNER.ss58, neurons=(), block_time_ms=1000)
    a = LocalChain(tmp_path / "c.sqlite", g, clock=lambda: 50.0)
    b = LocalChain(tmp_path / "c.sqlite", g, clock=lambda: 53.5)  # same genesis, opened later
    assert a.genesis.genesis_time_ms == b.genesis.genesis_time_ms == 50_000
    assert b.current_block() == 4
    with pytest.raises(Exception, match="different genesis"):
        LocalChain(tmp_path / "c.sqlite", Genesis(netuid=2, owner=OWNER.ss58, neurons=()))
    a.close()
    b.close()


def test_genesis_files(tmp_path: Path) -> None:
    d = make_genesis().to_dict()
    (tmp_path / "g.json").write_text(json.dumps(d))
    assert Genesis.load(tmp_path / "g.json") == make_genesis()
    (tmp_path / "g.toml").write_text(
        f'netuid = 5\nowner = "{OWNER.ss58}"\n[hyperparameters]\ntempo = 99\n'
        f'[[neurons]]\nhotkey = "{OWNER.ss58}"\nstake = 5\nvalidator_permit = true\n'
    )
    g = Genesis.load(tmp_path / "g.toml")
    assert g.hyperparameters.tempo == 99 and g.neurons[0].stake == 5
    with pytest.raises(Exception, match="stake must be a non-negative integer"):
        Genesis.from_dict({**d, "neurons": [{"hotkey": "x", "stake": 1.5}]})
    with pytest.raises(Exception, match="unknown hyperparameters"):
        Genesis.from_dict({**d, "hyperparameters": {"tempoo": 1}})


def test_set_weights_is_recorded(chain: LocalChain) -> None:
    r = chain.set_weights(VALS[0], [4, 5, 6], [100, 200, 400], version_key=0)
    assert r.mode == "plain" and r.block == 100
    (rec,) = chain.weight_records()
    assert rec.uid == 1 and rec.hotkey == VALS[0].ss58 and rec.submitted == (100, 200, 400)
    assert rec.stored == (16384, 32768, 65535)  # max-upscaled the chain's way
    assert rec.epoch == chain.hyperparameters().epoch_of(100, NETUID) and rec.revealed
    assert chain.weight_records(epoch=rec.epoch + 1) == []
    # the call was signed by the validator's hotkey, like an extrinsic, and the signature is kept
    assert keys.verify(
        VALS[0].public_key, chain.call_payload(0, [4, 5, 6], [100, 200, 400], 0), rec.signature
    )
    assert not keys.verify(
        VALS[1].public_key, chain.call_payload(0, [4, 5, 6], [100, 200, 400], 0), rec.signature
    )


def test_unsigned_or_forged_calls_are_refused(chain: LocalChain) -> None:
    with pytest.raises(TypeError, match="signing hotkey"):
        chain.set_weights(VALS[0].ss58, [4], [1])

    class Forger:
        public_key = VALS[0].public_key  # claims a validator's key, signs with another

        def sign(self, data: bytes) -> bytes:
            return VALS[1].sign(data)

    with pytest.raises(WeightsRefused, match="BadSignature"):
        chain.set_weights(Forger(), [4], [1])
    assert chain.weight_records() == []


def test_weights_from_another_process_are_seen(chain: LocalChain, tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        from validator_node.chain.local import LocalChain
        from wire.keys import Hotkey
        c = LocalChain({str(chain.path)!r})
        c.advance(3)
        c.set_weights(Hotkey.from_name("chain-val-2"), [0, 4], [1, 2])
        print(c.current_block())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "103"
    assert chain.current_block() == 103
    (rec,) = chain.weight_records(hotkey=VALS[2].ss58)
    assert rec.block == 103 and rec.uids == (0, 4)


def refuse(chain: LocalChain, code: str, signer: object, uids: list[int], w: list[int], **kw: int) -> None:
    with pytest.raises(WeightsRefused) as info:
        chain.set_weights(signer, uids, w, **kw)
    assert info.value.code == code, info.value
    assert chain.refusals()[-1][2] == code


def test_each_chain_check_refuses_once(chain: LocalChain, tmp_path: Path) -> None:
    v = VALS[0]
    refuse(chain, "WeightVecNotEqualSize", v, [4, 5], [1])
    refuse(chain, "MechanismDoesNotExist", v, [4], [1], mechid=1)
    refuse(chain, "UidsLengthExceedUidsInSubNet", v, list(range(9)), [1] * 9)
    refuse(chain, "HotKeyNotRegisteredInSubNet", Hotkey.from_name("stranger"), [4], [1])
    chain.set_hyperparameters(weights_min_stake=101 * TAO)
    refuse(chain, "NotEnoughStakeToSetWeights", v, [4], [1])
    chain.set_hyperparameters(weights_min_stake=0, weights_version_key=7)
    refuse(chain, "IncorrectWeightVersionKey", v, [4], [1], version_key=6)
    chain.set_weights(v, [4], [1], version_key=7)  # a newer key than required is fine
    chain.advance(4)
    refuse(chain, "SettingWeightsTooFast", v, [4], [1], version_key=7)
    chain.advance(1)  # exactly rate_limit blocks later is allowed, as on subtensor
    chain.set_weights(v, [4], [1], version_key=7)
    chain.set_hyperparameters(weights_version_key=0)
    refuse(chain, "NeuronNoValidatorPermit", MINERS[0], [4, 5], [1, 1])
    refuse(chain, "DuplicateUids", VALS[1], [4, 4], [1, 1])
    refuse(chain, "UidVecContainInvalidOne", VALS[1], [4, 8], [1, 1])
    chain.set_hyperparameters(min_allowed_weights=3)
    refuse(chain, "WeightVecLengthIsLow", VALS[1], [4, 5], [1, 1])
    chain.set_hyperparameters(min_allowed_weights=1, max_weight_limit=32768)
    refuse(chain, "MaxWeightExceeded", VALS[1], [4, 5], [65535, 30000])
    chain.set_weights(VALS[1], [4, 5], [65535, 65535])  # exactly half each: within the limit
    assert [r[2] for r in chain.refusals()] == [
        "WeightVecNotEqualSize", "MechanismDoesNotExist", "UidsLengthExceedUidsInSubNet",
        "HotKeyNotRegisteredInSubNet", "NotEnoughStakeToSetWeights", "IncorrectWeightVersionKey",
        "SettingWeightsTooFast", "NeuronNoValidatorPermit", "DuplicateUids", "UidVecContainInvalidOne",
        "WeightVecLengthIsLow", "MaxWeightExceeded",
    ]  # fmt: skip
    assert len(chain.weight_records()) == 3


def test_self_weight_is_exempt(chain: LocalChain) -> None:
    """A single weight on one's own UID passes without a permit, min weights or the max limit."""
    chain.set_hyperparameters(min_allowed_weights=3, max_weight_limit=1000)
    chain.set_weights(MINERS[0], [4], [7])  # miner uid 4 weighting itself
    refuse(chain, "NeuronNoValidatorPermit", MINERS[1], [4], [7])  # uid 5 weighting another uid


def test_commit_reveal_is_modelled(chain: LocalChain) -> None:
    chain.set_hyperparameters(commit_reveal=True, reveal_period_epochs=1)
    r = chain.set_weights(VALS[0], [4, 5], [1, 2])
    hp = chain.hyperparameters()
    assert r.mode == "commit" and r.reveal_block == hp.first_block_of(hp.epoch_of(100, NETUID) + 1, NETUID)
    assert chain.weight_records(revealed_only=True) == []
    refuse(chain, "SettingWeightsTooFast", VALS[0], [4, 5], [1, 2])  # commits are rate-limited too
    chain.advance(r.reveal_block - chain.current_block())
    (rec,) = chain.weight_records(revealed_only=True)
    assert rec.mode == "commit" and rec.stored == (32768, 65535)


def test_zero_stake_and_no_permits(tmp_path: Path) -> None:
    g = Genesis(
        netuid=1,
        owner=OWNER.ss58,
        neurons=(GenesisNeuron(OWNER.ss58, 0, True), GenesisNeuron(VALS[0].ss58, 5, False)),
        block_time_ms=0,
    )
    c = LocalChain(tmp_path / "z.sqlite", g)
    mg = c.metagraph()
    assert mg.validators() == () and mg.total_stake == 5  # zero stake or no permit: nobody validates
    with pytest.raises(WeightsRefused, match="NeuronNoValidatorPermit"):
        c.set_weights(VALS[0], [0, 1], [1, 1])
    c.set_hyperparameters(weights_min_stake=1)
    with pytest.raises(WeightsRefused, match="NotEnoughStakeToSetWeights"):
        c.set_weights(OWNER, [0, 1], [1, 1])
    c.close()


def test_rules_match_subtensor_fixed_point() -> None:
    # vec_u16_max_upscale_to_u16 rounds 20000 * 65535 / 40000 = 32767.5 down, through I32F32:
    # the pre-divided ratio 65535/40000 is truncated (the SDK's float `normalize` says 32768)
    assert rules.max_upscale_u16([40000, 20000]) == [65535, 32767]
    assert rules.max_upscale_u16([1, 2, 3]) == [21845, 43690, 65535]
    assert rules.max_upscale_u16([0, 0]) == [0, 0] and rules.max_upscale_u16([]) == []
    assert rules.max_limited([65535, 65535], 32768) and not rules.max_limited([65535, 65000], 32768)
    # 32767/65535 is just under one half; truncation makes exact halves fail that limit
    assert not rules.max_limited([65535, 65535], 32767)


def test_concurrent_writers_from_separate_processes(chain: LocalChain) -> None:
    code = textwrap.dedent("""
        import sys
        from validator_node.chain.local import LocalChain
        from wire.keys import Hotkey
        c = LocalChain(sys.argv[1])
        c.set_weights(Hotkey.from_name(sys.argv[2]), [4, 5], [1, 2])
    """)
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(chain.path), f"chain-val-{i}"]) for i in range(3)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    assert sorted(r.uid for r in chain.weight_records()) == [1, 2, 3]


def test_a_call_that_names_its_app_epoch_is_signed_with_it(chain: LocalChain, tmp_path: Path) -> None:
    """Issue 15: an auditor maps a local-chain record to the app epoch its weights were decided
    for: the epoch is in the signed call (payload version 2), so it cannot be changed unseen; and
    a chain file from before the column existed gains it when opened."""
    chain.set_weights(VALS[0], [0, 4], [1, 2], app_epoch=7)
    chain.set_weights(VALS[1], [0, 4], [1, 2])
    named, plain = chain.weight_records()
    assert named.app_epoch == 7 and plain.app_epoch is None
    v2 = chain.call_payload(0, [0, 4], [1, 2], 0, 7)
    assert keys.verify(VALS[0].public_key, v2, named.signature)
    assert not keys.verify(VALS[0].public_key, chain.call_payload(0, [0, 4], [1, 2], 0, 8), named.signature)
    assert keys.verify(VALS[1].public_key, chain.call_payload(0, [0, 4], [1, 2], 0), plain.signature)

    import sqlite3

    old = tmp_path / "old.sqlite"
    LocalChain(old, make_genesis()).close()
    with sqlite3.connect(old) as db:
        db.execute("ALTER TABLE weights DROP COLUMN app_epoch")
    with LocalChain(old) as reopened:
        reopened.set_weights(VALS[0], [0, 4], [1, 2], app_epoch=1)
        assert reopened.weight_records()[0].app_epoch == 1


def test_endpoints_are_commitments_of_registered_hotkeys_within_a_quota(chain: LocalChain) -> None:
    """Issue 13: the local chain models `set_commitment` as validators publish their addresses:
    a registered hotkey's signed call, one Raw field of at most 128 bytes, at least 100 bytes of
    a per-tempo space quota per call; the newest per hotkey is read back."""
    from validator_node.chain.base import EndpointRefused

    assert chain.publish_endpoint(VALS[0], "btp1 /ip4/10.0.0.1/tcp/1/p2p/x") == 100
    chain.publish_endpoint(VALS[0], "btp1 newer")
    chain.publish_endpoint(VALS[1], "other")
    assert chain.endpoints() == {VALS[0].ss58: "btp1 newer", VALS[1].ss58: "other"}
    with pytest.raises(EndpointRefused) as info:
        chain.publish_endpoint(Hotkey.from_name("nobody"), "btp1 x")
    assert info.value.code == "AccountNotAllowedCommit"
    with pytest.raises(EndpointRefused) as info:
        chain.publish_endpoint(VALS[2], "x" * 129)
    assert info.value.code == "TooManyFieldsInCommitmentInfo"
    for _ in range(LocalChain.COMMITMENT_SPACE // LocalChain.COMMITMENT_MIN_COST - 2):  # 2 used above
        chain.publish_endpoint(VALS[0], "btp1 again")
    with pytest.raises(EndpointRefused) as info:
        chain.publish_endpoint(VALS[0], "btp1 one too many")
    assert info.value.code == "SpaceLimitExceeded"
    chain.advance(chain.hyperparameters().tempo + 1)  # the next chain epoch: a fresh quota
    chain.publish_endpoint(VALS[0], "btp1 next epoch")
