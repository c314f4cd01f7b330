"""The genesis record (validator_node.genesis), in process: a node whose store starts at height 0
rebuilds the network's state after the owner changed the chain; a served record is accepted only
by its pinned hash or by a certified block today's chain vouches for; headers name the genesis.

The multi-process cases (a late joiner over libp2p, a wrong pin, restarts in a devnet) are in
test_genesis_devnet.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.certified_chain import World, make_world
from validator_node.node import NodeConfig, ValidatorNode

NETUID = 29
EPOCH = 4


def _node(world: World, data_dir: Path, **cfg: object) -> ValidatorNode:
    config = NodeConfig(netuid=NETUID, data_dir=data_dir, epoch_blocks=EPOCH, **cfg)  # type: ignore[arg-type]
    return ValidatorNode(config, world.validators[1], world.chain)


def _close(node: ValidatorNode) -> None:
    node.evaluator.close()
    node.payloads.close()
    node.store.close()


def _rotate_owner(world: World) -> None:
    """The owner hands the subnet to a new hotkey (the local chain's own record of it)."""
    from wire.keys import Hotkey

    new_owner = Hotkey.from_name("genesis-test-new-owner")
    with world.chain._tx():
        world.chain._set_meta("owner", new_owner.ss58)
    world.chain.register(new_owner.ss58)


def test_a_store_from_height_0_restarts_after_the_chain_changed(tmp_path: Path) -> None:
    """Item 3 (a): the owner raises the mechanism count, then rotates the owner hotkey. A node
    whose store starts at height 0 replays every block from 1 at each restart; with the registry's
    genesis re-read from the chain, block 1's state root no longer matched (state_diverged)."""
    world = make_world(tmp_path / "world", netuid=NETUID, epoch_blocks=EPOCH, tag="genesis")
    node = _node(world, tmp_path / "node")  # its store begins with the network's genesis
    _close(node)
    world.decide_until(6)
    node = _node(world, tmp_path / "node")
    for h in range(1, 7):
        node.store.put_decision(h, world.decisions[h].block, world.decisions[h].certificate)
    _close(node)

    world.chain.set_hyperparameters(mechanism_count=2)
    node = _node(world, tmp_path / "node")  # restart 1: replays 1..6 from height 0
    assert node.app.tip_height == 6 and node.app.root == world.app.root
    _close(node)
    root_at_6 = world.app.root

    _rotate_owner(world)
    world.decide_until(9)
    node = _node(world, tmp_path / "node")  # restart 2, and it keeps applying the network's blocks
    assert node.app.tip_height == 6 and node.app.root == root_at_6
    for h in range(7, 10):
        node.store.put_decision(h, world.decisions[h].block, world.decisions[h].certificate)
        node.app.apply_decided(h, world.decisions[h].block)
    assert node.app.root == world.app.root
    _close(node)
    node = _node(world, tmp_path / "node")  # restart 3
    assert node.app.tip_height == 9 and node.app.root == world.app.root
    _close(node)


def test_the_record_is_stored_once_and_a_pin_is_checked(tmp_path: Path) -> None:
    from validator_node.genesis import GenesisError, genesis_hash

    world = make_world(tmp_path / "world", netuid=NETUID, epoch_blocks=EPOCH, tag="genesis")
    node = _node(world, tmp_path / "node")
    first = node.app.genesis
    assert genesis_hash(first) == world.app.genesis_hash
    assert node.status()["genesis"] == world.app.genesis_hash.hex()
    _close(node)
    # the chain moves on: the stored record, not the chain, is the genesis from now on
    world.chain.set_neuron(1, stake=1)
    world.chain.set_hyperparameters(mechanism_count=3)
    node = _node(world, tmp_path / "node")
    assert node.app.genesis == first and node.app.genesis_vset == world.vset
    _close(node)
    with pytest.raises(GenesisError, match="not the pinned --genesis-hash"):
        _node(world, tmp_path / "node", genesis_hash=bytes(32))
    # an empty store pinned to a hash it has no record for says how to get one
    with pytest.raises(GenesisError, match="pass --genesis FILE"):
        _node(world, tmp_path / "other", genesis_hash=world.app.genesis_hash)


def test_a_served_record_is_taken_by_its_pin_or_by_a_block_todays_chain_vouches_for(
    tmp_path: Path,
) -> None:
    from consensus.validators import ValidatorSet
    from validator_node.genesis import GenesisError, GenesisProof, verify_proof
    from wire.codec import encode

    world = make_world(tmp_path / "world", netuid=NETUID, epoch_blocks=EPOCH, tag="genesis")
    world.decide_until(3)
    record, h = world.app.genesis, world.app.genesis_hash
    proof = encode(GenesisProof(record, world.decisions[3]))
    bare = encode(GenesisProof(record, None))
    assert verify_proof(proof, netuid=NETUID, pin=None, trust=world.vset) == record
    assert verify_proof(bare, netuid=NETUID, pin=h, trust=world.vset) == record
    with pytest.raises(GenesisError, match="not the pinned"):
        verify_proof(proof, netuid=NETUID, pin=bytes(32), trust=world.vset)
    with pytest.raises(GenesisError, match="decided no block"):
        verify_proof(bare, netuid=NETUID, pin=None, trust=world.vset)
    # today's chain knows other validators: the certificate proves nothing to this joiner
    strangers = ValidatorSet.of([(bytes([9]) * 32, 10)])
    with pytest.raises(GenesisError, match="not vouched"):
        verify_proof(proof, netuid=NETUID, pin=None, trust=strangers)
    # another record beside a genuine block: the block names the real genesis, not this one
    from dataclasses import replace

    forged = replace(record, mechanism_count=5)
    with pytest.raises(GenesisError, match="names another genesis"):
        verify_proof(
            encode(GenesisProof(forged, world.decisions[3])), netuid=NETUID, pin=None, trust=world.vset
        )
    with pytest.raises(GenesisError, match="netuid"):
        verify_proof(proof, netuid=NETUID + 1, pin=None, trust=world.vset)


def test_every_header_names_the_genesis_and_another_networks_block_is_refused(tmp_path: Path) -> None:
    from validator_node.block import Block, build_block
    from validator_node.pipeline.messages import EMPTY_BODY
    from wire.codec import decode, encode

    world = make_world(tmp_path / "world", netuid=NETUID, epoch_blocks=EPOCH, tag="genesis")
    world.decide_until(2)
    assert all(decode(world.decisions[h].block, Block).genesis == world.app.genesis_hash for h in (1, 2))
    app = world.app
    chain_block = world.chain.current_block()
    proposer = world.validators[0].public_key
    body = encode(EMPTY_BODY)
    other = build_block(3, app.tip_hash, proposer, chain_block, app.root, body, genesis=bytes(32))
    reason = app.validate(3, other, chain_block)
    assert reason is not None and "genesis" in reason
    assert app.validate(3, app.propose(3, world.validators[0].public_key, chain_block), chain_block) is None
