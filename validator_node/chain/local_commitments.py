"""The embedded local chain's commitments: the Commitments pallet's `set_commitment`, as validators
publish their endpoints with it (`validator_node.chain.endpoints`). A mixin of `LocalChain`."""

from __future__ import annotations

from typing import Any

from wire import cbor, keys


class LocalCommitments:
    """Mixin: LocalChain provides netuid, _db, _tx, current_block and hyperparameters."""

    netuid: int
    _db: Any

    def _tx(self) -> Any: ...

    def current_block(self) -> int: ...

    def hyperparameters(self, block: int | None = None) -> Any: ...

    # --- commitments (the Commitments pallet's set_commitment, as validators' endpoints use it) ---

    #: bytes of commitments a hotkey may publish per chain epoch (tempo); each call costs at least
    #: COMMITMENT_MIN_COST, as the pallet's `UsedSpaceOf` / `MaxSpace` accounting does
    COMMITMENT_SPACE = 3100
    COMMITMENT_MIN_COST = 100

    def commitment_payload(self, data: str) -> bytes:
        """What a set_commitment signature covers (canonical CBOR, domain-separated)."""
        return cbor.dumps(["local-chain/set_commitment/1", self.netuid, data])

    def publish_endpoint(self, signer: Any, endpoint: str) -> int:
        """`set_commitment` of one Raw field, by a registered hotkey, within its space quota."""
        from validator_node.chain.base import EndpointRefused
        from validator_node.chain.endpoints import MAX_COMMITMENT

        if not (
            callable(getattr(signer, "sign", None)) and isinstance(getattr(signer, "public_key", None), bytes)
        ):
            raise TypeError("the local chain needs a signing hotkey (wire.keys.Hotkey)")
        hotkey = keys.ss58_of(signer.public_key)
        size = len(endpoint.encode())
        if size > MAX_COMMITMENT:
            raise EndpointRefused("TooManyFieldsInCommitmentInfo", f"{size} bytes is over one Raw field")
        payload = self.commitment_payload(endpoint)
        signature = bytes(signer.sign(payload))
        with self._tx():
            block = self.current_block()
            if self._db.execute("SELECT 1 FROM neurons WHERE hotkey = ?", (hotkey,)).fetchone() is None:
                raise EndpointRefused("AccountNotAllowedCommit", f"{hotkey} is not registered on the subnet")
            epoch = self.hyperparameters().epoch_of(block, self.netuid)
            row = self._db.execute(
                "SELECT used FROM commitment_space WHERE hotkey = ? AND epoch = ?", (hotkey, epoch)
            ).fetchone()
            used = (0 if row is None else int(row[0])) + max(size, self.COMMITMENT_MIN_COST)
            if used > self.COMMITMENT_SPACE:
                raise EndpointRefused("SpaceLimitExceeded", f"{hotkey} used its commitment space this epoch")
            self._db.execute(
                "INSERT OR REPLACE INTO commitment_space (hotkey, epoch, used) VALUES (?, ?, ?)",
                (hotkey, epoch, used),
            )
            self._db.execute(
                "INSERT OR REPLACE INTO commitments (hotkey, block, data, signature) VALUES (?, ?, ?, ?)",
                (hotkey, block, endpoint, signature.hex()),
            )
        return block

    def endpoints(self) -> dict[str, str]:
        rows = self._db.execute("SELECT hotkey, data FROM commitments ORDER BY hotkey").fetchall()
        return {str(h): str(d) for h, d in rows}
