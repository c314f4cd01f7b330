"""The application state machine: decided blocks in, new state out (pure: no I/O, no clock).

An epoch is `epoch_blocks` consecutive heights. Its first block carries the metagraph snapshot
(`EpochInfo`) the epoch is scored against; its middle blocks admit miner submissions and the
validators' signed evaluation attestations; its last block carries only the epoch's weight matrix,
which every validator re-derives from the state before preparing the block. So the weights each
validator submits to the chain are decided, not computed locally. Validators are not paid as
miners: a permit holder's submissions are admitted and scored like any miner's, and the weights
drop its scores (`unpaid_uids`; why there and not at admission: `validator_node.weights`).

Every rule here is applied identically by the proposer (to choose what goes in a block), by every
replica (to validate a proposal before preparing it) and by every node applying a decided block.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

from consensus.validators import ValidatorSet
from registry.manifest import MANIFEST_OPS
from registry.state import RegistryError, with_chain_params
from registry.state import apply as registry_apply
from validator_node.pipeline.app_state import Admitted, AppState
from validator_node.pipeline.evidence import (
    AggregateOutputInvalid,
    Aggregator,
    agreed_hash,
    bundle_hash,
    in_evidence_window,
    scores_from_output,
)
from validator_node.pipeline.messages import (
    Attestation,
    BlockBody,
    EpochInfo,
    EpochWeights,
    EvidenceBundle,
    EvidenceVote,
    RegistryItem,
    Submission,
    WeightRowMsg,
)
from validator_node.pipeline.validator_sets import next_epoch_set
from validator_node.weights import WeightLimits, WeightsError, from_manifests, weight_rows
from wire.codec import encode
from wire.envelope import SignedEnvelope, open_envelope
from wire.errors import WireError

MAX_SUBMISSIONS_PER_MINER = 4  # per challenge per epoch
ModuleValidator = Callable[[bytes, object], object]


class BlockRejected(ValueError):
    """A block (or one item of it) breaks a rule; `reason` is a short label for metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class LocalFailure(Exception):
    """This node could not compute something for a reason of its own (a wall clock that fired on a
    busy host, a full disk, a host fault): not a verdict on the block. Never memoised; validating
    or proposing gives up for now (a later view retries), and a decided block is applied anyway
    (`apply_body(on_disagreement=...)`)."""


def submission_id(env: SignedEnvelope) -> bytes:
    return hashlib.sha256(encode(env)).digest()


# --- aggregation and weights -----------------------------------------------------------------


def stake_weighted_median(scores: Mapping[bytes, int], vset: ValidatorSet) -> int | None:
    """The lower stake-weighted median of the attested scores, once attesting stake is a quorum.

    With Byzantine stake under 1/3 and a quorum attesting, more than half of the attesting stake
    is honest, so the median lies between honest validators' scores (which agree anyway, since
    evaluation is deterministic).
    """
    members = {v: s for v, s in scores.items() if v in vset}
    attesting = vset.stake_of_all(members)
    if not members or not vset.is_quorum(attesting):
        return None
    acc = 0
    for validator, score in sorted(members.items(), key=lambda kv: (kv[1], kv[0])):
        acc += vset.stake_of(validator)
        if 2 * acc >= attesting:
            return score
    return None  # pragma: no cover - the loop always returns


def epoch_scores(
    state: AppState, vset: ValidatorSet, aggregate: Aggregator | None = None
) -> dict[str, dict[int, int]]:
    """Per challenge, per miner UID, the epoch's score (1e9 = 1.0).

    A challenge with an agreed evidence bundle is scored by its module's `aggregate` over that
    bundle (nothing if the module fails). Any other challenge scores each miner's best aggregated
    attestation (errors score nothing)."""
    best: dict[str, dict[int, int]] = {}
    epoch_scored = _epoch_scored_challenges(state, aggregate)
    for sid in sorted(state.submissions):
        sub = state.submissions[sid]
        if sub.challenge_id in epoch_scored:
            continue
        agg = stake_weighted_median(state.attestations.get(sid, {}), vset)
        if agg is None or agg < 0:
            continue
        per = best.setdefault(sub.challenge_id, {})
        per[sub.uid] = max(per.get(sub.uid, 0), agg)
    if aggregate is None or state.epoch_info is None:
        return best
    uids = {n.uid for n in state.epoch_info.neurons}
    for challenge_id in sorted(state.evidence_votes):
        if challenge_id not in epoch_scored:  # e.g. updated mid-epoch to a module without `aggregate`
            continue
        h = agreed_hash(state.evidence_votes[challenge_id], vset)
        item = None if h is None else state.evidence.get((challenge_id, h))
        entry = state.registry.get(challenge_id)
        if item is None or entry is None:
            continue
        wasm = state.modules.get(entry.manifest.wasm_sha256)
        output = None if wasm is None else aggregate.aggregate(entry.manifest, wasm, item.bundle)
        try:
            scores = {} if output is None else scores_from_output(output, len(state.epoch_info.neurons))
        except AggregateOutputInvalid:
            scores = {}
        best[challenge_id] = {uid: s for uid, s in scores.items() if uid in uids}
    return best


def _epoch_scored_challenges(state: AppState, aggregate: Aggregator | None) -> set[str]:
    if aggregate is None:
        return set()
    out = set()
    for m in state.registry.manifests():
        wasm = state.modules.get(m.wasm_sha256)
        if wasm is not None and aggregate.epoch_scored(m, wasm):
            out.add(m.challenge_id)
    return out


def unpaid_uids(state: AppState) -> frozenset[int]:
    """The UIDs whose miner scores earn no weight this epoch: those holding a validator permit in
    the epoch's decided snapshot, unless the network's genesis lets validators be paid as miners
    (`validators_as_miners`). The owner's burn is not affected (`weights.combine`)."""
    info = state.epoch_info
    if info is None or state.validators_as_miners:
        return frozenset()
    return frozenset(n.uid for n in info.neurons if n.validator_permit)


def derive_weights(
    state: AppState, vset: ValidatorSet, epoch: int, aggregate: Aggregator | None = None
) -> EpochWeights:
    """The epoch's weights: defined for every decided input, and always chain-valid.

    The chain's parameters come from the epoch's decided snapshot and may have changed under the
    registry: a challenge on a mechanism the subnet no longer has is dropped (its share burns
    with the rest), and when no vector over the subnet's UIDs can satisfy the chain (e.g. a
    `max_weight_limit` that needs more UIDs than there are) every row is empty, which each
    validator submits as a self-weight. The reason is recorded in the block (`fallback`).
    Permit holders' scores are dropped before the shares are split (`unpaid_uids`)."""
    info = state.epoch_info
    if info is None:  # every epoch's first block carries one, so no decided state lacks it
        raise BlockRejected("no_epoch_info", f"epoch {epoch} has no metagraph snapshot")
    limits = WeightLimits(len(info.neurons), info.min_allowed_weights, info.max_weight_limit)
    mechanisms = max(1, info.mechanism_count)  # the chain has at least one; a row per mechanism
    active = state.registry.active(epoch)
    mapped = [m for m in active if m.mechanism_id < mechanisms]
    notes = []
    if len(mapped) < len(active):
        dropped = ", ".join(m.challenge_id for m in active if m.mechanism_id >= mechanisms)
        notes.append(f"dropped challenges on mechanisms the subnet does not have ({mechanisms}): {dropped}")
    try:
        rows = weight_rows(
            from_manifests(mapped, epoch_scores(state, vset, aggregate), unpaid_uids(state)),
            info.owner_uid,
            limits,
            mechanisms,
        )
        weights = EpochWeights(
            epoch,
            tuple(WeightRowMsg(r.mechid, r.uids, r.weights) for r in rows),
            _reason(notes),
        )
        if len(encode(weights)) <= MAX_WEIGHTS_BYTES:
            return weights
        notes.append(f"the weight matrix is over {MAX_WEIGHTS_BYTES} bytes")
    except WeightsError as exc:
        notes.append(str(exc))
    empty = tuple(WeightRowMsg(m, (), ()) for m in range(mechanisms))
    return EpochWeights(epoch, empty, _reason(["self_weight", *notes]))


# The weights block carries only the weights (and an epoch's snapshot when an epoch is one block
# long): so the matrix stays well inside the body's 1 MiB cap.
MAX_WEIGHTS_BYTES = 256 * 1024


def _reason(notes: list[str]) -> str | None:
    """The fallback note a weights block records (ASCII: ids and numbers; cut to the wire cap)."""
    return "; ".join(notes)[:512] if notes else None


# --- applying a block ------------------------------------------------------------------------


class Draft:
    """Mutable working copy used while a block is applied (or filled by a proposer)."""

    def __init__(self, state: AppState, height: int, parent: bytes) -> None:
        self.base = state
        self.height = height
        self.parent = parent
        self.epoch = state.epoch_of(height)
        self.registry = state.registry
        self.modules = dict(state.modules)
        self.epoch_info = state.epoch_info
        self.submissions = dict(state.submissions)
        self.attestations = {k: dict(v) for k, v in state.attestations.items()}
        self.miner_counts = dict(state.miner_counts)
        self.weights = dict(state.weights)
        self.evidence_votes = {k: dict(v) for k, v in state.evidence_votes.items()}
        self.evidence = dict(state.evidence)
        self.validators = state.validators
        if state.is_epoch_start(height):
            self.validators = next_epoch_set(state)  # the closing epoch's snapshot takes over
            self.epoch_info = None
            self.submissions, self.attestations, self.miner_counts = {}, {}, {}
            self.evidence_votes, self.evidence = {}, {}

    def open_epoch(self, info: EpochInfo) -> None:
        """Take the epoch's decided snapshot; the registry follows the chain's parameters in it
        (mechanism count, owner key), so a chain change reaches every validator's registry at
        the same height."""
        self.epoch_info = info
        self.registry = with_chain_params(
            self.registry, sudo=info.owner_hotkey, mechanism_count=info.mechanism_count
        )

    def finish(self) -> AppState:
        recent = {e: w for e, w in self.weights.items() if e > self.epoch - 16}
        return replace(
            self.base,
            registry=self.registry,
            modules=self.modules,
            epoch_info=self.epoch_info,
            submissions=self.submissions,
            attestations=self.attestations,
            miner_counts=self.miner_counts,
            weights=recent,
            evidence_votes=self.evidence_votes,
            evidence=self.evidence,
            validators=self.validators,
        )

    # each method applies one item or raises BlockRejected, leaving the draft unchanged on error

    def registry_item(self, item: RegistryItem, validate: ModuleValidator | None) -> None:
        modules = dict(self.modules)
        if item.module is not None:
            if item.action.op not in MANIFEST_OPS:
                raise BlockRejected("stray_module", f"a {item.action.op} action carries no module")
            modules[hashlib.sha256(item.module).digest()] = item.module
        try:
            self.registry = registry_apply(self.registry, item.action, self.height, modules, validate)
        except RegistryError as exc:
            raise BlockRejected(f"registry_{exc.code}", str(exc)) from None
        keep = {m.wasm_sha256 for m in self.registry.manifests()}
        self.modules = {h: b for h, b in modules.items() if h in keep}

    def submission(self, env: SignedEnvelope, netuid: int) -> Admitted:
        try:
            sub = open_envelope(env, Submission, netuid)
        except WireError as exc:
            raise BlockRejected("bad_submission", str(exc)) from None
        info = self.epoch_info
        uid = None if info is None else next((n.uid for n in info.neurons if n.hotkey == env.signer), None)
        if uid is None:
            raise BlockRejected("unregistered_miner", f"{env.signer.hex()[:16]} is not registered")
        if sub.epoch != self.epoch:
            raise BlockRejected("wrong_epoch", f"submission for epoch {sub.epoch}, block is in {self.epoch}")
        manifest = next(
            (m for m in self.registry.active(self.epoch) if m.challenge_id == sub.challenge_id), None
        )
        if manifest is None:
            raise BlockRejected("inactive_challenge", f"challenge {sub.challenge_id!r} is not active")
        if sub.payload_ref is not None and sub.payload:
            raise BlockRejected("bad_submission", "a payload by reference carries no inline bytes")
        size = len(sub.payload) if sub.payload_ref is None else sub.payload_ref.size
        if size > manifest.policy.max_submission_bytes:
            raise BlockRejected("submission_too_large", f"{size} bytes")
        sid = submission_id(env)
        if sid in self.submissions:
            raise BlockRejected("duplicate_submission", sid.hex()[:16])
        key = (env.signer, sub.challenge_id)
        if self.miner_counts.get(key, 0) >= MAX_SUBMISSIONS_PER_MINER:
            raise BlockRejected("miner_rate_limit", f"{MAX_SUBMISSIONS_PER_MINER} per challenge per epoch")
        seed = hashlib.sha256(b"bt-platform/seed/1" + self.parent + sid).digest()
        admitted = Admitted(
            sid, sub.challenge_id, env.signer, uid, self.height, sub.payload, seed, sub.payload_ref
        )
        self.submissions[sid] = admitted
        self.miner_counts[key] = self.miner_counts.get(key, 0) + 1
        return admitted

    def attestation(self, env: SignedEnvelope, netuid: int, vset: ValidatorSet) -> None:
        if env.signer not in vset:
            raise BlockRejected("attestation_not_validator", env.signer.hex()[:16])
        try:
            att = open_envelope(env, Attestation, netuid)
        except WireError as exc:
            raise BlockRejected("bad_attestation", str(exc)) from None
        if att.epoch != self.epoch:
            raise BlockRejected("wrong_epoch", f"attestation for epoch {att.epoch}")
        if att.submission_id not in self.base.submissions or att.submission_id not in self.submissions:
            raise BlockRejected("unknown_submission", att.submission_id.hex()[:16])
        per = self.attestations.setdefault(att.submission_id, {})
        if env.signer in per:
            raise BlockRejected("duplicate_attestation", att.submission_id.hex()[:16])
        per[env.signer] = att.score

    def evidence_vote(self, env: SignedEnvelope, netuid: int, vset: ValidatorSet) -> None:
        if env.signer not in vset:
            raise BlockRejected("evidence_not_validator", env.signer.hex()[:16])
        try:
            vote = open_envelope(env, EvidenceVote, netuid)
        except WireError as exc:
            raise BlockRejected("bad_evidence_vote", str(exc)) from None
        if not in_evidence_window(self.height, self.base.epoch_blocks):
            raise BlockRejected("outside_evidence_window", f"height {self.height}")
        if vote.epoch != self.epoch:
            raise BlockRejected("wrong_epoch", f"evidence vote for epoch {vote.epoch}")
        if not any(m.challenge_id == vote.challenge_id for m in self.registry.active(self.epoch)):
            raise BlockRejected("inactive_challenge", f"challenge {vote.challenge_id!r} is not active")
        per = self.evidence_votes.setdefault(vote.challenge_id, {})
        if env.signer in per:
            raise BlockRejected("duplicate_evidence_vote", f"{vote.challenge_id} {env.signer.hex()[:16]}")
        per[env.signer] = vote.bundle_sha256

    def evidence_bundle(self, item: EvidenceBundle, vset: ValidatorSet) -> None:
        """Bytes are admitted only once their hash is agreed (a quorum of stake voted for it, in
        this block or before), so each challenge admits at most one bundle per epoch and nobody
        can fill blocks with bundles nobody agreed on."""
        h = bundle_hash(item.bundle)
        if item.epoch != self.epoch:
            raise BlockRejected("wrong_epoch", f"evidence for epoch {item.epoch}")
        if agreed_hash(self.evidence_votes.get(item.challenge_id, {}), vset) != h:
            raise BlockRejected(
                "unagreed_evidence", f"{item.challenge_id} {h.hex()[:16]} has no quorum of votes"
            )
        if (item.challenge_id, h) in self.evidence:
            raise BlockRejected("duplicate_evidence", h.hex()[:16])
        self.evidence[(item.challenge_id, h)] = item


def apply_body(
    state: AppState,
    body: BlockBody,
    *,
    height: int,
    parent: bytes,
    vset: ValidatorSet,
    validate_module: ModuleValidator | None = None,
    aggregate: Aggregator | None = None,
    on_disagreement: Callable[[str, str], None] | None = None,
) -> AppState:
    """The state after a block at `height` with `body`; raises BlockRejected if it breaks a rule.

    For a decided block (`on_disagreement` given) the certificate is the authority over what only
    this node re-derives: weights it derives differently, or cannot derive for a local reason,
    are reported to `on_disagreement(reason, detail)` and the block's own are applied."""
    d = Draft(state, height, parent)
    if state.is_epoch_start(height):
        if body.epoch_info is None or body.epoch_info.epoch != d.epoch:
            raise BlockRejected("epoch_info_missing", f"height {height} opens epoch {d.epoch}")
        d.open_epoch(body.epoch_info)
    elif body.epoch_info is not None:
        raise BlockRejected("stray_epoch_info", f"height {height} does not open an epoch")
    for item in body.registry:
        d.registry_item(item, validate_module)
    if state.is_epoch_end(height):
        if body.submissions or body.attestations or body.evidence_votes or body.evidence:
            raise BlockRejected("busy_weights_block", "the epoch's last block carries only weights")
        expected = _derived_or_decided(
            state_for_weights(state, d), body, vset, d.epoch, aggregate, on_disagreement
        )
        if body.weights != expected:
            if on_disagreement is None or body.weights is None:
                raise BlockRejected(
                    "weights_mismatch", f"epoch {d.epoch} weights differ from the derived ones"
                )
            on_disagreement("weights_mismatch", f"epoch {d.epoch}: this node derived other weights")
            expected = body.weights
        d.weights[d.epoch] = expected
    elif body.weights is not None:
        raise BlockRejected("stray_weights", f"height {height} does not close an epoch")
    _check_sorted(body.submissions, submission_id, "submissions")
    for env in body.submissions:
        d.submission(env, state.netuid)
    _check_sorted(body.attestations, lambda e: (attestation_key(e), e.signer), "attestations")
    for env in body.attestations:
        d.attestation(env, state.netuid, vset)
    _check_sorted(body.evidence_votes, vote_key, "evidence votes")
    for env in body.evidence_votes:
        d.evidence_vote(env, state.netuid, vset)
    for item in body.evidence:
        d.evidence_bundle(item, vset)
    return d.finish()


def _derived_or_decided(
    state: AppState,
    body: BlockBody,
    vset: ValidatorSet,
    epoch: int,
    aggregate: Aggregator | None,
    on_disagreement: Callable[[str, str], None] | None,
) -> EpochWeights | None:
    """The weights this node derives; for a decided block, the block's own when deriving failed
    for a local reason (or for any reason at all: the certificate outranks this node)."""
    if on_disagreement is None:
        return derive_weights(state, vset, epoch, aggregate)
    try:
        return derive_weights(state, vset, epoch, aggregate)
    except Exception as exc:  # a decided block is applied whatever failed here
        on_disagreement("weights_underivable", f"epoch {epoch}: {type(exc).__name__}: {exc}")
        return body.weights


def state_for_weights(state: AppState, d: Draft) -> AppState:
    """Weights use the epoch's submissions and attestations, and the registry (with its modules)
    as of this block."""
    return replace(state, registry=d.registry, epoch_info=d.epoch_info, modules=d.modules)


def attestation_key(env: SignedEnvelope) -> bytes:
    from wire.codec import decode

    try:
        return decode(env.body, Attestation).submission_id
    except WireError:
        return b""


def vote_key(env: SignedEnvelope) -> tuple[str, bytes]:
    from wire.codec import decode

    try:
        return decode(env.body, EvidenceVote).challenge_id, env.signer
    except WireError:
        return "", env.signer


def _check_sorted(
    items: Iterable[SignedEnvelope], key: Callable[[SignedEnvelope], object], what: str
) -> None:
    keys = [key(e) for e in items]
    if keys != sorted(set(keys)):  # type: ignore[type-var]
        raise BlockRejected("unsorted_items", f"{what} must be sorted and unique")


# --- proposing -------------------------------------------------------------------------------
