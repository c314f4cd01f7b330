"""What a node reads of the chain, as the rules use it: a metagraph's validator set, and the
chain's view of the subnet (neurons, stake, weight limits, owner) as an `EpochInfo`.

Shared by the genesis record (read once, when a network starts), the application (the view it
proposes for an epoch) and the chain duty (admission, trust root), so none of them imports another
for it. Integers only: stake in rao.
"""

from __future__ import annotations

from consensus.validators import ValidatorSet
from validator_node.chain.base import Chain, Metagraph
from validator_node.pipeline.messages import EpochInfo, NeuronEntry
from wire.keys import public_key_of


def validator_set_of(mg: Metagraph) -> ValidatorSet | None:
    """The metagraph's validators: permit and positive stake, stake in rao (integers)."""
    members = [(public_key_of(n.hotkey), n.stake) for n in mg.validators(min_stake=1)]
    return ValidatorSet.of(members) if members else None


def epoch_info_from_chain(chain: Chain, epoch: int = 0, block: int | None = None) -> EpochInfo:
    """The chain's view now, or at `block` (every read pinned to it)."""
    mg = chain.metagraph(block)
    hp = chain.hyperparameters(block)
    owner = chain.subnet_owner(block)
    owner_uid = mg.uid_of(owner)
    neurons = tuple(
        NeuronEntry(
            uid=n.uid, hotkey=public_key_of(n.hotkey), stake=n.stake, validator_permit=n.validator_permit
        )
        for n in mg.neurons
    )
    return EpochInfo(
        epoch=epoch,
        neurons=neurons,
        owner_uid=0 if owner_uid is None else owner_uid,
        min_allowed_weights=hp.min_allowed_weights,
        max_weight_limit=hp.max_weight_limit,
        mechanism_count=hp.mechanism_count,
        version_key=hp.weights_version_key,
        owner_hotkey=public_key_of(owner) if owner else None,
    )
