"""The node's dealings with the chain: the metagraph it reads (peer admission, the trust root
for strangers' records, the snapshot it proposes for the next epoch) and the decided weights it
submits. A mixin of `ValidatorNode`, like state_sync, evidence and payloads."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import trio

from consensus.validators import ValidatorSet
from validator_node.app import epoch_info_from_chain
from validator_node.chain.base import Chain, Metagraph
from validator_node.pipeline.messages import EpochWeights
from wire.keys import Hotkey, public_key_of

log = logging.getLogger("validator_node")


def validator_set_of(mg: Metagraph) -> ValidatorSet | None:
    """The metagraph's validators: permit and positive stake, stake in rao (integers)."""
    members = [(public_key_of(n.hotkey), n.stake) for n in mg.validators(min_stake=1)]
    return ValidatorSet.of(members) if members else None


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

    async def _chain_poller(self, metagraph_every: float = 12.0) -> None:
        last_refresh = trio.current_time()
        while True:
            try:
                self._chain_block = await trio.to_thread.run_sync(self.chain.current_block)
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

    async def _submit_weights(self, weights: EpochWeights) -> None:
        self._weights_pending += 1
        try:
            await self._submit_weights_rows(weights)
        finally:
            self._weights_pending -= 1

    async def _submit_weights_rows(self, weights: EpochWeights) -> None:
        info = self.app.state.epoch_info
        version_key = 0 if info is None else info.version_key
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
                        self.hotkey, list(r.uids), list(r.weights), mechid=r.mechid, version_key=version_key
                    )
                )
            except Exception as exc:
                block, result = None, f"refused: {exc}"
                self.metrics.inc("chain_set_weights_total", result="refused")
                log.error("set_weights for epoch %d refused: %s", weights.epoch, exc)
            else:
                block, result = receipt.block, "ok"
            uids, values = list(row.uids), list(row.weights)
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
