"""An in-memory `bittensor._substrate.Substrate` for offline tests of the bittensor 11 adapter.

It implements what the SDK's reads and the SetWeights intent call (storage queries, the metagraph
and hyperparameter runtime APIs, compose and submit), records every call, and never opens a
socket. Storage is a dict keyed by (pallet, item, params).
"""

from __future__ import annotations

from typing import Any

from bittensor import Balance, ExtrinsicResult

GLOBAL_MAX_SUBNET_COUNT = 4096


class FakeSubstrate:
    token_symbols: dict[int, str] = {}

    def __init__(self, netuid: int, block: int = 1000) -> None:
        self.netuid = netuid
        self.block = block
        self.storage: dict[tuple[str, str, tuple[Any, ...]], Any] = {}
        self.read_at: list[Any] = []  # the block hash each query / runtime call was pinned to
        self.maps: dict[tuple[str, str, tuple[Any, ...]], list[tuple[Any, Any]]] = {}  # query_map rows
        self.runtime: dict[tuple[str, str, tuple[Any, ...]], Any] = {}
        self.submitted: list[tuple[Any, str]] = []
        self.reads: list[tuple[str, ...]] = []
        self.fail_with: str | None = None  # a pallet error name: the next submissions fail with it

    # --- helpers for tests ---------------------------------------------------------------------
    def set(self, item: str, params: tuple[Any, ...], value: Any, pallet: str = "SubtensorModule") -> None:
        self.storage[(pallet, item, tuple(params))] = value

    # --- the Substrate protocol ----------------------------------------------------------------
    def balance(self, rao: int, netuid: int = 0) -> Balance:
        return Balance.from_rao(rao)

    async def connect(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def block_number(self) -> int:
        return self.block

    async def finalized_block_number(self) -> int:
        return self.block

    async def block_hash(self, block: int | None = None) -> str:
        return "0x" + f"{block or self.block:064x}"

    async def block_time(self) -> float:
        return 12.0

    async def spec_version(self) -> int:
        return 999

    async def query(
        self, module: str, storage: str, params: Any = None, block_hash: Any = None, **kw: Any
    ) -> Any:
        self.reads.append(("query", module, storage))
        self.read_at.append(block_hash)
        return self.storage.get((module, storage, tuple(params or ())))

    async def query_map(self, module: str, storage: str, params: Any = None, **kw: Any) -> list[Any]:
        self.reads.append(("query_map", module, storage))
        return list(self.maps.get((module, storage, tuple(params or ())), []))

    async def query_batch(self, *a: Any, **kw: Any) -> list[Any]:
        return []

    async def runtime_call(self, api: str, method: str, params: list[Any], block_hash: Any = None) -> Any:
        self.reads.append(("runtime_call", api, method))
        self.read_at.append(block_hash)
        return self.runtime.get((api, method, tuple(params)))

    async def compose(self, call: Any) -> Any:
        return call

    async def estimate_fee(self, call: Any, keypair: Any) -> Balance:
        return Balance.from_tao(0)

    async def submit(self, call: Any, keypair: Any, **kw: Any) -> ExtrinsicResult:
        if self.fail_with is not None:
            from bittensor import ChainError

            err = ChainError(f"SubtensorModule.{self.fail_with}", name=self.fail_with)
            return ExtrinsicResult(success=False, message=f"dispatch failed: {self.fail_with}", error=err)
        self.submitted.append((call, keypair.ss58_address))
        return ExtrinsicResult(success=True, message="fake-included", block_hash=await self.block_hash())

    async def events(self, block_hash: Any = None) -> list[Any]:
        return []
