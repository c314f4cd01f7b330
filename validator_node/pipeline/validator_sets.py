"""Which validator set certifies which height: the consensus set follows the decided metagraph.

Stake on a subnet moves every chain block, validators gain and lose permits, and nodes start at
different times, so a set read from the chain when a node starts is not something validators
agree on. The set they agree on is the one in decided blocks: the first block of every epoch
carries the metagraph snapshot (`EpochInfo`: hotkeys, integer stake, validator permits), and

    the set of epoch e+1 = the permit holders with stake of epoch e's decided EpochInfo

(unchanged if that snapshot has none). Epoch 0 (and an epoch whose predecessor left no usable
snapshot) keeps the set before it; the very first set is the network's genesis set, which every
node reads once from the chain and keeps in its store.

The set of epoch e+1 is therefore known as soon as epoch e's first block is decided, a whole
epoch before it is used. A replica enters height h+1 while the block at h is still being applied
(the driver applies one decision at a time), so it always asks about at most one epoch past the
application's tip, which is always known here.

Pure: integers and decided inputs only.
"""

from __future__ import annotations

from consensus.validators import ValidatorSet
from validator_node.pipeline.app_state import AppState
from validator_node.pipeline.messages import EpochInfo


def validators_of(info: EpochInfo | None) -> ValidatorSet | None:
    """The consensus set an EpochInfo names: validator permit and positive stake (None if none)."""
    if info is None:
        return None
    members = [(n.hotkey, n.stake) for n in info.neurons if n.validator_permit and n.stake > 0]
    if not members or len({k for k, _ in members}) != len(members):
        return None  # no usable set (a duplicate hotkey cannot come from a metagraph)
    return ValidatorSet.of(members)


def next_epoch_set(state: AppState, genesis: ValidatorSet | None = None) -> ValidatorSet | None:
    """The set of the epoch after the one `state` is in."""
    return validators_of(state.epoch_info) or state.validators or genesis


def consensus_set(
    state: AppState, tip_height: int, height: int, genesis: ValidatorSet
) -> ValidatorSet | None:
    """The set that certifies `height`, for a node whose application has applied blocks up to
    `tip_height` (giving `state`; 0: none, whose epoch is -1): the tip's epoch, or the one after
    it. None for any other height: an earlier epoch's set is history (the node keeps it), a later
    one is not decided yet."""
    tip_epoch, epoch = state.epoch_of(tip_height), state.epoch_of(height)
    if epoch == tip_epoch:
        return state.validators or genesis
    if epoch == tip_epoch + 1:
        return next_epoch_set(state, genesis)
    return None
