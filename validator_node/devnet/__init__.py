"""A local devnet: keys, genesis and the embedded chain in one folder, N validator processes.

Each validator is a separate OS process (`validator-node run`) talking real libp2p over loopback;
they share only the local chain's SQLite file, exactly as separate machines would share a real
chain. The devnet watches their status files, prints progress, stops them, and then checks from
their own stores that every validator decided the identical chain of blocks.

    cluster     folders, wallets, genesis, validator commands and processes, status files
    challenges  the challenges the devnet's owner registers, and its signed registry actions
    miners      the simulated miners
    runner      `validator-node devnet`: the whole run, and its summary
"""

from __future__ import annotations

from validator_node.devnet.challenges import (
    EXAMPLE_CHALLENGES,
    SEED_CHALLENGES,
    ExampleChallenge,
    example_challenges,
    publish_registry,
    registry_items,
)
from validator_node.devnet.cluster import (
    NETUID,
    DevnetValidator,
    Processes,
    create,
    decided_chain,
    node_command,
    read_status,
    stop_all,
    submitted_weights,
    wait_for_text,
    wait_until,
)
from validator_node.devnet.miners import Miners
from validator_node.devnet.runner import run, summarise

__all__ = [
    "EXAMPLE_CHALLENGES",
    "NETUID",
    "SEED_CHALLENGES",
    "DevnetValidator",
    "ExampleChallenge",
    "Miners",
    "Processes",
    "create",
    "decided_chain",
    "example_challenges",
    "node_command",
    "publish_registry",
    "read_status",
    "registry_items",
    "run",
    "stop_all",
    "submitted_weights",
    "summarise",
    "wait_for_text",
    "wait_until",
]
