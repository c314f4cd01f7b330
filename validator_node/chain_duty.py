"""The node's dealings with the chain: the metagraph it reads (peer admission, the trust root
for strangers' records, the snapshot it proposes for the next epoch) and the decided weights it
submits. A mixin of `ValidatorNode`, like state_sync, evidence and payloads."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import trio

from consensus.validators import ValidatorSet
from validator_node.chain.base import Chain
from validator_node.chain_view import epoch_info_from_chain, validator_set_of
from validator_node.pipeline.messages import EpochWeights, WeightRowMsg
from wire.keys import Hotkey

log = logging.getLogger("validator_node")


def validator_set_from(chain: Chain) -> ValidatorSet:
    vset = validator_set_of(chain.metagraph())
    if vset is None:
        raise RuntimeError(f"netuid {chain.netuid}: the metagraph has no validator with a permit and stake")
    return vset


class ChainDuty:
    # state owned by ValidatorNode (declared here for readers and type checkers)
    cfg: Any
    app: Any
    chain: Chain
    hotkey: Hotkey
    metrics: Any
    store: Any
    transport: Any
    chain_vset: ValidatorSet
    last_weights: dict[str, Any] | None
    last_weights_result: dict[str, Any] | None  # the newest attempt, for the dashboard
    _permitted: frozenset[bytes]
    _chain_block: int
    _weights_pending: int

    def _admissible(self) -> frozenset[bytes]:
        """Who may hold a consensus link: permit holders of the latest metagraph read, and the
        members of the decided sets of this epoch and the next (whose stake counts for quorums
        even if the chain has since taken their permit)."""
        return frozenset(v.hotkey for v in self.chain_vset.validators) | self._decided_members()

    def _decided_members(self) -> frozenset[bytes]:
        tip = self.app.tip_height
        now = self.app.vset_for(tip + 1)
        following = self.app.known_vset((self.app.state.epoch_of(tip + 1) + 1) * self.cfg.epoch_blocks + 1)
        members = {v.hotkey for v in now.validators}
        if following is not None:
            members |= {v.hotkey for v in following.validators}
        return frozenset(members)

    def _readmit(self) -> None:
        """Recompute who may hold a consensus link and close the links of everyone else."""
        self._permitted = self._admissible()
        self.transport.readmit(self._permitted)

    #: chain blocks whose view is kept for epoch snapshots (the newest ones)
    views_kept: int = 64

    async def _prefetch_views(self) -> None:
        """Read the chain's view at each block from `snapshot_block`'s lag up to the head's
        predecessor that this node has not read yet, and any block a validation lacked, so an
        epoch-opening proposal finds its pinned snapshot here (validator_node.block.SNAPSHOT_LAG)."""
        from validator_node.block import SNAPSHOT_LAG

        app, head = self.app, self._chain_block
        floor = app.genesis.chain_block  # early in a network's life, the snapshot block itself
        wanted = [b for b in range(max(head - SNAPSHOT_LAG - 1, floor), head) if b not in app.chain_views]
        if floor <= head and floor not in app.chain_views and head - floor <= self.views_kept // 2:
            wanted.append(floor)
        if app.wanted_view is not None and app.wanted_view <= head and app.wanted_view not in app.chain_views:
            wanted.append(app.wanted_view)
        for block in wanted:
            app.chain_views[block] = await trio.to_thread.run_sync(
                epoch_info_from_chain, self.chain, 0, block
            )
            self.metrics.inc("chain_view_reads_total")
        app.wanted_view = None
        for old in sorted(app.chain_views)[: -self.views_kept]:
            del app.chain_views[old]

    async def _chain_poller(self, metagraph_every: float = 12.0) -> None:
        last_refresh = trio.current_time()
        while True:
            try:
                self._chain_block = await trio.to_thread.run_sync(self.chain.current_block)
                await self._prefetch_views()
                if trio.current_time() - last_refresh >= metagraph_every:
                    last_refresh = trio.current_time()
                    mg = await trio.to_thread.run_sync(self.chain.metagraph)
                    today = validator_set_of(mg)
                    if today is not None:  # the trust root for the DHT's records of unknown heights
                        self.chain_vset = today
                    self._readmit()
                    # the snapshot this node would propose (and accept) for the next epoch; nodes
                    # converge on it within one refresh, and until then an epoch-opening block
                    # is refused by some and retried after a view change
                    self.app.chain_view = await trio.to_thread.run_sync(epoch_info_from_chain, self.chain)
            except Exception as exc:  # the chain is remote in production: keep the last value
                self.metrics.inc("chain_errors_total")
                log.warning("chain: %s", exc)
            await trio.sleep(1.0)

    #: the newest decided weights handed to `_submit_weights`, and whether a submitter runs
    _weights_newest: EpochWeights | None = None
    _weights_submitting: bool = False
    #: seconds between retries of the newest weights while the chain's rate limit refuses them
    weights_retry_interval: float = 2.0

    async def _submit_weights(self, weights: EpochWeights) -> None:
        """Hand decided weights to the chain: only the newest epoch's, one submission at a time.

        A node catching up decides several epochs' weights blocks back to back; submitting each
        (as it once did, one task per block) put every missed epoch's vector in one chain block,
        where `weights_rate_limit` let the oldest land and refused the current one. Now weights
        older than (or as old as) the newest seen are dropped, and the one running submitter
        always takes the newest, so once an epoch's weights are decided no older vector is sent;
        a vector the rate limit refuses is retried until it lands or a newer one replaces it."""
        newest = self._weights_newest
        if newest is not None and weights.epoch <= newest.epoch:
            self.metrics.inc("chain_set_weights_total", result="superseded")
            log.info("weights for epoch %d not submitted: epoch %d is decided", weights.epoch, newest.epoch)
            return
        self._weights_newest = weights
        if self._weights_submitting:
            return  # the running submitter takes it next
        self._weights_submitting = True
        self._weights_pending += 1
        try:
            await self._submit_newest()
        finally:
            self._weights_submitting = False
            self._weights_pending -= 1

    async def _submit_newest(self) -> None:
        done = -1
        while self._weights_newest is not None and self._weights_newest.epoch > done:
            current = self._weights_newest
            await trio.sleep(0)  # let the decisions queued behind this one replace it first
            if self._weights_newest is not current:
                self.metrics.inc("chain_set_weights_total", result="superseded")
                continue
            rows = current.rows
            while rows:
                rows = await self._submit_weights_rows(EpochWeights(epoch=current.epoch, rows=rows))
                if not rows:
                    break
                await trio.sleep(self.weights_retry_interval)  # rate-limited: wait for the chain
                if self._weights_newest is not current:  # newer weights are decided: send those
                    self.metrics.inc("chain_set_weights_total", result="superseded")
                    break
            done = current.epoch

    async def _submit_weights_rows(self, weights: EpochWeights) -> tuple[WeightRowMsg, ...]:
        """Submit each row; returns the rows the chain refused only for its rate limit."""
        info = self.app.state.epoch_info
        version_key = 0 if info is None else info.version_key
        too_fast: list[WeightRowMsg] = []
        for row in weights.rows:
            if not row.uids:  # the decided fallback (`weights.fallback`): a self-weight
                mine = [n.uid for n in (info.neurons if info else ()) if n.hotkey == self.hotkey.public_key]
                if not mine:
                    continue
                row = replace(row, uids=(mine[0],), weights=(65535,))
                log.warning("epoch %d: decided fallback weights (%s)", weights.epoch, weights.fallback)
            try:
                receipt = await trio.to_thread.run_sync(
                    lambda r=row: self.chain.set_weights(
                        self.hotkey,
                        list(r.uids),
                        list(r.weights),
                        mechid=r.mechid,
                        version_key=version_key,
                        app_epoch=weights.epoch,
                    )
                )
            except Exception as exc:
                block, result = None, f"refused: {exc}"
                if getattr(exc, "code", None) == "SettingWeightsTooFast":
                    too_fast.append(row)
                    self.metrics.inc("chain_set_weights_total", result="rate_limited")
                    log.warning("set_weights for epoch %d rate-limited, will retry: %s", weights.epoch, exc)
                    continue  # recorded once it lands, or not at all if newer weights replace it
                else:
                    self.metrics.inc("chain_set_weights_total", result="refused")
                    log.error("set_weights for epoch %d refused: %s", weights.epoch, exc)
            else:
                block, result = receipt.block, "ok"
            uids, values = list(row.uids), list(row.weights)
            self.last_weights_result = {
                "epoch": weights.epoch,
                "mechid": row.mechid,
                "result": result,
                "chain_block": block,
                "time": time.time(),  # display only
            }
            await trio.to_thread.run_sync(
                self.store.record_weights, weights.epoch, row.mechid, uids, values, block, result
            )
            if block is None:
                continue
            self.metrics.inc("chain_set_weights_total", result="ok")
            self.last_weights = {"epoch": weights.epoch, "uids": uids, "weights": values}
            log.info(
                "set weights for epoch %d (mechanism %d) at chain block %d: %s",
                weights.epoch,
                row.mechid,
                receipt.block,
                dict(zip(row.uids, row.weights, strict=True)),
            )
        return tuple(too_fast)
