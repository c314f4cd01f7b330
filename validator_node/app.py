"""The node's application: decided state, pending pools, block validation and proposals.

The pure rules live in `pipeline.state`; this class holds the node-local parts around them: the
pools of items waiting for a block (gossiped by peers, sent by miners and the owner), the chain
snapshot this node would propose for a new epoch, and a memo of module validations (compiling a
module to validate it costs milliseconds, and a block is validated before and after it decides).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import replace

from consensus.validators import ValidatorSet
from registry.state import ModuleCheckFailed, runtime_validator
from registry.state import genesis as registry_genesis
from validator_node.block import Block, build_block, check_block
from validator_node.chain.base import Chain
from validator_node.genesis import GenesisRecord, genesis_hash
from validator_node.pipeline.evidence import MAX_POOLED_BUNDLES, Aggregator, bundle_hash
from validator_node.pipeline.messages import (
    EMPTY_BODY,
    Attestation,
    BlockBody,
    EpochInfo,
    EvidenceBundle,
    EvidenceVote,
    NeuronEntry,
    RegistryItem,
    Submission,
)
from validator_node.pipeline.proposal import build_body
from validator_node.pipeline.snapshot import state_root
from validator_node.pipeline.state import (
    MAX_SUBMISSIONS_PER_MINER,
    Admitted,
    AppState,
    BlockRejected,
    apply_body,
    attestation_key,
    epoch_scores,
    submission_id,
    vote_key,
)
from validator_node.pipeline.validator_sets import consensus_set
from wire.codec import decode, encode
from wire.envelope import SignedEnvelope, open_envelope
from wire.errors import WireError
from wire.keys import public_key_of

log = logging.getLogger("validator_node.app")


def epoch_info_from_chain(chain: Chain, epoch: int = 0) -> EpochInfo:
    mg = chain.metagraph()
    hp = chain.hyperparameters()
    owner = chain.subnet_owner()
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
    )


class Application:
    def __init__(self, genesis: GenesisRecord) -> None:
        """Start at height 0 from the network's genesis record (validator_node.genesis), never
        from the live chain: a restart or a late joiner must rebuild the very state block 1
        commits to, whatever the owner changed on chain since."""
        self.netuid = genesis.netuid
        self.genesis = genesis
        self.genesis_hash = genesis_hash(genesis)  # every header names it (block.Block.genesis)
        # the network's first consensus set; later ones come from decided blocks (validator_sets)
        self.genesis_vset = genesis.validator_set()
        self._vset_history: dict[int, ValidatorSet] = {}  # epoch -> set, for older certificates
        # the genesis set, owner and mechanism count are in the state from height 0, so block 1's
        # state root commits to them as well
        self.state = AppState(
            genesis.netuid,
            genesis.epoch_blocks,
            registry_genesis(genesis.netuid, genesis.owner, genesis.mechanism_count),
            validators=self.genesis_vset,
        )
        # the chain view this node proposes (and accepts) for an epoch's snapshot; the node
        # refreshes it from the live chain (chain_duty), the record only seeds it
        self.chain_view = genesis.chain_view
        self.root = state_root(self.state)
        self.tip_height = 0
        self.tip_hash = bytes(32)
        self.tip_chain_block = 0
        self.submission_pool: dict[bytes, SignedEnvelope] = {}
        self.attestation_pool: dict[tuple[bytes, bytes], SignedEnvelope] = {}
        self.registry_pool: dict[bytes, RegistryItem] = {}
        self.evidence_vote_pool: dict[tuple[str, bytes], SignedEnvelope] = {}
        self.evidence_pool: dict[tuple[str, bytes], EvidenceBundle] = {}
        # runs challenge modules for epoch-scored challenges; the node sets it (None: none are)
        self.aggregator: Aggregator | None = None
        # local observations for latency attestations (monotonic seconds; never decided as such)
        self.first_seen: dict[bytes, float] = {}
        self.epoch_started_at: dict[int, float] = {}
        self._module_ok: dict[tuple[bytes, bytes], object] = {}
        self.last_epoch_scores: tuple[int, dict[str, dict[int, int]]] | None = None

    # --- module validation memo -------------------------------------------------------------

    def validate_module(self, wasm: bytes, policy: object) -> object:
        key = (hashlib.sha256(wasm).digest(), encode(policy))
        found = self._module_ok.get(key)
        if isinstance(found, ModuleCheckFailed):
            raise found
        if found is None:
            try:
                found = runtime_validator(wasm, policy)  # type: ignore[arg-type]
            except ModuleCheckFailed as exc:
                found = exc
            self._module_ok[key] = found
            if isinstance(found, ModuleCheckFailed):
                raise found
        return found

    # --- blocks -------------------------------------------------------------------------------

    def _body_of(self, data: bytes) -> tuple[Block, BlockBody]:
        block = decode(data, Block)
        body = EMPTY_BODY if not block.body else decode(block.body, BlockBody)
        return block, body

    def validate(self, height: int, data: bytes, current_chain_block: int) -> str | None:
        if height != self.tip_height + 1:
            return f"parent {height - 1} not applied here (tip {self.tip_height})"
        reason = check_block(
            data,
            height=height,
            parent=self.tip_hash,
            parent_chain_block=self.tip_chain_block,
            current_chain_block=current_chain_block,
            vset=self.vset_for(height),
            state_root=self.root,
            genesis=self.genesis_hash,
        )
        if reason is not None:
            return reason
        try:
            _, body = self._body_of(data)
        except WireError as exc:
            return f"undecodable body: {exc}"
        if body.epoch_info is not None and replace(body.epoch_info, epoch=0) != replace(
            self.chain_view, epoch=0
        ):
            return "epoch metagraph snapshot differs from this validator's view of the chain"
        try:
            apply_body(
                self.state,
                body,
                height=height,
                parent=self.tip_hash,
                vset=self.vset_for(height),
                validate_module=self.validate_module,
                aggregate=self.aggregator,
            )
        except BlockRejected as exc:
            return str(exc)
        return None

    def apply_decided(self, height: int, data: bytes) -> tuple[list[Admitted], BlockBody]:
        """Apply a decided block. A decided block was validated by a quorum; if it still fails
        here, this node's state has diverged, which must stop the node rather than be skipped."""
        block, body = self._body_of(data)
        if block.state_root != self.root:
            raise BlockRejected("state_diverged", f"decided block {height} commits to another state root")
        before = self.state
        if before.is_epoch_start(height):
            self.epoch_started_at = {before.epoch_of(height): time.monotonic()}
        if before.is_epoch_end(height):  # keep the closing epoch's scores for the leaderboard
            scores = epoch_scores(before, self.vset_for(height), self.aggregator)
            self.last_epoch_scores = (before.epoch_of(height), scores)
        self.state = apply_body(
            before,
            body,
            height=height,
            parent=self.tip_hash,
            vset=self.vset_for(height),
            validate_module=self.validate_module,
            aggregate=self.aggregator,
        )
        self.tip_height, self.tip_hash = height, hashlib.sha256(data).digest()
        self.tip_chain_block = block.chain_block
        self.root = state_root(self.state)
        self._remember_vsets()
        admitted = [self.state.submissions[submission_id(e)] for e in body.submissions]
        self._prune(body)
        return admitted, body

    def _prune(self, body: BlockBody) -> None:
        for env in body.submissions:
            self.submission_pool.pop(submission_id(env), None)
        for env in body.attestations:
            self.attestation_pool.pop((attestation_key(env), env.signer), None)
        for item in body.registry:
            self.registry_pool.pop(hashlib.sha256(encode(item)).digest(), None)
        for env in body.evidence_votes:
            self.evidence_vote_pool.pop(vote_key(env), None)
        for ev in body.evidence:
            self.evidence_pool.pop((ev.challenge_id, bundle_hash(ev.bundle)), None)
        last = self.state.registry.last_nonce  # replays and superseded actions can never apply
        for k in [k for k, item in self.registry_pool.items() if _nonce_of(item) <= last]:
            del self.registry_pool[k]
        epoch = self.state.epoch_of(self.tip_height + 1)
        stale = [k for k, e in self.submission_pool.items() if _epoch_of_submission(e) != epoch]
        for k in stale:
            del self.submission_pool[k]
        seen = self.first_seen
        for k in [k for k in seen if k not in self.submission_pool and k not in self.state.submissions]:
            del seen[k]
        live = self.state.submissions
        for k in [k for k in self.attestation_pool if k[0] not in live]:
            del self.attestation_pool[k]
        for k in [k for k, ev in self.evidence_pool.items() if ev.epoch != epoch]:
            del self.evidence_pool[k]
        for k in [k for k, e in self.evidence_vote_pool.items() if _epoch_of_vote(e) != epoch]:
            del self.evidence_vote_pool[k]

    def propose(self, height: int, proposer: bytes, chain_block: int) -> bytes:
        body = build_body(
            self.state,
            height=height,
            parent=self.tip_hash,
            vset=self.vset_for(height),
            epoch_info=self.chain_view,
            registry_pool=list(self.registry_pool.values()),
            submission_pool=list(self.submission_pool.values()),
            attestation_pool=list(self.attestation_pool.values()),
            validate_module=self.validate_module,
            aggregate=self.aggregator,
            evidence_vote_pool=list(self.evidence_vote_pool.values()),
            evidence_pool=list(self.evidence_pool.values()),
        )
        chain_block = max(chain_block, self.tip_chain_block)
        return build_block(
            height, self.tip_hash, proposer, chain_block, self.root, encode(body), genesis=self.genesis_hash
        )

    def observed_latency_ms(self, sid: bytes, epoch: int) -> int | None:
        """How long after this node decided the epoch's first block the submission reached it
        (None if this node did not see the epoch start, e.g. it restarted since)."""
        started = self.epoch_started_at.get(epoch)
        if started is None:
            return None
        seen = self.first_seen.get(sid, time.monotonic())
        return max(0, int((seen - started) * 1000))

    def install(self, state: AppState, height: int, tip_hash: bytes) -> None:
        """Adopt a verified checkpoint: the state after block `height`, whose hash is `tip_hash`."""
        self.state = state
        self.tip_height, self.tip_hash, self.tip_chain_block = height, tip_hash, 0
        self.root = state_root(state)
        self._remember_vsets()

    # --- validator sets (pipeline.validator_sets) --------------------------------------------

    def known_vset(self, height: int) -> ValidatorSet | None:
        """The set that certifies `height` if this node knows it (decided), else None."""
        known = consensus_set(self.state, self.tip_height, height, self.genesis_vset)
        return known if known is not None else self._vset_history.get(self.state.epoch_of(height))

    def vset_for(self, height: int) -> ValidatorSet:
        """The set that certifies `height` (the replica asks only for the tip's epoch and the
        next, always known). For an epoch this node has no record of, the current set."""
        return self.known_vset(height) or self.vset

    @property
    def vset(self) -> ValidatorSet:
        """The set of the next height to decide (always known: the tip's epoch or the next)."""
        found = self.known_vset(self.tip_height + 1)
        assert found is not None
        return found

    def _remember_vsets(self) -> None:
        epoch = self.state.epoch_of(self.tip_height) if self.tip_height > 0 else 0
        for e in (epoch, epoch + 1):
            vs = consensus_set(
                self.state, self.tip_height, e * self.state.epoch_blocks + 1, self.genesis_vset
            )
            if vs is not None:
                self._vset_history[e] = vs
        for old in [e for e in self._vset_history if e < epoch - 64]:
            del self._vset_history[old]

    # --- pools ------------------------------------------------------------------------------

    def offer(self, item: SignedEnvelope | RegistryItem | EvidenceBundle) -> str | None:
        """Pool an item from a miner, the owner or a peer. Returns None if new and plausible,
        else why not (cheap checks only: the block rules decide)."""
        if isinstance(item, EvidenceBundle):
            return self._offer_evidence(item)
        if isinstance(item, RegistryItem):
            key = hashlib.sha256(encode(item)).digest()
            if key in self.registry_pool:
                return "duplicate"
            if item.action.signed.signer != self.state.registry.sudo:
                return "registry action not signed by the subnet owner"
            if _nonce_of(item) <= self.state.registry.last_nonce:
                return (
                    f"stale nonce: the registry has applied nonce {self.state.registry.last_nonce} (replay?)"
                )
            self.registry_pool[key] = item
            return None
        try:
            tag = decode_tag(item.body)
        except WireError as exc:
            return f"malformed: {exc}"
        if tag == "app.submission":
            return self._offer_submission(item)
        if tag == "app.attestation":
            return self._offer_attestation(item)
        if tag == "app.evidencevote":
            return self._offer_evidence_vote(item)
        return f"unexpected item {tag}"

    def _offer_submission(self, env: SignedEnvelope) -> str | None:
        try:
            sub = open_envelope(env, Submission, self.netuid)
        except WireError as exc:
            return str(exc)
        if not any(n.hotkey == env.signer for n in self.chain_view.neurons):
            return "miner hotkey is not registered on the subnet"
        epoch = self.state.epoch_of(self.tip_height + 1)
        if sub.epoch != epoch:
            return f"submission is for epoch {sub.epoch}; the current epoch is {epoch}"
        if not any(m.challenge_id == sub.challenge_id for m in self.state.registry.active(epoch)):
            return f"challenge {sub.challenge_id!r} is not active"
        sid = submission_id(env)
        if sid in self.submission_pool or sid in self.state.submissions:
            return "duplicate"
        mine = sum(1 for e in self.submission_pool.values() if e.signer == env.signer)
        if mine >= 4 * MAX_SUBMISSIONS_PER_MINER:
            return "rate limited: too many pending submissions from this miner"
        self.submission_pool[sid] = env
        self.first_seen.setdefault(sid, time.monotonic())
        return None

    def _offer_attestation(self, env: SignedEnvelope) -> str | None:
        if env.signer not in self.vset:
            return "attestation from a non-validator"
        try:
            att = open_envelope(env, Attestation, self.netuid)
        except WireError as exc:
            return str(exc)
        key = (att.submission_id, env.signer)
        if key in self.attestation_pool:
            return "duplicate"
        if att.submission_id not in self.state.submissions:
            return "attestation for an unknown submission"
        self.attestation_pool[key] = env
        return None

    def _offer_evidence_vote(self, env: SignedEnvelope) -> str | None:
        if env.signer not in self.vset:
            return "evidence vote from a non-validator"
        try:
            vote = open_envelope(env, EvidenceVote, self.netuid)
        except WireError as exc:
            return str(exc)
        if vote.epoch != self.state.epoch_of(self.tip_height + 1):
            return f"evidence vote for epoch {vote.epoch}"
        if not self._active(vote.challenge_id, vote.epoch):  # else made-up ids could fill the pool
            return f"evidence vote for challenge {vote.challenge_id!r}, which is not active"
        key = (vote.challenge_id, env.signer)
        if key in self.evidence_vote_pool or env.signer in self.state.evidence_votes.get(
            vote.challenge_id, {}
        ):
            return "duplicate"
        self.evidence_vote_pool[key] = env
        return None

    def _offer_evidence(self, item: EvidenceBundle) -> str | None:
        key = (item.challenge_id, bundle_hash(item.bundle))
        if item.epoch != self.state.epoch_of(self.tip_height + 1):
            return f"evidence for epoch {item.epoch}"
        if not self._active(item.challenge_id, item.epoch):
            return f"evidence for challenge {item.challenge_id!r}, which is not active"
        if key in self.evidence_pool or key in self.state.evidence:
            return "duplicate"
        # unsigned and up to 512 KiB: keep a few per challenge, then only ones a vote names
        voted = {h for h in self.state.evidence_votes.get(item.challenge_id, {}).values()} | {
            decode(e.body, EvidenceVote).bundle_sha256
            for (c, _), e in self.evidence_vote_pool.items()
            if c == item.challenge_id
        }
        pooled = sum(1 for c, _ in self.evidence_pool if c == item.challenge_id)
        if key[1] not in voted and pooled >= MAX_POOLED_BUNDLES:
            return "evidence no vote names, and the pool for this challenge is full"
        self.evidence_pool[key] = item
        return None

    def _active(self, challenge_id: str, epoch: int) -> bool:
        return any(m.challenge_id == challenge_id for m in self.state.registry.active(epoch))


def _epoch_of_vote(env: SignedEnvelope) -> int:
    try:
        return decode(env.body, EvidenceVote).epoch
    except WireError:
        return -1


def decode_tag(body: bytes) -> str:
    from wire import cbor

    value = cbor.loads(body, 2 * 1024 * 1024, plain_check=False)
    if not isinstance(value, list) or not value or not isinstance(value[0], str):
        raise WireError("not a tagged message")
    return value[0]


def _epoch_of_submission(env: SignedEnvelope) -> int:
    try:
        return decode(env.body, Submission).epoch
    except WireError:
        return -1


def _nonce_of(item: RegistryItem) -> int:
    from registry.manifest import MANIFEST_OPS, ChallengeCommand, ChallengeManifest

    cls = ChallengeManifest if item.action.op in MANIFEST_OPS else ChallengeCommand
    try:
        return int(decode(item.action.signed.body, cls).nonce)
    except WireError:
        return -1
