"""The bittensor 11 adapter, offline: the real SDK code paths over an in-memory fake Substrate."""

from __future__ import annotations

from pathlib import Path

import pytest
from chain_fake_substrate import FakeSubstrate

from validator_node.chain.base import Chain, ChainError
from validator_node.chain.rules import WeightsRefused
from validator_node.chain.subtensor import SubtensorChain
from wire.keys import Hotkey

NETUID = 7
OWNER = Hotkey.from_name("bt-owner")
VAL = Hotkey.from_name("bt-val")
MINER = Hotkey.from_name("bt-miner")


def hyper(name: str, tag: str, value: object) -> dict[str, object]:
    return {"name": name, "value": {tag: value}}


def make_fake(commit_reveal: bool = False) -> FakeSubstrate:
    f = FakeSubstrate(NETUID, block=1000)
    for item, value in {
        "CommitRevealWeightsEnabled": commit_reveal,
        "WeightsSetRateLimit": 100,
        "LastUpdate": [0, 0, 0],
        "MinAllowedWeights": 1,
        "MaxWeightsLimit": 65535,
        "SubnetEpochConsensus": "Yuma",
        "SubnetOwnerHotkey": OWNER.ss58,
        "MechanismCountCurrent": 2,
        "Tempo": 360,
        "RevealPeriodEpochs": 1,
        "LastEpochBlock": 900,
        "PendingEpochAt": 0,
        "SubnetEpochIndex": 5,
        "BlocksSinceLastStep": 100,
    }.items():
        f.set(item, (NETUID,), value)
    f.set("Uids", (NETUID, VAL.ss58), 1)
    f.set("StakeThreshold", (), 1000)
    f.runtime[("SubnetInfoRuntimeApi", "get_metagraph", (NETUID,))] = {
        "netuid": NETUID, "block": 1000, "tempo": 360, "last_step": 900, "blocks_since_last_step": 100,
        "owner_hotkey": OWNER.ss58, "owner_coldkey": OWNER.ss58, "network_registered_at": 1,
        "hotkeys": [OWNER.ss58, VAL.ss58, MINER.ss58], "coldkeys": [OWNER.ss58] * 3,
        "validator_permit": [True, True, False], "total_stake": [10**12, 5 * 10**11 + 1, 0],
        "active": [True, True, True],
    }  # fmt: skip
    f.runtime[("SubnetInfoRuntimeApi", "get_subnet_hyperparams_v3", (NETUID,))] = [
        hyper("tempo", "u16", 360),
        hyper("weights_rate_limit", "u64", 100),
        hyper("min_allowed_weights", "u16", 1),
        hyper("max_weights_limit", "u16", 65535),
        hyper("commit_reveal_weights_enabled", "bool", commit_reveal),
        hyper("commit_reveal_period", "u64", 2),
        hyper("weights_version", "u64", 3),
    ]
    return f


@pytest.fixture
def fake() -> FakeSubstrate:
    return make_fake()


@pytest.fixture
def chain(fake: FakeSubstrate) -> SubtensorChain:
    c = SubtensorChain(NETUID, "local", substrate=fake)
    yield c  # type: ignore[misc]
    c.close()


def test_reads_go_through_the_sdk(chain: SubtensorChain, fake: FakeSubstrate) -> None:
    assert isinstance(chain, Chain)
    assert chain.current_block() == 1000
    mg = chain.metagraph()
    assert mg.hotkeys == (OWNER.ss58, VAL.ss58, MINER.ss58)
    assert [n.stake for n in mg.neurons] == [10**12, 5 * 10**11 + 1, 0]  # exact rao, no float on the way
    assert [n.uid for n in mg.validators()] == [0, 1]
    hp = chain.hyperparameters()
    assert (hp.tempo, hp.weights_rate_limit, hp.weights_version_key, hp.reveal_period_epochs) == (
        360,
        100,
        3,
        2,
    )
    assert hp.mechanism_count == 2 and hp.weights_min_stake == 1000 and not hp.commit_reveal
    assert chain.subnet_owner() == OWNER.ss58
    assert ("runtime_call", "SubnetInfoRuntimeApi", "get_metagraph") in fake.reads
    assert ("runtime_call", "SubnetInfoRuntimeApi", "get_subnet_hyperparams_v3") in fake.reads


def test_missing_subnet_is_an_error(fake: FakeSubstrate) -> None:
    c = SubtensorChain(NETUID + 1, "local", substrate=fake)
    with pytest.raises(ChainError, match="does not exist"):
        c.metagraph()
    with pytest.raises(ChainError, match="no owner"):
        c.subnet_owner()
    c.close()


def test_plain_set_weights_submits_exactly_our_vector(chain: SubtensorChain, fake: FakeSubstrate) -> None:
    r = chain.set_weights(VAL, [0, 2], [65535, 30001], version_key=3)
    assert r.mode == "plain" and r.block == 1000
    ((call, signer),) = fake.submitted
    assert signer == VAL.ss58
    assert call.function == "set_mechanism_weights"
    assert call.params == {
        "netuid": NETUID,
        "mecid": 0,
        "dests": [0, 2],
        "weights": [65535, 30001],
        "version_key": 3,
    }


def test_commit_reveal_builds_a_timelocked_commit(fake: FakeSubstrate) -> None:
    fake = make_fake(commit_reveal=True)
    c = SubtensorChain(NETUID, "local", substrate=fake)
    r = c.set_weights(VAL, [0, 2], [65535, 30001], mechid=1)
    ((call, signer),) = fake.submitted
    assert r.mode == "commit" and isinstance(r.reveal_round, int) and r.reveal_round > 0
    assert call.function == "commit_timelocked_mechanism_weights" and signer == VAL.ss58
    assert call.params["mecid"] == 1 and call.params["reveal_round"] == r.reveal_round
    assert isinstance(call.params["commit"], bytes) and b"30001" not in call.params["commit"]
    c.close()


def test_sdk_preflight_refusals_carry_the_chain_error_names(
    chain: SubtensorChain, fake: FakeSubstrate
) -> None:
    fake.set("LastUpdate", (NETUID,), [0, 990, 0])
    with pytest.raises(WeightsRefused) as info:
        chain.set_weights(VAL, [0, 2], [1, 2])
    assert info.value.code == "SettingWeightsTooFast"
    with pytest.raises(WeightsRefused) as info:
        chain.set_weights(MINER, [0, 2], [1, 2])
    assert info.value.code == "HotKeyNotRegisteredInSubNet"
    fake.set("LastUpdate", (NETUID,), [0, 0, 0])
    fake.set("MinAllowedWeights", (NETUID,), 3)
    with pytest.raises(WeightsRefused) as info:
        chain.set_weights(VAL, [0, 2], [1, 2])
    assert info.value.code == "WeightVecLengthIsLow"
    with pytest.raises(WeightsRefused) as info:
        chain.set_weights(VAL, [0, 2], [0, 0])
    assert info.value.code == "InvalidInput"
    assert fake.submitted == []


def test_a_bittensor_wallet_signs(chain: SubtensorChain, fake: FakeSubstrate, tmp_path: Path) -> None:
    from bittensor import Wallet

    w = Wallet(name="val", hotkey="hk", path=str(tmp_path / "wallets"))
    w.create_new_hotkey(use_password=False, suppress=True, overwrite=True)
    fake.set("Uids", (NETUID, w.hotkey.ss58_address), 1)
    chain.set_weights(w, [0], [65535])
    assert fake.submitted[-1][1] == w.hotkey.ss58_address


def test_metagraph_with_no_permits_or_zero_stake(fake: FakeSubstrate, chain: SubtensorChain) -> None:
    graph = fake.runtime[("SubnetInfoRuntimeApi", "get_metagraph", (NETUID,))]
    graph["validator_permit"] = [False, False, False]
    assert chain.metagraph().validators() == ()
    graph["validator_permit"], graph["total_stake"] = [True, True, False], [0, 0, 0]
    mg = chain.metagraph()
    assert mg.validators() == () and mg.total_stake == 0 and len(mg.validators(min_stake=0)) == 2


async def test_blocking_chain_calls_from_trio(fake: FakeSubstrate, chain: SubtensorChain) -> None:
    """The node is trio; the SDK is asyncio on its own thread. trio.to_thread bridges them."""
    import trio

    mg = await trio.to_thread.run_sync(chain.metagraph)
    receipt = await trio.to_thread.run_sync(lambda: chain.set_weights(VAL, [0, 2], [65535, 1]))
    assert mg.n == 3 and receipt.mode == "plain" and len(fake.submitted) == 1


def test_a_chain_side_refusal_keeps_the_pallet_error_name(chain: SubtensorChain, fake: FakeSubstrate) -> None:
    fake.fail_with = "IncorrectWeightVersionKey"  # not preflighted by the SDK: only the chain knows
    with pytest.raises(WeightsRefused) as info:
        chain.set_weights(VAL, [0, 2], [65535, 1], version_key=1)
    assert info.value.code == "IncorrectWeightVersionKey"


def test_endpoints_are_published_and_read_as_commitments(chain: SubtensorChain, fake: FakeSubstrate) -> None:
    """Issue 13: a validator publishes its multiaddr as a `Commitments.set_commitment` signed by
    its hotkey, and reads every validator's from the pallet's storage map, through the SDK."""
    from validator_node.chain.base import EndpointRefused
    from validator_node.chain.endpoints import format_endpoint, parse_endpoint

    addr = "/ip4/203.0.113.7/tcp/30333/p2p/12D3KooWFQ2RiihDt62QLEngHRr4cQkz6AvrpvzRztHC8KqbXcYR"
    text = format_endpoint(addr)
    assert chain.publish_endpoint(VAL, text) == 1000
    ((call, signer),) = fake.submitted
    assert signer == VAL.ss58 and (call.module, call.function) == ("Commitments", "set_commitment")
    field = {f"Raw{len(text)}": "0x" + text.encode().hex()}
    assert call.params == {"netuid": NETUID, "info": {"fields": [field]}}

    fake.maps[("Commitments", "CommitmentOf", (NETUID,))] = [
        (VAL.ss58, {"block": 990, "deposit": 0, "info": {"fields": [field]}}),
        (MINER.ss58, {"block": 991, "deposit": 0, "info": {"fields": [{"Raw5": "0x" + b"hello".hex()}]}}),
    ]
    found = chain.endpoints()
    assert found[VAL.ss58] == text and parse_endpoint(found[VAL.ss58]) == addr
    assert parse_endpoint(found[MINER.ss58]) is None  # another use of commitments: not an address

    fake.fail_with = "SpaceLimitExceeded"
    with pytest.raises(EndpointRefused) as info:
        chain.publish_endpoint(VAL, text)
    assert info.value.code == "SpaceLimitExceeded"


def test_reads_at_a_block_are_pinned_to_its_hash(chain: SubtensorChain, fake: FakeSubstrate) -> None:
    """Issue 13 §1: an epoch's snapshot is read at the block its first decided block pins: the
    metagraph, hyperparameters and owner reads all go to that block's hash."""
    from validator_node.chain_view import epoch_info_from_chain

    fake.read_at.clear()
    epoch_info_from_chain(chain, 0, 990)
    pinned = "0x" + f"{990:064x}"
    assert fake.read_at and all(h == pinned for h in fake.read_at), fake.read_at
    fake.read_at.clear()
    chain.metagraph(990)
    assert fake.read_at and all(h == pinned for h in fake.read_at)
