"""Where this validator observes evidence for epoch-scored challenges (the node side of
`pipeline.evidence`).

An evidence source turns what a validator can see at the epoch's evidence cut into the challenge's
bundle. Honest validators must build the same bytes from the same observations, so a source reads
only decided state (and whatever external record it stands for, pinned to a block). Which source
serves which challenge is the operator's configuration (`--evidence CHALLENGE=SOURCE,...`):

* `bitdefense-rounds`: BitDefense's rounds from the epoch's decided verdict submissions and the
  stake-weighted median of the latencies validators attested for them.
* `swap-market-sim`: Allways' commitments and contract events from the seeded swap-market
  simulator, standing in for the swap contract on a devnet (a real deployment reads the contract's
  events up to a pinned block here instead). Its miners are the subnet's UIDs without a validator
  permit; the remainder goes to the owner's UID.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import trio

from consensus.validators import ValidatorSet
from validator_node.pipeline.evidence import agreed_hash, evidence_cut
from validator_node.pipeline.messages import (
    MAX_EVIDENCE,
    Attestation,
    EpochInfo,
    EvidenceBundle,
    EvidenceVote,
)
from validator_node.pipeline.state import Admitted, AppState, stake_weighted_median
from wire.envelope import seal

log = logging.getLogger("validator_node.evidence")

CHALLENGES_DIR = Path(__file__).resolve().parents[1] / "challenges"


class EvidenceSource(Protocol):
    def observe(
        self, challenge_id: str, epoch: int, seed: bytes, cut: int, state: AppState, vset: ValidatorSet
    ) -> bytes:
        """The bundle for `epoch` (whose decided seed is `seed`), from the decided state after
        block `cut`."""
        ...


def _challenge_module(challenge: str, name: str) -> ModuleType:
    path = CHALLENGES_DIR / challenge / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_evidence_{challenge}_{name}".replace("-", "_"), path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


def uid_hotkeys(info: EpochInfo) -> list[str]:
    """The epoch's UID -> hotkey list (hex), as the seed challenges' bundles index miners."""
    by_uid = {n.uid: n.hotkey.hex() for n in info.neurons}
    if sorted(by_uid) != list(range(len(by_uid))):
        raise ValueError("the metagraph's UIDs are not 0..n-1")
    return [by_uid[u] for u in range(len(by_uid))]


class BitDefenseRounds:
    def __init__(self) -> None:
        self.rounds = _challenge_module("bitdefense-invariants", "rounds")

    def observe(
        self, challenge_id: str, epoch: int, seed: bytes, cut: int, state: AppState, vset: ValidatorSet
    ) -> bytes:
        assert state.epoch_info is not None
        answers = []
        for sid in sorted(state.submissions):
            sub = state.submissions[sid]
            if sub.challenge_id != challenge_id or sub.height > cut:
                continue
            latency = stake_weighted_median(state.attestations.get(sid, {}), vset)
            if latency is None or latency < 0:
                continue  # no agreed latency yet: the answer missed the cut
            answers.append((sub.uid, sub.height, sub.payload, latency))
        return self.rounds.build_bundle(epoch, seed, uid_hotkeys(state.epoch_info), answers)


class SwapMarketSim:
    SCORING_BLOCK_BASE = 20_000  # the simulated contract's block at epoch 0's scoring
    BLOCKS_PER_EPOCH = 600  # one Allways scoring window per platform epoch

    def __init__(self) -> None:
        self.sim = _challenge_module("allways-swap", "simulator")

    def observe(
        self, challenge_id: str, epoch: int, seed: bytes, cut: int, state: AppState, vset: ValidatorSet
    ) -> bytes:
        info = state.epoch_info
        assert info is not None
        hotkeys = uid_hotkeys(info)
        miners = [hotkeys[n.uid] for n in sorted(info.neurons, key=lambda n: n.uid) if not n.validator_permit]
        miners = [hk for hk in miners if hk != hotkeys[info.owner_uid]]
        kw = self.sim.simulate(
            epoch,
            scoring_block=self.SCORING_BLOCK_BASE + epoch * self.BLOCKS_PER_EPOCH,
            history_blocks=1_200,
            swap_chance=0.2,
            miner_hotkeys=miners,
            hotkeys=hotkeys,
            recycle_uid=info.owner_uid,
        )
        return self.sim.bundle_bytes(kw)


SOURCES: dict[str, type] = {"bitdefense-rounds": BitDefenseRounds, "swap-market-sim": SwapMarketSim}


def parse_sources(spec: str) -> dict[str, EvidenceSource]:
    """`CHALLENGE=SOURCE,...` -> challenge id -> source (ValueError names what is wrong)."""
    out: dict[str, EvidenceSource] = {}
    made: dict[str, EvidenceSource] = {}
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        challenge, _, source = part.partition("=")
        if not challenge or source not in SOURCES:
            raise ValueError(
                f"--evidence {part!r}: expected CHALLENGE=SOURCE with SOURCE in {sorted(SOURCES)}"
            )
        if source not in made:
            made[source] = SOURCES[source]()
        out[challenge] = made[source]
    return out


class EvidenceDuty:
    """A mixin of `ValidatorNode`: observe and vote at the evidence cut, warm the aggregate memo
    once a bundle is agreed, and attest latencies for epoch-scored challenges' submissions."""

    # state owned by ValidatorNode (declared here for readers and type checkers)
    cfg: Any
    app: Any
    vset: ValidatorSet
    hotkey: Any
    metrics: Any
    aggregator: Any
    evidence_sources: dict[str, EvidenceSource]
    _nursery: trio.Nursery
    _warmed: set[tuple[str, bytes]]

    def _relay(self, item: object) -> None:  # pragma: no cover - the node defines it
        raise NotImplementedError

    def _on_decided_for_evidence(self, height: int) -> None:
        state: AppState = self.app.state
        cut = evidence_cut(height, state.epoch_blocks)
        if cut is None or height < cut or state.is_epoch_end(height):
            return
        epoch = state.epoch_of(height)
        if height == cut:
            for m in state.registry.active(epoch):
                source = self.evidence_sources.get(m.challenge_id)
                if source is not None:
                    self._nursery.start_soon(self._observe, source, m.challenge_id, epoch, cut, state)
        agreed: set[tuple[str, bytes]] = set()
        for challenge_id, votes in sorted(state.evidence_votes.items()):
            h = agreed_hash(votes, self.app.vset_for(height))
            if h is not None:
                agreed.add((challenge_id, h))
            item = None if h is None else state.evidence.get((challenge_id, h))
            entry = state.registry.get(challenge_id)
            if item is None or entry is None or (challenge_id, h) in self._warmed:
                continue
            wasm = state.modules.get(entry.manifest.wasm_sha256)
            if wasm is not None:
                self._warmed.add((challenge_id, h))
                self._nursery.start_soon(self._warm, entry.manifest, wasm, item.bundle)
        # the state's evidence starts afresh each epoch: what is no longer agreed is never warmed
        # again, and keeping it would grow this set by an entry per challenge per epoch for ever
        self._warmed &= agreed

    async def _warm(self, manifest: Any, wasm: bytes, bundle: bytes) -> None:
        try:
            await trio.to_thread.run_sync(self.aggregator.aggregate, manifest, wasm, bundle)
        except Exception as exc:  # the rules will run it again (and fail the same way) when needed
            log.error("could not run %s's aggregate: %s", manifest.challenge_id, exc)

    async def _observe(
        self, source: EvidenceSource, challenge_id: str, epoch: int, cut: int, state: AppState
    ) -> None:
        try:
            vset = self.app.vset_for(cut)  # the epoch's set, whatever the tip is by now
            seed = self.app.epoch_seed(epoch)
            if seed is None:
                raise RuntimeError(f"this node did not see epoch {epoch} open, so it lacks its seed")
            bundle = await trio.to_thread.run_sync(
                source.observe, challenge_id, epoch, seed, cut, state, vset
            )
        except Exception as exc:
            self.metrics.inc("evidence_observed_total", challenge=challenge_id, result="error")
            log.error("could not observe %s evidence for epoch %d: %s", challenge_id, epoch, exc)
            return
        if not 0 < len(bundle) <= MAX_EVIDENCE:
            self.metrics.inc("evidence_observed_total", challenge=challenge_id, result="size")
            log.error(
                "%s evidence for epoch %d is %d bytes (cap %d)",
                challenge_id,
                epoch,
                len(bundle),
                MAX_EVIDENCE,
            )
            return
        digest = hashlib.sha256(bundle).digest()
        vote = seal(EvidenceVote(challenge_id, epoch, digest), self.hotkey, self.cfg.netuid)
        for item in (EvidenceBundle(challenge_id, epoch, bundle), vote):
            if self.app.offer(item) is None:
                self._relay(item)
        self.metrics.inc("evidence_observed_total", challenge=challenge_id, result="ok")
        log.info(
            "epoch %d: voted %s evidence %s (%d bytes)", epoch, challenge_id, digest.hex()[:12], len(bundle)
        )

    def _attest_latency(self, sub: Admitted) -> None:
        """For an epoch-scored challenge a submission is an answer, not a thing to run: what this
        validator attests is when it saw it (the bundle uses the stake-weighted median)."""
        epoch = self.app.state.epoch_of(sub.height)
        latency = self.app.observed_latency_ms(sub.submission_id, epoch)
        if latency is None:
            return
        env = seal(Attestation(epoch, sub.submission_id, latency, None), self.hotkey, self.cfg.netuid)
        if self.app.offer(env) is None:
            self._relay(env)
        log.info(
            "observed %s answer %s from uid %d after %d ms",
            sub.challenge_id,
            sub.submission_id.hex()[:12],
            sub.uid,
            latency,
        )
