"""Evidence for epoch-scored challenges: when votes count, which bundle is agreed, what it scores.

A challenge whose module exports `aggregate` (ABI section 3.1) is scored once per epoch over an
evidence bundle: swap-contract events for Allways, the round's verdicts for BitDefense. Validators
observe that evidence outside consensus (a contract, or the decided submissions of the epoch), so
they must first agree on it. Each validator signs an `EvidenceVote` naming the hash of what it
observed; the bundle bytes travel once, unsigned. A bundle is *agreed* when validators holding a
quorum of stake (3s > 2t) voted for its hash, and only an agreed bundle's bytes are admitted into
a block (in the block that completes the quorum or a later one of the window): so at most one
bundle per challenge and epoch is ever admitted, and a Byzantine minority can neither forge
evidence, nor fill blocks with bytes nobody agreed on, nor block honest validators who observed
the same thing.

The epoch's heights, for an epoch of B blocks starting at `first` and ending at `last`:

    first ......... cut | cut+1 ... last-1 | last
    submissions, attestations | votes and bundles | weights

`cut` pins what the observers look at (the state after block `cut`, submissions admitted at or
before it), so every honest validator builds its bundle from the same decided inputs. Epochs
shorter than `EVIDENCE_BLOCKS + 2` blocks have no evidence window, and their epoch-scored
challenges score nothing.

Pure: no I/O, no clock. Running the module is the caller's `Aggregator`, whose output is turned
into scores here, so the conversion every validator must agree on lives with the rules.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Protocol

from consensus.validators import ValidatorSet
from registry.manifest import ChallengeManifest
from wire import cbor
from wire.errors import WireError

EVIDENCE_BLOCKS = 3  # heights cut+1 .. last-1 carry votes and bundles
MAX_POOLED_BUNDLES = 4  # per challenge, bundles no vote names yet (they may arrive before votes)
AGGREGATE_OUTPUT_VERSION = 1
SCORE_ONE = 1_000_000_000


class Aggregator(Protocol):
    """Runs challenge modules for the rules (the node's sandbox; tests may use the references)."""

    def epoch_scored(self, manifest: ChallengeManifest, wasm: bytes) -> bool:
        """Whether the module exports `aggregate`: then attestations for its submissions carry
        observations (e.g. latency), not scores, and only its agreed bundle scores it."""
        ...

    def aggregate(self, manifest: ChallengeManifest, wasm: bytes, bundle: bytes) -> bytes | None:
        """The module's raw `aggregate` output, or None if it failed. Deterministic (the fuel
        budget makes it so); the wall clock is a local safety net only, and a node whose clock
        fires where others' did not fails to prepare that block (see docs/seed-challenges.md)."""
        ...


EPOCH_SEED_DOMAIN = b"bt-platform/epoch-seed/1"


def epoch_seed(parent: bytes) -> bytes:
    """An epoch's seed, from the hash of the block before its first block (`parent`, the first
    block's parent link): decided, so every validator derives the same one, and unknown to anyone
    before that block is decided. Evidence sources may draw an epoch's rounds from it (BitDefense on
    a devnet does), so miners cannot precompute them. The leader of that block can grind its hash
    a little by choosing what it carries; a source must not need more than unpredictability."""
    return hashlib.sha256(EPOCH_SEED_DOMAIN + parent).digest()


def evidence_cut(height: int, epoch_blocks: int) -> int | None:
    """The last height whose decided state the epoch's evidence is built from (None: no window)."""
    epoch = (height - 1) // epoch_blocks
    first, last = epoch * epoch_blocks + 1, (epoch + 1) * epoch_blocks
    cut = last - 1 - EVIDENCE_BLOCKS
    return cut if cut >= first else None


def in_evidence_window(height: int, epoch_blocks: int) -> bool:
    cut = evidence_cut(height, epoch_blocks)
    return cut is not None and cut < height < (((height - 1) // epoch_blocks) + 1) * epoch_blocks


def bundle_hash(bundle: bytes) -> bytes:
    return hashlib.sha256(bundle).digest()


def agreed_hash(votes: Mapping[bytes, bytes], vset: ValidatorSet) -> bytes | None:
    """The bundle hash voted by a quorum of stake, if any (votes: validator -> hash)."""
    stake: dict[bytes, int] = {}
    for validator in sorted(votes):
        if validator in vset:
            h = votes[validator]
            stake[h] = stake.get(h, 0) + vset.stake_of(validator)
    for h in sorted(stake):
        if vset.is_quorum(stake[h]):
            return h
    return None


class AggregateOutputInvalid(ValueError):
    """The module's output does not follow the ABI's output convention (one line, for the log)."""


def scores_from_output(output: bytes, n_uids: int) -> dict[int, int]:
    """Per-UID scores (1e9 = the whole challenge) from an `aggregate` output.

    ABI 3.1: the output is a CBOR array, `[0]` the format version (1), `[1]` the per-UID weights
    (non-negative integers, index = UID, any scale). They are normalised here with floor division,
    so that the scale a module picks never changes the result beyond rounding down."""
    try:
        doc = cbor.loads(output, 16 * 1024 * 1024, plain_check=False)
    except WireError as exc:
        raise AggregateOutputInvalid(f"not canonical CBOR: {exc}") from None
    if not isinstance(doc, list) or len(doc) < 2 or doc[0] != AGGREGATE_OUTPUT_VERSION:
        raise AggregateOutputInvalid(f"expected [{AGGREGATE_OUTPUT_VERSION}, weights, ...]")
    weights = doc[1]
    if not isinstance(weights, list) or any(type(w) is not int or w < 0 for w in weights):
        raise AggregateOutputInvalid("element [1] is not a list of non-negative integers")
    if len(weights) > n_uids:
        raise AggregateOutputInvalid(f"{len(weights)} weights for {n_uids} UIDs")
    total = sum(weights)
    if total == 0:
        return {}
    return {uid: w * SCORE_ONE // total for uid, w in enumerate(weights) if w * SCORE_ONE // total > 0}
