"""`audit replay`: re-derive one epoch of a network from public bytes, checking everything.

The replay is a validator that votes on nothing: it starts from the genesis record (checked
against the pinned hash), and for every height from 1 to the epoch's last block it checks the
commit certificate against the set the replayed state says certifies that height (genesis set,
then each epoch's decided snapshot), the parent link, the genesis the header names and the state
root it commits to, then re-applies the block with the same pure rules validators run
(`validator_node.pipeline`) and a sandbox of its own for `aggregate`. A weights block whose matrix
differs from the one these rules derive is a failure here, never "applied as decided" as a node
would. For the epoch asked about it also reports the figures behind the weights (per-submission
attestations and medians, each `aggregate` run, best scores, shares, burn, the u16 rows), checks
each module is served by its hash, can re-run every evaluation (`rerun_evaluations`), checks
the state root after the epoch against the next block's header, and compares every validator's
chain `set_weights` record with the decided rows (`chain_records`).

An auditor's machine is not a validator: nothing here writes to a node's folder; the sandbox's
compiled-module cache lives in `work_dir`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from consensus.certificates import CertificateError, verify_certificate
from consensus.messages import DecisionPacket
from consensus.validators import ValidatorSet
from validator_node.app import Application
from validator_node.audit.chain_records import ChainRecord, match_records
from validator_node.audit.report import Report
from validator_node.audit.rerun import Rerunner
from validator_node.audit.sources import Source, SourceError
from validator_node.block import Block
from validator_node.genesis import GenesisRecord
from validator_node.pipeline.evidence import agreed_hash
from validator_node.pipeline.messages import EMPTY_BODY, BlockBody, EpochWeights
from validator_node.pipeline.state import (
    BlockRejected,
    Draft,
    derive_weights,
    epoch_scores,
    stake_weighted_median,
    state_for_weights,
    unpaid_uids,
)
from validator_node.pipeline.validator_sets import validators_of
from validator_node.weights import combine
from wire.codec import decode
from wire.errors import WireError
from wire.keys import ss58_of


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _ss58(key: bytes) -> str:
    try:
        return ss58_of(key)
    except Exception:
        return key.hex()


def uncertified(packet: DecisionPacket, height: int, vset: ValidatorSet, netuid: int) -> str | None:
    """Why the certificate does not prove `packet` was decided at `height` (None: it does)."""
    cert = packet.certificate
    if cert.height != height:
        return f"the certificate is for height {cert.height}"
    digest = _sha(packet.block)
    if digest != cert.block_hash:
        signed = cert.block_hash.hex()[:16]
        return f"the block's bytes hash to {digest.hex()[:16]}..., the certificate signs {signed}..."
    try:
        verify_certificate(cert, vset, netuid, height=height, block_hash=digest)
    except CertificateError as exc:
        return f"certificate: {exc}"
    return None


class Replayer:
    def __init__(
        self,
        source: Source,
        *,
        epoch: int,
        genesis_hash: bytes | None,
        work_dir: Path,
        rerun_evaluations: bool = False,
        chain_records: list[ChainRecord] | None = None,
    ) -> None:
        self.source = source
        self.epoch = epoch
        self.pin = genesis_hash
        self.work_dir = Path(work_dir)
        self.rerun = rerun_evaluations
        self.chain_records = chain_records
        self.report = Report(epoch, source.label)
        self.app: Application | None = None
        self._set_from: dict[int, str] = {}
        self._rerunner: Rerunner | None = None

    # --- the run ------------------------------------------------------------------------------

    async def run(self) -> Report:
        genesis = await self._genesis()
        if genesis is None:
            return self.report
        from validator_node.evaluation import Evaluator, SandboxAggregator

        app = self.app = Application(genesis)
        app.aggregator = SandboxAggregator(
            Evaluator(self.work_dir, app.metrics), app.validate_module, app.metrics
        )
        if hasattr(self.source, "vset_for"):
            self.source.vset_for = app.known_vset  # the DHT layer checks certificates with it too
        length = genesis.epoch_blocks
        last = (self.epoch + 1) * length
        for height in range(1, last + 1):
            packet = await self._decision(height)
            if packet is None or not self._certified(height, packet):
                return self.report
            if height == last and not await self._epoch_figures(height, packet):
                return self.report
            if not self._applied(height, packet):
                return self.report
        await self._modules()
        await self._closing_state(last + 1)
        if self.chain_records is not None:
            await self._chain(last)
        return self.report

    async def _genesis(self) -> GenesisRecord | None:
        r = self.report
        try:
            raw = await self.source.genesis(self.pin)
        except SourceError as exc:
            r.stop("genesis", str(exc))
            return None
        if raw is None:
            r.stop("genesis", f"{self.source.label} has no genesis record")
            return None
        digest = _sha(raw)
        if self.pin is not None and digest != self.pin:
            r.add("genesis", False, f"the record hashes to {digest.hex()}, not the pinned {self.pin.hex()}")
            return None
        try:
            g = decode(raw, GenesisRecord)
        except WireError as exc:
            r.add("genesis", False, f"the record does not decode: {exc}")
            return None
        vset = g.validator_set()
        r.add(
            "genesis",
            True,
            "matches the pinned hash"
            if self.pin is not None
            else f"NOT pinned: taken from {self.source.label}",
            hash=digest.hex(),
            pinned=self.pin is not None,
            netuid=g.netuid,
            epoch_blocks=g.epoch_blocks,
            chain_block=g.chain_block,
            owner=_ss58(g.owner),
            mechanism_count=g.mechanism_count,
            validators_as_miners=g.validators_as_miners,
            validators=len(vset.validators),
            total_stake=vset.total_stake,
        )
        return g

    async def _decision(self, height: int) -> DecisionPacket | None:
        try:
            packet = await self.source.decision(height)
        except SourceError as exc:
            self.report.add(f"height {height}", False, str(exc))
            return None
        if packet is None:
            self.report.stop(f"height {height}", f"{self.source.label} has no decided block at this height")
        return packet

    def _set_source(self, height: int) -> str:
        """Where the set certifying `height` came from (asked in order, so the state is at the
        epoch before or the epoch itself)."""
        assert self.app is not None
        state = self.app.state
        epoch = state.epoch_of(height)
        if epoch not in self._set_from:
            if epoch == 0:
                self._set_from[0] = "the genesis record"
            elif (
                validators_of(state.epoch_info) is not None
                and state.epoch_of(self.app.tip_height) == epoch - 1
            ):
                first = (epoch - 1) * state.epoch_blocks + 1
                self._set_from[epoch] = f"epoch {epoch - 1}'s decided snapshot (block {first})"
            else:
                self._set_from[epoch] = f"unchanged from epoch {epoch - 1}"
        return self._set_from[epoch]

    def _certificate_figures(self, height: int, packet: DecisionPacket, vset: ValidatorSet) -> dict[str, Any]:
        cert = packet.certificate
        signed = vset.stake_of_all(s.signer for s in cert.signatures if s.signer in vset)
        return {
            "height": height,
            "block_hash": cert.block_hash.hex(),
            "view": cert.view,
            "signers": len(cert.signatures),
            "set_size": len(vset.validators),
            "stake_for": signed,
            "stake_against": vset.total_stake - signed,
            "total_stake": vset.total_stake,
        }

    def _verify(self, height: int, packet: DecisionPacket, vset: ValidatorSet) -> str | None:
        assert self.app is not None
        return uncertified(packet, height, vset, self.app.netuid)

    def _certified(self, height: int, packet: DecisionPacket) -> bool:
        """Check the certificate and the header against the replayed state; one check per height."""
        assert self.app is not None
        app = self.app
        vset = app.known_vset(height)
        if vset is None:  # cannot happen when heights are asked in order
            self.report.stop(f"height {height}", "no known validator set certifies this height")
            return False
        figures = self._certificate_figures(height, packet, vset)
        figures["set_from"] = self._set_source(height)
        why = self._verify(height, packet, vset)
        if why is None:
            try:
                block = decode(packet.block, Block)
                body = EMPTY_BODY if not block.body else decode(block.body, BlockBody)
            except WireError as exc:
                why = f"the block does not decode: {exc}"
        if why is None:
            figures.update(
                parent=block.parent.hex(),
                state_root=block.state_root.hex(),
                chain_block=block.chain_block,
                proposer=_ss58(block.proposer),
            )
            if body.epoch_info is not None:  # the snapshot is decided; the replay has no chain view
                app.chain_view = body.epoch_info
            reason = app.validate(height, packet.block, current_chain_block=block.chain_block)
            if reason is not None:
                why = f"the block breaks the rules: {reason}"
        self.report.add(f"height {height}", why is None, why or "", **figures)
        return why is None

    def _applied(self, height: int, packet: DecisionPacket) -> bool:
        assert self.app is not None
        before = self._disagreements()
        try:
            self.app.apply_decided(height, packet.block)
        except BlockRejected as exc:
            self.report.add(f"height {height} applied", False, str(exc))
            return False
        if self._disagreements() != before:
            self.report.add(
                f"height {height} applied", False, "the replay derived something else than the block"
            )
            return False
        return True

    def _disagreements(self) -> int:
        assert self.app is not None
        return int(sum(self.app.metrics.counters.get("decided_disagreements_total", {}).values()))

    # --- the epoch's figures ------------------------------------------------------------------

    async def _epoch_figures(self, height: int, packet: DecisionPacket) -> bool:
        """Before the weights block is applied: what it must carry, item by item."""
        assert self.app is not None
        app, r, epoch = self.app, self.report, self.epoch
        block = decode(packet.block, Block)
        body = EMPTY_BODY if not block.body else decode(block.body, BlockBody)
        draft = Draft(app.state, height, app.tip_hash)
        if app.state.is_epoch_start(height) and body.epoch_info is not None:
            draft.open_epoch(body.epoch_info)
        for item in body.registry:
            draft.registry_item(item, app.validate_module)
        state = state_for_weights(app.state, draft)
        vset = app.vset_for(height)
        aggregator = app.aggregator
        scored = set()
        for m in state.registry.manifests():
            wasm = state.modules.get(m.wasm_sha256)
            if wasm is not None and aggregator is not None and aggregator.epoch_scored(m, wasm):
                scored.add(m.challenge_id)
        for sid in sorted(state.submissions):
            await self._submission(state, vset, sid, state.submissions[sid].challenge_id in scored)
        for challenge_id in sorted(state.evidence_votes):
            self._aggregate_run(state, vset, challenge_id)
        scores = epoch_scores(state, vset, aggregator)
        expected: EpochWeights = derive_weights(state, vset, epoch, aggregator)
        info = state.epoch_info
        assert info is not None
        active = state.registry.active(epoch)
        unpaid = unpaid_uids(state)  # permit holders: scored, but not paid as miners
        burn = {}
        for mechid in range(max(1, info.mechanism_count)):
            try:
                burn[mechid] = combine(
                    [c for c in _challenge_scores(active, scores, unpaid) if c.mechanism_id == mechid],
                    info.owner_uid,
                    len(info.neurons),
                    mechid,
                )[1]
            except Exception as exc:  # the fallback note says why; the figures only lack the burn
                burn[mechid] = f"n/a: {exc}"
        rows = [{"mechid": w.mechid, "uids": list(w.uids), "weights": list(w.weights)} for w in expected.rows]
        same = body.weights == expected
        r.add(
            f"epoch {epoch} weights",
            same,
            "the decided matrix equals the derived one"
            if same
            else "the decided matrix differs from the derived one",
            best_scores={c: {str(u): s for u, s in sorted(p.items())} for c, p in sorted(scores.items())},
            shares={
                m.challenge_id: {"ppb": m.emission_share_ppb, "mechanism": m.mechanism_id} for m in active
            },
            burnt=burn,
            owner_uid=info.owner_uid,
            unpaid_uids=sorted(unpaid),
            derived_rows=rows,
            decided_rows=None
            if body.weights is None
            else [
                {"mechid": w.mechid, "uids": list(w.uids), "weights": list(w.weights)}
                for w in body.weights.rows
            ],
            fallback=expected.fallback,
        )
        return True

    async def _submission(self, state: Any, vset: ValidatorSet, sid: bytes, epoch_scored: bool) -> None:
        sub = state.submissions[sid]
        atts = dict(state.attestations.get(sid, {}))
        median = None if epoch_scored else stake_weighted_median(atts, vset)
        figures: dict[str, Any] = {
            "challenge": sub.challenge_id,
            "uid": sub.uid,
            "miner": _ss58(sub.miner),
            "admitted_at": sub.height,
            "attestations": {_ss58(v): s for v, s in sorted(atts.items())},
            "median": median,
            "epoch_scored": epoch_scored,
        }
        item = f"epoch {self.epoch} submission {sid.hex()[:16]}"
        if not self.rerun or epoch_scored:
            self.report.add(item, True, "observations for `aggregate`" if epoch_scored else "", **figures)
            return
        score, detail = await self._rerun(state, sub)
        figures["rerun_score"] = score
        if score is None:
            self.report.add(item, False, detail, **figures)
            return
        figures["dissenting"] = [_ss58(v) for v, s in sorted(atts.items()) if s != score]
        ok = median is None or median == score
        self.report.add(
            item,
            ok,
            "re-run agrees with the decided median"
            if ok and median is not None
            else detail
            or (
                "no quorum attested"
                if median is None
                else f"re-run scores {score}, the decided median is {median}"
            ),
            **figures,
        )

    async def _rerun(self, state: Any, sub: Any) -> tuple[int | None, str]:
        if self._rerunner is None:
            self._rerunner = Rerunner(self.work_dir, self.source)
        return await self._rerunner.score(state, sub)

    def _aggregate_run(self, state: Any, vset: ValidatorSet, challenge_id: str) -> None:
        votes = state.evidence_votes[challenge_id]
        agreed = agreed_hash(votes, vset)
        item = state.evidence.get((challenge_id, agreed)) if agreed is not None else None
        entry = state.registry.get(challenge_id)
        figures: dict[str, Any] = {
            "challenge": challenge_id,
            "votes": {_ss58(v): h.hex() for v, h in sorted(votes.items())},
            "agreed_bundle": None if agreed is None else agreed.hex(),
        }
        name = f"epoch {self.epoch} aggregate {challenge_id}"
        if item is None or entry is None or self.app is None or self.app.aggregator is None:
            self.report.add(
                name, True, "no agreed bundle in the state: the challenge scores nothing", **figures
            )
            return
        wasm = state.modules.get(entry.manifest.wasm_sha256)
        out = None if wasm is None else self.app.aggregator.aggregate(entry.manifest, wasm, item.bundle)
        figures.update(
            bundle_size=len(item.bundle),
            output_sha256=None if out is None else _sha(out).hex(),
            output_size=None if out is None else len(out),
        )
        self.report.add(name, True, "ran" if out is not None else "the module's aggregate failed", **figures)

    # --- after the epoch ----------------------------------------------------------------------

    async def _modules(self) -> None:
        """Each module the registry holds must be served by its hash: the code that scored the
        epoch is public, and what is served is what was decided."""
        assert self.app is not None
        for entry in self.app.state.registry.challenges:
            m = entry.manifest
            item = f"module {m.challenge_id} {m.wasm_sha256.hex()[:16]}"
            decided = self.app.state.modules.get(m.wasm_sha256)
            try:
                served = await self.source.content(m.wasm_sha256, size=m.wasm_size)
            except SourceError as exc:
                self.report.add(item, False, str(exc))
                continue
            if served is None:
                self.report.add(item, False, f"not served by its hash by {self.source.label}")
            elif _sha(served) != m.wasm_sha256 or (decided is not None and served != decided):
                self.report.add(
                    item,
                    False,
                    f"the bytes served hash to {_sha(served).hex()[:16]}..., not the manifest's hash",
                )
            else:
                self.report.add(item, True, "served by its hash", size=len(served), status=entry.status)

    async def _closing_state(self, height: int) -> None:
        """The next block's header commits to the state the epoch ended in."""
        assert self.app is not None
        item = f"state after epoch {self.epoch}"
        try:
            packet = await self.source.decision(height)
        except SourceError as exc:
            self.report.add(item, False, str(exc))
            return
        if packet is None:
            self.report.add(item, True, f"not checked: block {height} is not decided (or not served) yet")
            return
        vset = self.app.known_vset(height)
        why = None if vset is None else self._verify(height, packet, vset)
        if vset is None or why is not None:
            self.report.add(item, False, f"block {height}: {why or 'no known set'}")
            return
        root = decode(packet.block, Block).state_root
        same = root == self.app.root
        self.report.add(
            item,
            same,
            f"block {height} commits to it" if same else f"block {height} commits to another state root",
            state_root=self.app.root.hex(),
        )

    async def _chain(self, last: int) -> None:
        """Every validator's chain record for the epoch against the decided rows."""
        assert self.app is not None and self.chain_records is not None
        app, epoch = self.app, self.epoch
        start = decode((await self.source.decision(last)).block, Block).chain_block  # type: ignore[union-attr]
        end = None
        nxt = last + app.state.epoch_blocks
        vset_next = app.known_vset(nxt)
        try:
            packet = await self.source.decision(nxt)
        except SourceError:
            packet = None
        if packet is not None and vset_next is not None and self._verify(nxt, packet, vset_next) is None:
            end = decode(packet.block, Block).chain_block
        decided = {e: w for e, w in app.state.weights.items() if e in (epoch - 1, epoch)}
        members = {v.hotkey for v in app.vset_for(last).validators}
        if vset_next is not None:
            members |= {v.hotkey for v in vset_next.validators}
        for check in match_records(self.chain_records, decided, epoch, start, end, members):
            self.report.checks.append(check)


def _challenge_scores(active: Any, scores: dict[str, dict[int, int]], unpaid: frozenset[int]) -> list[Any]:
    from validator_node.weights import from_manifests

    return from_manifests(active, scores, unpaid)
