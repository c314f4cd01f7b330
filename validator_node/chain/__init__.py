"""Chain access: the `Chain` protocol, the embedded local chain (`local`) and bittensor 11 (`subtensor`).

`validator_node.chain.subtensor` is imported explicitly by whoever needs it: it loads the SDK (~0.6 s).
"""

from validator_node.chain.base import Chain, ChainError, Hyperparameters, Metagraph, Neuron, WeightsReceipt
from validator_node.chain.rules import WeightsRefused

__all__ = [
    "Chain",
    "ChainError",
    "Hyperparameters",
    "Metagraph",
    "Neuron",
    "WeightsReceipt",
    "WeightsRefused",
]
