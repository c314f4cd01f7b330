"""The real chain through bittensor 11 (pinned): metagraph, hyperparameters, owner, set_weights.

bittensor is imported here and only here (it costs ~0.6 s), and only when a SubtensorChain is
built. bittensor 11 is a different SDK from <= 10: there is no `subtensor.metagraph()` or
`subtensor.set_weights(wallet, ...)` and no MockSubtensor. Reads go through the blocking
`bt.Subtensor` namespaces (`subnets.metagraph`, `subnets.subnet_hyperparameters`, ...), weights
through the `bt.SetWeights` intent, which reads the subnet's commit-reveal flag itself and builds
either `set_mechanism_weights` or a drand-timelocked `commit_timelocked_mechanism_weights` (CR v4:
the chain reveals it, no second call). Tests drive all of it offline through the SDK's documented
`substrate=` seam with an in-memory fake.

We hand the SDK our already chain-valid u16 vector (max 65535) as floats; its own
clip/normalise step maps such a vector back to the same integers (tested), so what it submits is
exactly the agreed vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from validator_node.chain.base import ChainError, Hyperparameters, Metagraph, Neuron, WeightsReceipt
from validator_node.chain.rules import WeightsRefused

NETWORKS = ("finney", "test", "local")
# The SDK's preflight raises ChainError with an ErrorCode and no pallet name; name it as the chain would.
_PREFLIGHT_NAMES = {
    "rate_limited": "SettingWeightsTooFast",
    "not_registered": "HotKeyNotRegisteredInSubNet",
    "not_authorized": "NeuronNoValidatorPermit",
    "invalid_argument": "WeightVecLengthIsLow",
}


class SubtensorChain:
    """`Chain` over bittensor 11. `network` is finney / test / local or a ws(s):// URL."""

    def __init__(
        self,
        netuid: int,
        network: str = "finney",
        *,
        substrate: Any = None,
        subtensor: Any = None,
    ) -> None:
        import bittensor as bt

        self._bt = bt
        self.netuid = netuid
        self.network = network
        self._sub = subtensor if subtensor is not None else bt.Subtensor(network, substrate=substrate)

    # --- reads ---------------------------------------------------------------------------------

    def current_block(self) -> int:
        return int(self._sub.block)

    def metagraph(self, block: int | None = None) -> Metagraph:
        mg = self._sub.subnets.metagraph(self.netuid, block, commitments=False)
        if mg is None:
            raise ChainError(f"subnet {self.netuid} does not exist on {self.network}")
        neurons = tuple(
            Neuron(
                uid=int(n.uid),
                hotkey=str(n.hotkey),
                coldkey=str(n.coldkey),
                stake=int(n.total_stake.rao),  # integer rao, never the float tao view
                validator_permit=bool(n.validator_permit),
            )
            for n in mg.neurons
        )
        return Metagraph(netuid=self.netuid, block=int(mg.block), neurons=neurons)

    def hyperparameters(self, block: int | None = None) -> Hyperparameters:
        hp = self._sub.subnets.subnet_hyperparameters(self.netuid, block=block)
        if hp is None:
            raise ChainError(f"subnet {self.netuid} does not exist on {self.network}")
        st = self._bt._generated.storage.SubtensorModule  # type: ignore[attr-defined]
        mechanisms = int(self._sub.subnets.mechanism_count(self.netuid, block=block) or 0)
        min_stake = self._sub.query(st.StakeThreshold, [], block=block)

        def get(name: str, default: int) -> int:
            value = hp.get(name)
            return default if value is None else int(value)

        return Hyperparameters(
            tempo=get("tempo", 360),
            weights_rate_limit=get("weights_rate_limit", 100),
            min_allowed_weights=get("min_allowed_weights", 0),
            max_weight_limit=get("max_weights_limit", 65_535),
            commit_reveal=bool(hp.get("commit_reveal_weights_enabled") or False),
            reveal_period_epochs=get("commit_reveal_period", 1),
            mechanism_count=max(mechanisms, 1),
            weights_version_key=get("weights_version", 0),
            weights_min_stake=int(min_stake or 0),
        )

    def subnet_owner(self, block: int | None = None) -> str:
        st = self._bt._generated.storage.SubtensorModule  # type: ignore[attr-defined]
        owner = self._sub.query(st.SubnetOwnerHotkey, [self.netuid], block=block)
        if not owner:
            raise ChainError(f"subnet {self.netuid} has no owner hotkey on {self.network}")
        return str(owner)

    # --- weights -------------------------------------------------------------------------------

    def set_weights(
        self,
        signer: Any,
        uids: Sequence[int],
        weights: Sequence[int],
        *,
        mechid: int = 0,
        version_key: int = 0,
        app_epoch: int | None = None,  # no field for it on subtensor (see Chain.set_weights)
    ) -> WeightsReceipt:
        """Submit through `bt.SetWeights` (plain or timelocked commit, as the subnet runs).

        `signer` is a bittensor `Wallet`, a bittensor_core `Keypair`, or a `wire.keys.Hotkey`.
        """
        bt = self._bt
        wallet = _as_sdk_signer(signer)
        uids_l, values_l = [int(u) for u in uids], [int(w) for w in weights]
        intent = bt.SetWeights(
            netuid=self.netuid,
            uids=uids_l,
            weights=[float(w) for w in values_l],
            mechid=mechid,
            version_key=version_key,
        )
        try:
            block = self.current_block()
            result = self._sub.execute(intent, wallet)
        except bt.ChainError as exc:
            code = str(exc.code.value) if exc.code is not None else "ChainError"
            raise WeightsRefused(exc.name or _PREFLIGHT_NAMES.get(code, code), exc.message) from exc
        except bt.BittensorError as exc:
            raise WeightsRefused("InvalidInput", str(exc)) from exc
        if not result.success:
            err = getattr(result, "error", None)
            raise WeightsRefused(str(getattr(err, "name", None) or "Failed"), result.message)
        data = dict(getattr(result, "data", None) or {})
        reveal_round = data.get("reveal_round")
        return WeightsReceipt(
            block=block,
            mode="commit" if reveal_round is not None else "plain",
            uids=tuple(uids_l),
            weights=tuple(values_l),
            reveal_round=None if reveal_round is None else int(reveal_round),
            message=result.message,
            extra=data,
        )

    # --- endpoints (commitments) -----------------------------------------------------------------

    def publish_endpoint(self, signer: Any, endpoint: str) -> int:
        """`Commitments.set_commitment` with one Raw field, signed by the hotkey (bittensor 11 has
        no intent for it, so `_SetCommitment` composes the generated call)."""
        from validator_node.chain.base import EndpointRefused

        bt = self._bt
        intent = _set_commitment_intent(bt)(netuid=self.netuid, data=endpoint.encode())
        try:
            block = self.current_block()
            result = self._sub.execute(intent, _as_sdk_signer(signer))
        except bt.ChainError as exc:
            raise EndpointRefused(exc.name or "ChainError", exc.message) from exc
        except bt.BittensorError as exc:
            raise EndpointRefused("InvalidInput", str(exc)) from exc
        if not result.success:
            err = getattr(result, "error", None)
            raise EndpointRefused(str(getattr(err, "name", None) or "Failed"), result.message)
        return block

    def endpoints(self) -> dict[str, str]:
        """The subnet's commitments as the SDK reads them (one pinned block, storage maps)."""
        found = self._sub.subnets.commitments(self.netuid) or {}
        return {str(hk): str(c.data) for hk, c in found.items() if c is not None and c.data}

    def close(self) -> None:
        """Close the SDK client, and its private event loop, which bittensor 11.3.0 leaves unclosed.

        `SyncClient.close()` stops the loop thread but never calls `loop.close()`, so its selector
        and self-pipe leak until GC (a ResourceWarning per client): close it here.
        """
        self._sub.close()
        loop_thread = getattr(self._sub, "_loop_thread", None)
        loop = getattr(loop_thread, "_loop", None)
        if loop is not None and not loop.is_running() and not loop.is_closed():
            loop.close()


_INTENT_CLASS: list[Any] = []


def _set_commitment_intent(bt: Any) -> Any:
    """The intent class (built once, after bittensor is imported: this module must not import it)."""
    if _INTENT_CLASS:
        return _INTENT_CLASS[0]
    from dataclasses import dataclass

    from bittensor._generated import calls
    from bittensor.intents.base import Intent

    @dataclass
    class SetCommitment(Intent):  # type: ignore[misc]
        op = "set_commitment"  # unannotated: class attributes, not dataclass fields
        signer = "hotkey"
        wraps = (("Commitments", "set_commitment"),)

        netuid: int
        data: bytes

        async def build(self, substrate: Any, wallet: Any) -> Any:
            field = {f"Raw{len(self.data)}": "0x" + self.data.hex()}
            return await substrate.compose(
                calls.Commitments.set_commitment(netuid=self.netuid, info={"fields": [field]})
            )

        def summary(self) -> str:
            return f"commit {len(self.data)} bytes on netuid {self.netuid}"

    _INTENT_CLASS.append(SetCommitment)
    return SetCommitment


def _as_sdk_signer(signer: Any) -> Any:
    """The SDK signs with a Wallet or any keypair-shaped object; a wire Hotkey wraps such a keypair."""
    from wire.keys import Hotkey

    if isinstance(signer, Hotkey):
        return signer._kp  # the bittensor_core Keypair inside (wire/ exposes no accessor)
    return signer
