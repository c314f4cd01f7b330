"""BitDefense on a running network: each epoch's rounds, miners' verdicts, and the evidence bundle.

The original validator picks transactions, queries miners over dendrite and times their answers.
On this platform an epoch's rounds are a pure function of the epoch and its *seed* (`epoch_rounds`):
the seed is decided (a hash of the block before the epoch's first block, `pipeline.evidence.
epoch_seed`), so every validator derives the same rounds without a message and miners read it from
any validator's `/api/status` (`epoch_seed`), but nobody knows it before the epoch's previous block
is decided. Each round's transaction is one of the dataset's shapes with its written values drawn
from the seed (around the invariants' targets, so verdicts vary), under a fresh hash: the dataset's
expected verdicts are never used, so a miner cannot look answers up; it has to run the rule on the
writes (what the original's engine does by executing the transaction). A miner answers
a round with a signed submission whose payload is `[round_index, verdicts | null]` (canonical CBOR);
each validator attests the latency it observed for that submission (milliseconds from the moment it
decided the epoch's first block to the moment the submission reached it), and the stake-weighted
median of those attestations is the agreed latency (`reference.agreed_latency`'s rule, applied by
the pipeline). `build_bundle` turns the decided answers into the module's input.

Honeypot rounds (a share of them, chosen by the same hash) carry the transaction's recorded storage
writes, so the ground truth comes from the rule and an always-"safe" miner is exposed.

Limitation: the leader of the epoch's previous block can choose that block's contents among the
items it holds and so try a few seeds; which rounds an epoch gets is then not uniformly random
(each candidate is still a fresh draw of values that no miner saw before that block).
"""

from __future__ import annotations

import hashlib
import importlib.util
import random
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from wire.cbor import dumps, loads
from wire.errors import WireError

_HERE = Path(__file__).resolve().parent
ROUNDS_PER_EPOCH = 4  # the platform admits at most 4 submissions per miner, challenge and epoch
HONEYPOT_PER_256 = 77  # ~30% of rounds carry their storage writes
MINER_KINDS = ("honest", "safe", "random")


def _load(name: str) -> ModuleType:
    """A sibling module of this challenge (the directory name has dashes, so not importable by name)."""
    spec = importlib.util.spec_from_file_location(f"_bitdefense_{name}", _HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


sim = _load("simulator")
ref = sim.ref
_DATASET = sim.dataset()
INVARIANTS = sim.invariant_rows(_DATASET)
_PARSED_INVARIANTS = [
    (c, op, int.from_bytes(t, "big"), int.from_bytes(s, "big")) for c, op, t, s in INVARIANTS
]


def epoch_rounds(epoch: int, seed: bytes) -> list[dict[str, Any]]:
    """The epoch's rounds from its decided seed: transaction hash, writes, whether it is a honeypot,
    and the rule's verdicts (`truth`: for the honest simulated miner and tests; the module derives
    the ground truth itself, and no shipped answer is used)."""
    if len(seed) != 32:
        raise ValueError("an epoch seed is 32 bytes")
    txs = _DATASET["transactions"]
    out = []
    for i in range(ROUNDS_PER_EPOCH):
        h = hashlib.sha256(
            b"bt-platform/bitdefense/round/2" + seed + epoch.to_bytes(8, "big") + bytes([i])
        ).digest()
        shape = txs[int.from_bytes(h[:8], "big") % len(txs)]
        writes = [_drawn(w, h, j) for j, w in enumerate(sim.write_rows(shape))]
        truth = ref.oracle(
            _PARSED_INVARIANTS,
            [(c.lower(), int.from_bytes(s, "big"), int.from_bytes(v, "big")) for c, s, v in writes],
        )
        tx = "0x" + hashlib.sha256(b"bt-platform/bitdefense/tx/1" + h).hexdigest()
        out.append({"tx": tx, "writes": writes, "honeypot": h[8] < HONEYPOT_PER_256, "truth": truth})
    return out


def _drawn(write: list[Any], round_hash: bytes, j: int) -> list[Any]:
    """A write with its value drawn from the round's hash: to a slot an invariant watches, the
    dataset's value, the target itself, or a value just above or below it; other slots keep theirs."""
    contract, slot, value = write
    watched = [t for c, _op, t, s in INVARIANTS if c.lower() == contract.lower() and s == slot]
    if not watched:
        return [contract, slot, value]
    r = hashlib.sha256(round_hash + j.to_bytes(4, "big")).digest()
    target = int.from_bytes(watched[-1], "big")
    step = 1 + int.from_bytes(r[1:9], "big") % max(target // 4, 1)
    choice = r[0] % 4
    if choice == 0:
        v = int.from_bytes(value, "big")
    elif choice == 1:
        v = target
    elif choice == 2:
        v = min(target + step, (1 << 256) - 1)
    else:
        v = max(target - step, 0)
    return [contract, slot, v.to_bytes(32, "big")]


def answer(kind: str, epoch: int, seed: bytes, round_index: int, miner: int) -> bytes:
    """A simulated miner's payload: the w3 rule on the round's writes (`honest`), always safe
    (`safe`) or coin flips."""
    truth = epoch_rounds(epoch, seed)[round_index]["truth"]
    if kind == "honest":
        verdicts: list[int] | None = list(truth)
    elif kind == "safe":
        verdicts = [1] * len(truth)
    else:
        rng = random.Random(f"{epoch}/{round_index}/{miner}")
        verdicts = None if rng.random() < 0.2 else [rng.randint(0, 1) for _ in truth]
    return dumps([round_index, verdicts])


def parse_answer(payload: bytes) -> tuple[int, list[int] | None] | None:
    """`[round_index, verdicts | null]`, or None for anything else (it then counts as no answer)."""
    try:
        doc = loads(payload, 4096, plain_check=False)
    except WireError:
        return None
    if not isinstance(doc, list) or len(doc) != 2 or type(doc[0]) is not int:
        return None
    if not 0 <= doc[0] < ROUNDS_PER_EPOCH:
        return None
    out = doc[1]
    if out is not None and (not isinstance(out, list) or any(type(v) is not int for v in out)):
        return None
    return doc[0], out


def build_bundle(
    epoch: int, seed: bytes, hotkeys: list[str], answers: list[tuple[int, int, bytes, int]]
) -> bytes:
    """The module's input for one epoch (and its decided seed) from decided answers: (uid, height,
    payload, latency_ms).

    A miner's first answer to a round counts (lowest height, then input order, which the caller
    makes canonical); malformed payloads count as no answer, exactly as an empty dendrite reply."""
    rounds = epoch_rounds(epoch, seed)
    responses: list[dict[int, list[Any]]] = [{} for _ in rounds]
    for uid, _height, payload, latency in sorted(answers, key=lambda a: (a[1], a[0])):
        parsed = parse_answer(payload)
        if parsed is None:
            continue
        idx, verdicts = parsed
        responses[idx].setdefault(uid, [uid, verdicts, latency])
    doc = [
        [
            r["tx"],
            INVARIANTS,
            r["writes"] if r["honeypot"] else None,
            [responses[i][u] for u in sorted(responses[i])],
        ]
        for i, r in enumerate(rounds)
    ]
    return ref.bundle(hotkeys, doc)
