"""What waits for a block: the pools of items from miners, the owner and peers (`Intake`, a
mixin of `Application`).

Each item is checked at the door with cheap checks first and signatures after dedup, and every
pool is capped in count and bytes (`pipeline.pools`), so nothing a peer sends makes a validator
hold or walk an unbounded pool. After each decided block `_prune` drops what can no longer apply.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from typing import Any

from validator_node.metrics import Metrics
from validator_node.pipeline.evidence import MAX_POOLED_BUNDLES, bundle_hash
from validator_node.pipeline.messages import (
    Attestation,
    BlockBody,
    EpochInfo,
    EvidenceBundle,
    EvidenceVote,
    RegistryItem,
    Submission,
)
from validator_node.pipeline.pools import (
    Pool,
    Refused,
    check_registry_cheap,
    check_registry_signed,
    registry_key,
    registry_nonce,
)
from validator_node.pipeline.state import (
    MAX_SUBMISSIONS_PER_MINER,
    AppState,
    attestation_key,
    submission_id,
    vote_key,
)
from wire.codec import decode, decode_any
from wire.envelope import SignedEnvelope, verify_envelope
from wire.errors import WireError


class Intake:
    # state owned by Application (declared here for readers and type checkers)
    netuid: int
    state: AppState
    tip_height: int
    chain_view: EpochInfo
    metrics: Metrics
    vset: Any
    submission_pool: Pool  # type: ignore[type-arg]
    attestation_pool: Pool  # type: ignore[type-arg]
    registry_pool: Pool  # type: ignore[type-arg]
    evidence_vote_pool: Pool  # type: ignore[type-arg]
    evidence_pool: Pool  # type: ignore[type-arg]
    first_seen: dict[bytes, float]
    _forged: dict[bytes, None]
    # (epoch, challenge) of each pooled submission, read when it was offered: the pool is walked
    # after every block, and decoding thousands of pooled bodies again each time was the cost
    _submission_keys: dict[bytes, tuple[int, str]]

    def _prune(self, body: BlockBody) -> None:
        for env in body.submissions:
            self.submission_pool.pop(submission_id(env), None)
        for env in body.attestations:
            self.attestation_pool.pop((attestation_key(env), env.signer), None)
        for item in body.registry:
            self.registry_pool.pop(registry_key(item), None)
        for env in body.evidence_votes:
            self.evidence_vote_pool.pop(vote_key(env), None)
        for ev in body.evidence:
            self.evidence_pool.pop((ev.challenge_id, bundle_hash(ev.bundle)), None)
        # replays and superseded actions can never apply, nor can a former owner's
        last, sudo = self.state.registry.last_nonce, self.state.registry.sudo
        for k in [
            k
            for k, item in self.registry_pool.items()
            if registry_nonce(item) <= last or item.action.signed.signer != sudo
        ]:
            del self.registry_pool[k]
        epoch = self.state.epoch_of(self.tip_height + 1)
        counts = self._next_block_counts()  # a miner whose quota is used up waits for the next epoch
        keys = self._submission_keys
        for k in [k for k in keys if k not in self.submission_pool]:
            del keys[k]
        stale = [
            k
            for k, e in self.submission_pool.items()
            if keys.get(k, (-1, ""))[0] != epoch
            or counts.get((e.signer, keys.get(k, (-1, ""))[1]), 0) >= MAX_SUBMISSIONS_PER_MINER
        ]
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

    def _next_block_counts(self) -> Mapping[tuple[bytes, str], int]:
        """Per-miner counts as the next block will see them: none when it opens an epoch (the
        tip's counts belong to the closing one, and checking them refused, then pruned, every
        answer a miner sent for the new epoch while the tip was the old one's last block)."""
        return {} if self.state.is_epoch_end(self.tip_height) else self.state.miner_counts

    def offer(self, item: SignedEnvelope | RegistryItem | EvidenceBundle) -> str | None:
        """Pool an item from a miner, the owner or a peer. Returns None if new and plausible,
        else why not (cheap checks only: the block rules decide)."""
        if isinstance(item, EvidenceBundle):
            return self._offer_evidence(item)
        if isinstance(item, RegistryItem):
            try:
                self._offer_registry(item)
            except Refused as exc:
                self.metrics.inc("pool_refused_total", kind="registry", reason=exc.code)
                return str(exc)
            return None
        try:  # the body is parsed once, here; its signature is checked after the cheap checks
            body = decode_any(item.body, ENVELOPE_BODIES)
        except WireError as exc:
            return f"malformed: {exc}"
        if isinstance(body, Submission):
            return self._offer_submission(item, body)
        if isinstance(body, Attestation):
            return self._offer_attestation(item, body)
        return self._offer_evidence_vote(item, body)

    def _offer_registry(self, item: RegistryItem) -> None:
        """Cheap checks, dedup, then the owner's signature and the module's hash, then room."""
        body = check_registry_cheap(item, self.state.registry)
        key = registry_key(item)  # the action's hash: the module is hashed after the signature
        action = key
        if key in self.registry_pool or action in self._forged:
            raise Refused("duplicate", "duplicate")
        try:
            check_registry_signed(item, self.netuid, body)
        except Refused as exc:
            if exc.code == "bad_signature":  # the same forgery again costs no signature check
                self._forged[action] = None
                if len(self._forged) > 4096:
                    del self._forged[next(iter(self._forged))]
            raise
        full = self.registry_pool.room_for(item)
        if full is not None:
            raise full
        self.registry_pool[key] = item

    def registry_outlook(self, item: RegistryItem) -> str:
        """What a pooled registry action will do, for the owner who just published it.

        The action is applied, on a copy, to the registry as decided so far after the pooled
        actions with lower nonces (in nonce order, as leaders take them), so a `deactivate` of a
        challenge that is not active says so at once instead of a bare `ok` followed by silence.
        The module's runtime validation is skipped here (`registry sign` ran it; the block rules
        run it again): this is advice to the sender, never a rule a block depends on."""
        from registry.state import RegistryError
        from registry.state import apply as apply_action

        def no_validation(_wasm: bytes, _policy: object) -> None:
            return None

        mine = registry_nonce(item)
        earlier = sorted(
            (i for i in self.registry_pool.values() if 0 <= registry_nonce(i) < mine),
            key=registry_nonce,
        )
        modules = {
            hashlib.sha256(i.module).digest(): i.module for i in (*earlier, item) if i.module is not None
        }
        height = self.tip_height + 1
        state = self.state.registry
        for other in earlier:
            try:
                state = apply_action(state, other.action, height, modules, no_validation)
            except RegistryError:
                continue  # it will be dropped as well; the owner hears about it from its own reply
        after = f" after the {len(earlier)} pooled action(s) with lower nonces" if earlier else ""
        try:
            apply_action(state, item.action, height, modules, no_validation)
        except RegistryError as exc:
            return (
                f"pooled, but on the registry as decided at height {self.tip_height}{after} it would be "
                f"dropped: {exc.code}: {exc.message}"
            )
        return (
            f"pooled; it applies on the registry as decided at height {self.tip_height}{after} "
            "once a block carries it"
        )

    def _offer_submission(self, env: SignedEnvelope, sub: Submission) -> str | None:
        sid = submission_id(env)
        if sid in self.submission_pool or sid in self.state.submissions:
            return "duplicate"
        if env.netuid != self.netuid:
            return f"signed for netuid {env.netuid}, expected {self.netuid}"
        if not any(n.hotkey == env.signer for n in self.chain_view.neurons):
            return "miner hotkey is not registered on the subnet"
        epoch = self.state.epoch_of(self.tip_height + 1)
        if sub.epoch != epoch:
            return f"submission is for epoch {sub.epoch}; the current epoch is {epoch}"
        if not any(m.challenge_id == sub.challenge_id for m in self.state.registry.active(epoch)):
            return f"challenge {sub.challenge_id!r} is not active"
        if self._next_block_counts().get((env.signer, sub.challenge_id), 0) >= MAX_SUBMISSIONS_PER_MINER:
            return "rate limited: this miner's submissions for the epoch are all admitted"
        mine = sum(1 for e in self.submission_pool.values() if e.signer == env.signer)
        if mine >= 4 * MAX_SUBMISSIONS_PER_MINER:
            return "rate limited: too many pending submissions from this miner"
        full = self.submission_pool.room_for(env)
        if full is not None:
            self.metrics.inc("pool_refused_total", kind="submission", reason=full.code)
            return str(full)
        try:
            verify_envelope(env, Submission, self.netuid)
        except WireError as exc:
            return str(exc)
        self._submission_keys[sid] = (sub.epoch, sub.challenge_id)
        self.submission_pool[sid] = env
        self.first_seen.setdefault(sid, time.monotonic())
        return None

    def _offer_attestation(self, env: SignedEnvelope, att: Attestation) -> str | None:
        if env.signer not in self.vset:
            return "attestation from a non-validator"
        key = (att.submission_id, env.signer)
        if key in self.attestation_pool:
            return "duplicate"
        if att.submission_id not in self.state.submissions:
            return "attestation for an unknown submission"
        full = self.attestation_pool.room_for(env)
        if full is not None:
            self.metrics.inc("pool_refused_total", kind="attestation", reason=full.code)
            return str(full)
        try:
            verify_envelope(env, Attestation, self.netuid)
        except WireError as exc:
            return str(exc)
        self.attestation_pool[key] = env
        return None

    def _offer_evidence_vote(self, env: SignedEnvelope, vote: EvidenceVote) -> str | None:
        if env.signer not in self.vset:
            return "evidence vote from a non-validator"
        if vote.epoch != self.state.epoch_of(self.tip_height + 1):
            return f"evidence vote for epoch {vote.epoch}"
        if not self._active(vote.challenge_id, vote.epoch):  # else made-up ids could fill the pool
            return f"evidence vote for challenge {vote.challenge_id!r}, which is not active"
        key = (vote.challenge_id, env.signer)
        if key in self.evidence_vote_pool or env.signer in self.state.evidence_votes.get(
            vote.challenge_id, {}
        ):
            return "duplicate"
        full = self.evidence_vote_pool.room_for(env)
        if full is not None:
            self.metrics.inc("pool_refused_total", kind="evidence_vote", reason=full.code)
            return str(full)
        try:
            verify_envelope(env, EvidenceVote, self.netuid)
        except WireError as exc:
            return str(exc)
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
        full = self.evidence_pool.room_for(item)
        if full is not None:
            self.metrics.inc("pool_refused_total", kind="evidence", reason=full.code)
            return str(full)
        self.evidence_pool[key] = item
        return None

    def _active(self, challenge_id: str, epoch: int) -> bool:
        return any(m.challenge_id == challenge_id for m in self.state.registry.active(epoch))


def _epoch_of_vote(env: SignedEnvelope) -> int:
    try:
        return decode(env.body, EvidenceVote).epoch
    except WireError:
        return -1


# what a signed envelope offered to the pools may carry (one parse of the body dispatches on its tag)
ENVELOPE_BODIES: tuple[type, ...] = (Submission, Attestation, EvidenceVote)


def new_pools() -> tuple[Pool, Pool, Pool, Pool, Pool]:  # type: ignore[type-arg]
    """The pending pools: submissions, attestations, registry items, evidence votes, bundles.

    Caps: every pool is walked after each decided block and sampled by each proposal, and its
    bytes are held in memory, so what peers can queue is bounded whatever they send."""
    env_size = lambda e: len(e.body) + 128  # noqa: E731 - signer, signature, framing
    return (
        Pool("submission", 4096, 64 * 1024 * 1024, env_size),
        Pool("attestation", 65536, 32 * 1024 * 1024, env_size),
        Pool(
            "registry", 32, 16 * 1024 * 1024, lambda i: len(i.action.signed.body) + len(i.module or b"") + 256
        ),
        Pool("evidence vote", 4096, 4 * 1024 * 1024, env_size),
        Pool("evidence", 64, 40 * 1024 * 1024, lambda b: len(b.bundle) + 128),
    )
