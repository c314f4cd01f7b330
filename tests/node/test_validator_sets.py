"""The consensus set follows the decided metagraph (validator_node/pipeline/validator_sets.py).

Epoch e's decided EpochInfo names the set of epoch e+1; the state carries the current set (and so
its root and checkpoints do); a checkpoint from a stranger is accepted on the set it names plus
more than a third of today's chain stake.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from consensus.certificates import build_certificate, vote_signing_bytes
from consensus.messages import PHASE_COMMIT, DecisionPacket
from consensus.validators import ValidatorSet
from registry.state import genesis
from validator_node.block import build_block
from validator_node.pipeline.messages import EMPTY_BODY, Attestation, BlockBody, EpochInfo, NeuronEntry
from validator_node.pipeline.snapshot import (
    Checkpoint,
    CheckpointInvalid,
    restore,
    snapshot,
    state_root,
    verify_checkpoint,
    verify_stranger_checkpoint,
)
from validator_node.pipeline.state import AppState, BlockRejected, apply_body, derive_weights
from validator_node.pipeline.validator_sets import consensus_set, validators_of
from wire.codec import encode
from wire.envelope import seal
from wire.keys import Hotkey

NETUID = 11
B = 4
OWNER = Hotkey.from_name("vsets-owner")
VALS = [Hotkey.from_name(f"vsets-v{i}") for i in range(5)]  # VALS[4] joins in epoch 2
P = b"p" * 32


def info(epoch: int, stakes: list[int], permits: list[bool]) -> EpochInfo:
    rows = enumerate(zip(VALS, stakes, permits, strict=True))
    neurons = (
        NeuronEntry(0, OWNER.public_key, 0, False),
        *(NeuronEntry(i + 1, k.public_key, s, p) for i, (k, s, p) in rows),
    )
    return EpochInfo(epoch, neurons, 0, 1, 65535, 1, 0)


GENESIS = ValidatorSet.of((k.public_key, s) for k, s in zip(VALS[:4], [400, 300, 200, 100], strict=True))
# epoch 0's snapshot matches genesis; epoch 1's: v3 lost its permit, v4 gained one with 600
INFO0 = info(0, [400, 300, 200, 100, 0], [True, True, True, True, False])
INFO1 = info(1, [400, 300, 200, 100, 600], [True, True, True, False, True])
SET2 = ValidatorSet.of(
    (k.public_key, s) for k, s in zip([VALS[0], VALS[1], VALS[2], VALS[4]], [400, 300, 200, 600], strict=True)
)


def run(until: int) -> tuple[AppState, list[ValidatorSet]]:
    """Apply empty blocks 1..until (epoch-opening blocks carry INFO0 / INFO1 / INFO1 again),
    each with the set `consensus_set` names for it, as a node does. Returns the state and the
    set used at every height."""
    s = AppState(NETUID, B, genesis(NETUID, OWNER.public_key))
    used = []
    for h in range(1, until + 1):
        vset = consensus_set(s, h - 1, h, GENESIS)
        assert vset is not None
        used.append(vset)
        epoch = s.epoch_of(h)
        if s.is_epoch_start(h):
            body = BlockBody(replace(INFO0 if epoch == 0 else INFO1, epoch=epoch), (), (), (), None)
        elif s.is_epoch_end(h):
            body = BlockBody(None, (), (), (), derive_weights(s, vset, epoch))
        else:
            body = EMPTY_BODY
        s = apply_body(s, body, height=h, parent=P, vset=vset)
    return s, used


def test_a_snapshot_names_permit_holders_with_stake() -> None:
    assert validators_of(INFO0) == GENESIS
    assert validators_of(INFO1) == SET2
    assert validators_of(info(0, [0, 0, 0, 0, 0], [True] * 5)) is None
    assert validators_of(None) is None


def test_each_epochs_set_comes_from_the_previous_epochs_snapshot() -> None:
    s, used = run(3 * B)
    # epoch 0 (heights 1-4): genesis; epoch 1 (5-8): from INFO0 (= genesis); epoch 2: from INFO1
    assert used[: 2 * B] == [GENESIS] * (2 * B)
    assert used[2 * B :] == [SET2] * B
    assert s.validators == SET2
    # known a whole epoch ahead: once epoch 1's first block is decided, epoch 2's set is named
    mid, _ = run(B + 1)
    assert consensus_set(mid, B + 1, 2 * B + 1, GENESIS) == SET2
    assert consensus_set(mid, B + 1, 3 * B + 1, GENESIS) is None  # not decided yet
    assert consensus_set(mid, B + 1, 1, GENESIS) is None  # history: the node keeps it


def test_the_set_is_part_of_the_state_root_and_survives_a_snapshot() -> None:
    s, _ = run(2 * B + 1)
    assert restore(snapshot(s)) == s
    assert state_root(s) != state_root(replace(s, validators=GENESIS))


def test_attestations_count_by_the_epochs_set() -> None:
    s, _ = run(2 * B + 1)  # epoch 2 has begun: v4 is in, v3 is out
    sid = hashlib.sha256(b"a submission").digest()

    def att(v: Hotkey) -> BlockBody:
        return BlockBody(None, (), (), (seal(Attestation(2, sid, 1, None), v, NETUID),), None)

    # the signer is checked before the submission: v3 is refused as a non-validator, v4 gets as
    # far as the (missing) submission
    with pytest.raises(BlockRejected, match="attestation_not_validator"):
        apply_body(s, att(VALS[3]), height=2 * B + 2, parent=P, vset=SET2)
    with pytest.raises(BlockRejected, match="unknown_submission"):
        apply_body(s, att(VALS[4]), height=2 * B + 2, parent=P, vset=SET2)


def certified(height: int, block: bytes, signers: list[Hotkey]) -> DecisionPacket:
    bh = hashlib.sha256(block).digest()
    data = vote_signing_bytes(NETUID, PHASE_COMMIT, height, 0, bh)
    sigs = {k.public_key: k.sign(data) for k in signers}
    return DecisionPacket(block=block, certificate=build_certificate(PHASE_COMMIT, height, 0, bh, sigs))


def test_a_strangers_checkpoint_is_checked_against_the_set_it_names_and_todays_chain() -> None:
    s, _ = run(2 * B)  # the end of epoch 1: block 2B+1 is certified by epoch 2's set, SET2
    snap = encode(snapshot(s))
    block = build_block(2 * B + 1, P, VALS[4].public_key, 5, state_root(s))
    by_new_set = Checkpoint(2 * B, snap, certified(2 * B + 1, block, [VALS[0], VALS[1], VALS[4]]))
    # today's chain (= SET2) vouches, and so does an older view of the chain (GENESIS): v0 and v1
    # hold 700 of its 1000
    assert verify_stranger_checkpoint(by_new_set, SET2, NETUID, B) == s
    assert verify_stranger_checkpoint(by_new_set, GENESIS, NETUID, B) == s
    # a node that knows the set itself checks the certificate against it
    assert verify_checkpoint(by_new_set, SET2, NETUID, B) == s
    with pytest.raises(CheckpointInvalid, match="not in the validator set"):
        verify_checkpoint(by_new_set, GENESIS, NETUID, B)
    # certified by the old set, which the checkpoint itself says is no longer the one: refused
    by_old_set = Checkpoint(2 * B, snap, certified(2 * B + 1, block, VALS[:3]))
    with pytest.raises(CheckpointInvalid, match=r"not in the validator set|not a quorum"):
        verify_stranger_checkpoint(by_old_set, GENESIS, NETUID, B)
    # signers that today's chain does not know (or that hold a third or less of its stake)
    strangers = ValidatorSet.of([(VALS[3].public_key, 900), (VALS[4].public_key, 100)])
    with pytest.raises(CheckpointInvalid, match="more than a third"):
        verify_stranger_checkpoint(by_new_set, strangers, NETUID, B)


def test_the_store_keeps_the_first_genesis_set(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A restart must replay epoch 0 with the set the network started with, whatever the chain
    says by then: the first recorded genesis set wins, and it survives reopening."""
    from validator_node.store import NodeStore

    store = NodeStore(tmp_path / "node.sqlite")
    assert store.genesis_vset() is None
    store.set_genesis_vset(GENESIS)
    store.set_genesis_vset(SET2)  # a later start, with the chain's stake moved: ignored
    store.close()
    reopened = NodeStore(tmp_path / "node.sqlite")
    assert reopened.genesis_vset() == GENESIS
    reopened.close()
