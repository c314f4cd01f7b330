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
from registry.manifest import ModulePolicy
from registry.state import ModuleCheckFailed, runtime_validator
from registry.state import genesis as registry_genesis
from runtime.errors import DETERMINISTIC_KINDS
from validator_node.app_pools import Intake, new_pools
from validator_node.block import SNAPSHOT_LAG, Block, build_block, check_block, snapshot_block
from validator_node.genesis import GenesisRecord, genesis_hash
from validator_node.metrics import Metrics
from validator_node.pipeline.evidence import Aggregator, epoch_seed
from validator_node.pipeline.messages import (
    EMPTY_BODY,
    BlockBody,
    EpochInfo,
)
from validator_node.pipeline.proposal import build_body
from validator_node.pipeline.snapshot import state_root
from validator_node.pipeline.state import (
    Admitted,
    AppState,
    BlockRejected,
    LocalFailure,
    apply_body,
    epoch_scores,
    submission_id,
)
from validator_node.pipeline.validator_sets import consensus_set
from wire.codec import decode, encode
from wire.errors import WireError

log = logging.getLogger("validator_node.app")


class Application(Intake):
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
        # the genesis set, owner, mechanism count and validators_as_miners are in the state from
        # height 0, so block 1's state root commits to them as well
        self.state = AppState(
            genesis.netuid,
            genesis.epoch_blocks,
            registry_genesis(genesis.netuid, genesis.owner, genesis.mechanism_count),
            validators=self.genesis_vset,
            validators_as_miners=genesis.validators_as_miners,
        )
        # the chain view this node proposes (and accepts) for an epoch's snapshot; the node
        # refreshes it from the live chain (chain_duty), the record only seeds it
        self.chain_view = genesis.chain_view
        # the chain's view at recent chain blocks (chain_duty prefetches each as it passes): what
        # an epoch's first block must carry is the view at `snapshot_block(its chain_block)`.
        # `pin_views` is set by a node that reads the chain; an Application without a chain
        # reader (tests, `audit replay`) uses `chain_view` instead
        self.chain_views: dict[int, EpochInfo] = {}
        self.pin_views = False
        self.wanted_view: int | None = None  # a snapshot block validation asked for and lacked
        self.root = state_root(self.state)
        self.tip_height = 0
        self.tip_hash = bytes(32)
        self.tip_chain_block = 0
        pools = new_pools()  # app_pools: capped in count and bytes
        self.submission_pool, self.attestation_pool, self.registry_pool = pools[:3]
        self.evidence_vote_pool, self.evidence_pool = pools[3:]
        self.metrics = Metrics()  # the node shares its own (refusals by reason, disagreements)
        self._forged: dict[bytes, None] = {}  # actions whose signature failed (bounded, oldest out)
        self._submission_keys: dict[bytes, tuple[int, str]] = {}  # app_pools: read at the door
        # runs challenge modules for epoch-scored challenges; the node sets it (None: none are)
        self.aggregator: Aggregator | None = None
        # local observations for latency attestations (monotonic seconds; never decided as such)
        self.first_seen: dict[bytes, float] = {}
        self.epoch_started_at: dict[int, float] = {}
        # the seeds of the tip's epoch and the one before (pipeline.evidence.epoch_seed)
        self._epoch_seeds: dict[int, bytes] = {}
        self._module_ok: dict[tuple[bytes, bytes], object] = {}
        self.last_epoch_scores: tuple[int, dict[str, dict[int, int]]] | None = None

    # --- module validation memo -------------------------------------------------------------

    def validate_module(self, wasm: bytes, policy: object) -> object:
        """The runtime's registration checks, memoised by (module, policy) when the verdict is one
        every validator reproduces. The ABI probe runs under a local wall clock: a timeout there
        (or any host fault) is retried once with 4x the time, then raised as LocalFailure and
        never memoised, so a busy moment cannot become this node's verdict on a module."""
        key = (hashlib.sha256(wasm).digest(), encode(policy))
        found = self._module_ok.get(key)
        if isinstance(found, ModuleCheckFailed):
            raise found
        if found is not None:
            return found
        try:
            found = _validate_once(wasm, policy)
        except LocalFailure:
            if not isinstance(policy, ModulePolicy):
                raise
            found = _validate_once(wasm, replace(policy, wall_clock_ms=4 * policy.wall_clock_ms))
        self._module_ok[key] = found
        if len(self._module_ok) > 256:
            del self._module_ok[next(iter(self._module_ok))]
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
            block, body = self._body_of(data)
        except WireError as exc:
            return f"undecodable body: {exc}"
        if body.epoch_info is not None:
            expected, at = self.view_at(block.chain_block), self.snapshot_at(block.chain_block)
            if expected is None:
                self.wanted_view = at
                return f"local failure, not a verdict: the chain at block {at} is not read here yet"
            if replace(body.epoch_info, epoch=0) != replace(expected, epoch=0):
                return f"epoch metagraph snapshot differs from the chain at block {at}"
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
        except Exception as exc:  # local (LocalFailure, a sandbox or disk error): not a verdict
            self.metrics.inc("local_failures_total", where="validate")
            log.warning(
                "height %d: cannot check the proposal here now (%s: %s)", height, type(exc).__name__, exc
            )
            return f"local failure, not a verdict: {type(exc).__name__}: {exc}"
        return None

    def apply_decided(self, height: int, data: bytes) -> tuple[list[Admitted], BlockBody]:
        """Apply a decided block. A decided block was validated by a quorum, so the certificate
        is the authority over what only this node re-derives (weights, module verdicts): a local
        failure or a different result there is recorded, counted and logged, never fatal. A
        block that commits to another state root, or breaks a rule every node checks the same
        way, means this node's state has diverged, which must stop it rather than be skipped."""
        block, body = self._body_of(data)
        if block.state_root != self.root:
            raise BlockRejected("state_diverged", f"decided block {height} commits to another state root")
        before = self.state
        if before.is_epoch_start(height):
            self.epoch_started_at = {before.epoch_of(height): time.monotonic()}
        if before.is_epoch_end(height):  # keep the closing epoch's scores for the leaderboard
            try:
                scores = epoch_scores(before, self.vset_for(height), self.aggregator)
                self.last_epoch_scores = (before.epoch_of(height), scores)
            except Exception as exc:  # only the leaderboard misses them
                log.warning("epoch %d's scores for the leaderboard: %s", before.epoch_of(height), exc)

        def disagree(reason: str, detail: str) -> None:
            self.metrics.inc("decided_disagreements_total", reason=reason)
            log.warning("height %d: applied as decided although %s (%s)", height, reason, detail)

        def trusting(wasm: bytes, policy: object) -> object:
            try:
                return self.validate_module(wasm, policy)
            except Exception as exc:  # the quorum registered it: this node's verdict differs
                disagree("module_verdict", f"{type(exc).__name__}: {exc}")
                return None

        if before.is_epoch_start(height):
            epoch = before.epoch_of(height)
            self._epoch_seeds = {e: s for e, s in self._epoch_seeds.items() if e == epoch - 1} | {
                epoch: epoch_seed(self.tip_hash)
            }
        self.state = apply_body(
            before,
            body,
            height=height,
            parent=self.tip_hash,
            vset=self.vset_for(height),
            validate_module=trusting,
            aggregate=self.aggregator,
            on_disagreement=disagree,
        )
        self.tip_height, self.tip_hash = height, hashlib.sha256(data).digest()
        self.tip_chain_block = block.chain_block
        self.root = state_root(self.state)
        self._remember_vsets()
        admitted = [self.state.submissions[submission_id(e)] for e in body.submissions]
        self._prune(body)
        return admitted, body

    def view_at(self, chain_block: int) -> EpochInfo | None:
        """The snapshot an epoch-opening block at `chain_block` must carry (None: not read yet)."""
        if not self.pin_views:
            return self.chain_view
        return self.chain_views.get(self.snapshot_at(chain_block))

    def snapshot_at(self, chain_block: int) -> int:
        """The chain block an epoch-opening block at `chain_block` pins its snapshot to."""
        return snapshot_block(chain_block, self.genesis.chain_block)

    def _proposal_chain_block(self, height: int, chain_block: int) -> tuple[int, EpochInfo]:
        """The header's chain block and the epoch snapshot it pins. An epoch-opening proposal
        names a chain block whose snapshot this node holds (the newest such one that keeps the
        headers monotonic), or none can be made yet (LocalFailure: the next view retries)."""
        chain_block = max(chain_block, self.tip_chain_block)
        info = self.view_at(chain_block)
        if info is not None or not self.state.is_epoch_start(height):
            return chain_block, info or self.chain_view
        floor = self.genesis.chain_block
        held = [
            b + SNAPSHOT_LAG
            for b in self.chain_views
            if b >= floor and self.tip_chain_block <= b + SNAPSHOT_LAG <= chain_block
        ]
        if not held:
            raise LocalFailure(f"no snapshot of the chain near block {chain_block} read yet")
        best = max(held)
        return best, self.chain_views[self.snapshot_at(best)]

    def propose(self, height: int, proposer: bytes, chain_block: int) -> bytes:
        chain_block, epoch_info = self._proposal_chain_block(height, chain_block)
        body = build_body(
            self.state,
            height=height,
            parent=self.tip_hash,
            vset=self.vset_for(height),
            epoch_info=epoch_info,
            registry_pool=self.registry_pool.values(),
            submission_pool=self.submission_pool.values(),
            attestation_pool=self.attestation_pool.values(),
            validate_module=self.validate_module,
            aggregate=self.aggregator,
            evidence_vote_pool=self.evidence_vote_pool.values(),
            evidence_pool=self.evidence_pool.values(),
        )
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

    def epoch_seed(self, epoch: int) -> bytes | None:
        """The decided seed of `epoch`, once the block before its first block is decided (so the
        next height's epoch always has one); None for epochs this node did not see open."""
        nxt = self.tip_height + 1
        if epoch == self.state.epoch_of(nxt) and self.state.is_epoch_start(nxt):
            return epoch_seed(self.tip_hash)
        return self._epoch_seeds.get(epoch)

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


def _validate_once(wasm: bytes, policy: object) -> object:
    """The runtime's verdict (an info object, or a ModuleCheckFailed to memoise) or LocalFailure."""
    try:
        return runtime_validator(wasm, policy)  # type: ignore[arg-type]
    except ModuleCheckFailed as exc:
        if exc.kind in DETERMINISTIC_KINDS or exc.kind == "bad_policy":
            return exc
        raise LocalFailure(f"module check: {exc}") from None
    except Exception as exc:  # a host fault (disk, memory): not the module's doing
        raise LocalFailure(f"module check: {type(exc).__name__}: {exc}") from None
