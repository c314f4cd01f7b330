"""The node's block format and its validity rule (what the replica's injected check calls).

Consensus treats blocks as opaque bytes bound by hash; this module gives them meaning. A block
names its height, the parent it extends, its proposer and the chain block the proposer observed
(bounded so a proposer cannot invent a far-future chain time), and carries a body of application
items. Issue 5's epoch pipeline fills the body (submissions, attestations, registry actions,
weights); until then a block's body is empty and the chain of blocks is what validators agree on.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

from consensus.messages import MAX_BLOCK_SIZE
from consensus.validators import ValidatorSet
from wire.codec import U64, Bytes32, Len, decode, encode, wire_message
from wire.errors import WireError

GENESIS_PARENT = bytes(32)
MAX_CHAIN_DRIFT = 20  # chain blocks a proposer may be ahead of a validator's own view
#: An epoch's metagraph snapshot is the chain as it was at `snapshot_block(chain_block)` of the
#: epoch's first block: a few blocks back, so every validator has read that block (they prefetch
#: each chain block as it passes) and none reads a head that may still be reorganised. Pinning it
#: makes the snapshot one value for all: stake that moves every chain block cannot make honest
#: validators disagree on it (before, each compared the proposer's snapshot with its own latest read).
#: Never before the genesis record's chain block (`floor`): the record was read there, and an
#: epoch's view of the chain must not predate the network (a devnet changes the chain just before
#: it starts; an earlier read would undo that for epoch 0).
SNAPSHOT_LAG = 3


def snapshot_block(chain_block: int, floor: int = 0) -> int:
    return max(chain_block - SNAPSHOT_LAG, floor)


@wire_message("node.block", version=2, max_size=MAX_BLOCK_SIZE)
class Block:
    height: U64
    parent: Bytes32
    proposer: Bytes32
    chain_block: U64
    state_root: Bytes32  # root of the application state after the parent block (see snapshot.py)
    # sha256 of the network's genesis record (validator_node.genesis), in every header: any one
    # certified block proves which genesis its network started from, and a node refuses blocks
    # of a network with another genesis
    genesis: Bytes32
    body: Annotated[bytes, Len(0, MAX_BLOCK_SIZE - 256)]


def block_hash(block_bytes: bytes) -> bytes:
    return hashlib.sha256(block_bytes).digest()


def build_block(
    height: int,
    parent: bytes,
    proposer: bytes,
    chain_block: int,
    state_root: bytes,
    body: bytes = b"",
    *,
    genesis: bytes = bytes(32),
) -> bytes:
    """A block's bytes. `genesis` is the network's genesis hash (zeros only in tests that build
    blocks no node checks against a record)."""
    return encode(Block(height, parent, proposer, chain_block, state_root, genesis, body))


def check_block(
    data: bytes,
    *,
    height: int,
    parent: bytes,
    parent_chain_block: int,
    current_chain_block: int,
    vset: ValidatorSet,
    state_root: bytes,
    genesis: bytes | None = None,
) -> str | None:
    """None if valid, else the reason (one line). `genesis`: the hash every header must name."""
    try:
        b = decode(data, Block)
    except WireError as exc:
        return f"undecodable block: {exc}"
    if b.height != height:
        return f"block claims height {b.height}"
    if genesis is not None and b.genesis != genesis:
        return f"block names genesis {b.genesis.hex()[:16]}..., not this network's {genesis.hex()[:16]}..."
    if b.parent != parent:
        return "block does not extend our decided tip"
    if b.state_root != state_root:
        return "block commits to a different state root than this validator's state"
    if b.proposer not in vset:
        return "proposer is not a validator"
    if b.chain_block < parent_chain_block:
        return f"chain block {b.chain_block} goes backwards (parent saw {parent_chain_block})"
    if b.chain_block > current_chain_block + MAX_CHAIN_DRIFT:
        return f"chain block {b.chain_block} is ahead of ours ({current_chain_block})"
    return None
