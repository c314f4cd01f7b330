"""A swap-market simulator that produces Allways evidence bundles, deterministic from a seed.

Miners post 5-significant-figure TAO/BTC quotes for both directions and re-quote now and then; users
arrive at random blocks, pick the best quote of an active, idle miner for their direction, and the
miner either completes the swap a few blocks later or lets it time out (each miner has its own
reliability). Some miners deactivate for a while, one is deregistered before the scoring block. The
result is the evidence a validator node would collect from the chain (commitments and contract events)
and pin at the scoring block, encoded by `reference.bundle`.

Randomness lives only here (a seeded `random.Random`); the challenge module and the reference never see it.

    python challenges/allways-swap/simulator.py --seed 7 --miners 16 --out bundle.cbor
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

_HERE = Path(__file__).resolve().parent


def _reference() -> ModuleType:
    """reference.py of this challenge (the directory name has a dash, so it is not importable by name)."""
    spec = importlib.util.spec_from_file_location("_allways_reference", _HERE / "reference.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ref = _reference()

TIMEOUT_BLOCKS = 50  # DEFAULT_FULFILLMENT_TIMEOUT_BLOCKS
MIN_SWAP, MAX_SWAP = 10**8, 5 * 10**8  # 0.1 / 0.5 TAO in rao (DEFAULT_MIN/MAX_SWAP)


@dataclass
class Miner:
    hotkey: str
    reliability: float  # chance a swap is completed rather than timed out
    fwd: int  # btc->tao quote, hundredths of TAO per BTC (5 significant figures)
    rev: int  # tao->btc quote, same unit
    collateral: int
    active: bool = False
    busy_until: int = -1
    pending: tuple[int, int, int] | None = field(default=None)  # (resolve block, kind, tao_amount)


@dataclass
class Market:
    """The evidence under construction: rate commitments and contract events with their blocks."""

    rates: list[tuple[int, str, tuple[int, int], tuple[int, int]]] = field(default_factory=list)
    events: list[tuple[int, int, int, str, int]] = field(default_factory=list)
    _idx: dict[int, int] = field(default_factory=dict)

    def event(self, block: int, kind: int, hotkey: str, amount: int = 0) -> None:
        i = self._idx.get(block, 0)
        self._idx[block] = i + 1
        self.events.append((block, i, kind, hotkey, amount))

    def quote(self, block: int, m: Miner) -> None:
        self.rates.append((block, m.hotkey, (m.fwd, -2), (m.rev, -2)))


def simulate(
    seed: int,
    *,
    miners: int = 8,
    scoring_block: int = 20_000,
    history_blocks: int = 3_000,
    swap_chance: float = 0.08,
    halted: bool = False,
    miner_hotkeys: list[str] | None = None,
    hotkeys: list[str] | None = None,
    recycle_uid: int | None = None,
) -> dict[str, Any]:
    """Keyword arguments for `reference.bundle` (plus `block` and `hotkeys`), same seed -> same evidence.

    By default the miners and the subnet's hotkeys are invented (one miner deregistered before the
    scoring block, idle UIDs after them). A devnet passes its own: `miner_hotkeys` trade on the
    market, `hotkeys` is the subnet's UID -> hotkey list, `recycle_uid` its owner's UID."""
    rng = random.Random(seed)
    names = (
        miner_hotkeys
        if miner_hotkeys is not None
        else [f"5Sim{seed % 10_000:04d}Miner{i:03d}" for i in range(miners)]
    )
    pool = [
        Miner(
            hotkey=names[i],
            reliability=rng.choice([1.0, 1.0, 0.97, 0.9, 0.6]),
            fwd=rng.randint(33_500, 34_500),
            rev=rng.randint(34_500, 35_500),
            collateral=rng.choice([MAX_SWAP, MAX_SWAP * 2, MAX_SWAP // 2, MAX_SWAP // 4]),
        )
        for i in range(len(names))
    ]
    market = Market()
    start = max(1, scoring_block - history_blocks)
    for m in pool:  # activations and first quotes before the history starts count as anchors
        b = start + rng.randint(0, 50)
        market.quote(b, m)
        if rng.random() < 0.9:
            market.event(b + 1, ref.ACTIVATED, m.hotkey)
            m.active = True
    for block in range(start + 60, scoring_block + 1):
        for m in pool:
            if m.pending is not None and m.pending[0] == block:
                _, kind, amount = m.pending
                market.event(block, kind, m.hotkey, amount)
                m.pending = None
            if rng.random() < 0.004:  # re-quote
                m.fwd = max(10_000, min(99_999, m.fwd + rng.randint(-40, 40)))
                m.rev = max(10_000, min(99_999, m.rev + rng.randint(-40, 40)))
                market.quote(block, m)
            if rng.random() < 0.0008:  # toggle activity
                m.active = not m.active
                market.event(block, ref.ACTIVATED if m.active else ref.DEACTIVATED, m.hotkey)
        if block == scoring_block or rng.random() >= swap_chance:
            continue
        direction = rng.randint(0, 1)
        idle = [m for m in pool if m.active and m.pending is None and (m.fwd, m.rev)[direction] > 0]
        if not idle:
            continue
        pick = (max if direction == 0 else min)(idle, key=lambda m: ((m.fwd, m.rev)[direction], m.hotkey))
        amount = rng.randint(MIN_SWAP, MAX_SWAP)
        market.event(block, ref.INITIATED, pick.hotkey)
        if rng.random() < pick.reliability:
            pick.pending = (block + rng.randint(2, 20), ref.COMPLETED, amount)
        else:
            pick.pending = (block + TIMEOUT_BLOCKS, ref.TIMED_OUT, amount)
    if hotkeys is None:
        registered = [m.hotkey for m in pool]
        if len(registered) > 2:
            registered.pop(rng.randrange(len(registered)))  # deregistered before the scoring block
        # a few UIDs without any market activity, so that the recycle UID and idle UIDs exist
        hotkeys = [*registered, *(f"5SimIdle{i:03d}" for i in range(max(0, 60 - len(registered))))]
    extra = {} if recycle_uid is None else {"params": [*ref.DEFAULT_PARAMS[:5], recycle_uid]}
    return {
        **extra,
        "block": scoring_block,
        "hotkeys": hotkeys,
        "rates": market.rates,
        "events": market.events,
        "collateral": {m.hotkey: m.collateral for m in pool},
        "max_swap": MAX_SWAP,
        "halted": halted,
    }


def bundle_bytes(kw: dict[str, Any]) -> bytes:
    """Encode the simulated evidence as the challenge's canonical CBOR bundle."""
    rest = {k: v for k, v in kw.items() if k not in ("block", "hotkeys")}
    return ref.bundle(kw["block"], kw["hotkeys"], **rest)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--miners", type=int, default=8)
    ap.add_argument("--block", type=int, default=20_000)
    ap.add_argument("--history", type=int, default=3_000)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    data = bundle_bytes(simulate(a.seed, miners=a.miners, scoring_block=a.block, history_blocks=a.history))
    a.out.write_bytes(data)
    print(f"{len(data)} bytes -> {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
