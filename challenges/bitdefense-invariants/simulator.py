"""Rounds of BitDefense evidence from the shipped dataset, deterministic from a seed.

Each round replays one transaction of `dataset.json` against all the dataset's invariants and queries a
random subset of miners (3, 5, 7 or 9, as the original validator does). Three kinds of simulated miner:

* `honest`: the w3 engine's rule on the transaction's storage writes (`reference.oracle`), 0.4-2.4 s;
* `safe`: the original's `SafeOnlyInvariantsCheckEngine`, always "safe", answers in 30-90 ms;
* `random`: random verdicts, 100 ms-6 s, and one answer in five is a timeout (no output).

Honeypot rounds (a share of them) carry the transaction's recorded storage writes in the bundle, so the
ground truth comes from the rule and an always-safe miner is exposed; other rounds use the 60% majority.
Latencies are the agreed integer milliseconds (see docs/seed-challenges.md). Randomness lives only here.

    python challenges/bitdefense-invariants/simulator.py --seed 3 --rounds 40 --out rounds.cbor
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

_HERE = Path(__file__).resolve().parent


def _reference() -> ModuleType:
    """reference.py of this challenge (the directory name has dashes, so it is not importable by name)."""
    spec = importlib.util.spec_from_file_location("_bitdefense_reference", _HERE / "reference.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ref = _reference()


def dataset() -> dict[str, Any]:
    """The shipped transactions, storage writes and invariants (hex strings as in the JSON)."""
    return json.loads((_HERE / "dataset.json").read_text(encoding="utf-8"))


def _word(h: str) -> bytes:
    return bytes.fromhex(h[2:]).rjust(32, b"\0")


def invariant_rows(ds: dict[str, Any]) -> list[list[Any]]:
    """The dataset's invariants as bundle rows [contract, op, target, slot]."""
    return [[i["contract"], i["op"], _word(i["target"]), _word(i["slot"])] for i in ds["invariants"]]


def write_rows(tx: dict[str, Any]) -> list[list[Any]]:
    """A transaction's storage writes as bundle rows [contract, slot, value]."""
    return [[w["contract"], _word(w["slot"]), _word(w["value"])] for w in tx["writes"]]


def simulate(
    seed: int,
    *,
    rounds: int = 30,
    kinds: tuple[str, ...] = ("honest", "honest", "honest", "safe", "safe", "random", "random"),
    honeypot_share: float = 0.3,
    latency_ms: int | None = None,
) -> bytes:
    """An evidence bundle (canonical CBOR) of `rounds` rounds; UID i is a miner of kind `kinds[i]`.

    `latency_ms` gives every answer the same latency, to look at accuracy alone."""
    rng = random.Random(seed)
    ds = dataset()
    invs = invariant_rows(ds)
    parsed_invs = [(c, op, int.from_bytes(t, "big"), int.from_bytes(s, "big")) for c, op, t, s in invs]
    out_rounds = []
    for _ in range(rounds):
        tx = rng.choice(ds["transactions"])
        writes = write_rows(tx)
        truth = ref.oracle(
            parsed_invs, [(c, int.from_bytes(s, "big"), int.from_bytes(v, "big")) for c, s, v in writes]
        )
        k = min(len(kinds), rng.choice([3, 5, 7, 9]))
        responses = []
        for uid in sorted(rng.sample(range(len(kinds)), k)):
            kind = kinds[uid]
            if kind == "honest":
                responses.append([uid, list(truth), rng.randint(400, 2400)])
            elif kind == "safe":
                responses.append([uid, [1] * len(invs), rng.randint(30, 90)])
            elif rng.random() < 0.2:
                responses.append([uid, None, 12_000])
            else:
                responses.append([uid, [rng.randint(0, 1) for _ in invs], rng.randint(100, 6000)])
        if latency_ms is not None:
            responses = [[u, o, latency_ms if o is not None else lat] for u, o, lat in responses]
        honeypot = rng.random() < honeypot_share
        out_rounds.append([tx["hash"], invs, writes if honeypot else None, responses])
    return ref.bundle([f"5SimDefender{i:03d}" for i in range(len(kinds))], out_rounds)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    data = simulate(a.seed, rounds=a.rounds)
    a.out.write_bytes(data)
    print(f"{len(data)} bytes -> {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
