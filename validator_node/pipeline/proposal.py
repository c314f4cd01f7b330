"""What an honest leader proposes (`build_body`): pooled items that the block rules of
`pipeline.state` accept now, in canonical order, within the block's byte budget.

A proposal's work is bounded whatever the pools hold: of each kind it tries at most a fixed
number of items (the oldest first, as pools keep arrival order), so a full pool costs a leader
no more than a block's worth of checks. Items not tried wait for a later block.

The rules decide what is valid; this module only chooses among valid items, so a leader that
fills blocks differently (or maliciously) can waste space but never get an invalid block decided.
Pure, like the rules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from itertools import islice
from typing import TypeVar

from consensus.validators import ValidatorSet
from validator_node.pipeline.evidence import Aggregator, bundle_hash
from validator_node.pipeline.messages import (
    MAX_EVIDENCE_VOTES,
    BlockBody,
    EpochInfo,
    EvidenceBundle,
    RegistryItem,
)
from validator_node.pipeline.pools import registry_nonce
from validator_node.pipeline.state import (
    AppState,
    BlockRejected,
    Draft,
    LocalFailure,
    ModuleValidator,
    attestation_key,
    derive_weights,
    state_for_weights,
    submission_id,
    vote_key,
)
from wire.codec import encode
from wire.envelope import SignedEnvelope

# What a proposer puts in one block, in encoded bytes: the block (header + body) must stay under
# consensus' 1 MiB cap however large the pooled items are.
BODY_BUDGET = 1024 * 1024 - 16 * 1024
# Items of one kind a proposal tries (checks) at most, as a multiple of what a block takes.
TRIES_PER_SLOT = 2
_T = TypeVar("_T")


def build_body(
    state: AppState,
    *,
    height: int,
    parent: bytes,
    vset: ValidatorSet,
    epoch_info: EpochInfo,
    registry_pool: Iterable[RegistryItem],
    submission_pool: Iterable[SignedEnvelope],
    attestation_pool: Iterable[SignedEnvelope],
    validate_module: ModuleValidator | None = None,
    aggregate: Aggregator | None = None,
    evidence_vote_pool: Iterable[SignedEnvelope] = (),
    evidence_pool: Iterable[EvidenceBundle] = (),
    max_submissions: int = 256,
    max_attestations: int = 2048,
) -> BlockBody:
    """What an honest leader proposes: every pooled item that is valid now, in canonical order,
    within the block's byte budget."""
    d = Draft(state, height, parent)
    info = None
    if state.is_epoch_start(height):
        info = replace(epoch_info, epoch=d.epoch)
        d.open_epoch(info)
    budget = _Budget(BODY_BUDGET - (0 if info is None else len(encode(info))))
    netuid = state.netuid
    # The weights block carries only the weights (registry items wait one block), so the weights'
    # size, unknown until they are derived, can never push the body over its cap.
    registry = budget.fill(  # in nonce order: an action never goes stale behind a later one
        () if state.is_epoch_end(height) else sorted(_first(registry_pool, 16), key=registry_nonce),
        lambda item: d.registry_item(item, validate_module),
        limit=16,
        max_tried_bytes=2 * BODY_BUDGET,
    )
    if state.is_epoch_end(height):
        weights = derive_weights(state_for_weights(state, d), vset, d.epoch, aggregate)
        return BlockBody(info, tuple(registry), (), (), weights)
    votes = budget.fill(  # sorted, then checked, then capped: junk cannot crowd out valid votes
        sorted(set(_first(evidence_vote_pool, MAX_EVIDENCE_VOTES)), key=vote_key),
        lambda env: d.evidence_vote(env, netuid, vset),
        limit=MAX_EVIDENCE_VOTES,
        stop_when_full=True,
    )
    evidence = budget.fill(
        sorted(set(_first(evidence_pool, 16)), key=lambda e: (e.challenge_id, bundle_hash(e.bundle))),
        lambda item: d.evidence_bundle(item, vset),
    )
    subs = budget.fill(
        sorted(set(_first(submission_pool, max_submissions)), key=submission_id),
        lambda env: d.submission(env, netuid),
        limit=max_submissions,
    )
    atts = budget.fill(
        sorted(set(_first(attestation_pool, max_attestations)), key=lambda e: (attestation_key(e), e.signer)),
        lambda env: d.attestation(env, netuid, vset),
        limit=max_attestations,
        stop_when_full=True,
    )
    return BlockBody(info, tuple(registry), tuple(subs), tuple(atts), None, tuple(votes), tuple(evidence))


def _first(pool: Iterable[_T], slots: int) -> list[_T]:
    """The items of a pool a proposal tries: the first `TRIES_PER_SLOT` per slot of the block."""
    return list(islice(pool, TRIES_PER_SLOT * slots))


class _Budget:
    """Bytes left for a proposal's items (an item's encoding plus CBOR framing)."""

    def __init__(self, left: int) -> None:
        self.left = left

    def fill(
        self,
        items: Iterable[_T],
        apply: Callable[[_T], object],
        *,
        limit: int | None = None,
        stop_when_full: bool = False,
        max_tried_bytes: int | None = None,
    ) -> list[_T]:
        """The items, in order, that `apply` (a draft rule) accepts and that fit, up to `limit`;
        an item that does not fit is skipped, or ends the list with `stop_when_full` (for small
        items of one kind: none after it would fit either). With `max_tried_bytes`, no item is
        tried once that many bytes were (for ~1 MiB items, whose checks hash every byte)."""
        out: list[_T] = []
        tried = 0
        for item in items:
            if limit is not None and len(out) >= limit:
                break
            if max_tried_bytes is not None and tried >= max_tried_bytes:
                break
            size = len(encode(item)) + 16
            if size > self.left:
                if stop_when_full:
                    break
                continue
            tried += size
            try:
                apply(item)
            except (BlockRejected, LocalFailure):  # invalid, or not checkable here now: left out
                continue
            out.append(item)
            self.left -= size
        return out
