"""Python reference for maxsat: the same parsing and scoring rules as maxsat.wat."""

from __future__ import annotations

import random

SCORE_ONE = 1_000_000_000


def score(task: bytes, sub: bytes) -> int:
    if len(task) < 8:
        return -3
    nv = int.from_bytes(task[0:4], "little")
    nc = int.from_bytes(task[4:8], "little")
    if nv == 0 or nv > 1_000_000 or nc == 0:
        return -3
    if len(sub) != (nv + 7) // 8:
        return -1
    pos = 8
    nsat = 0
    for _ in range(nc):
        if pos + 4 > len(task):
            return -3
        k = int.from_bytes(task[pos : pos + 4], "little")
        pos += 4
        if k == 0 or k > 64 or pos + 4 * k > len(task):
            return -3
        sat = False
        for j in range(k):
            lit = int.from_bytes(task[pos + 4 * j : pos + 4 * j + 4], "little", signed=True)
            v = abs(lit)
            if v == 0 or v > nv:
                return -3
            bit = (sub[(v - 1) >> 3] >> ((v - 1) & 7)) & 1
            if bit == (1 if lit > 0 else 0):
                sat = True
        nsat += sat
        pos += 4 * k
    if pos != len(task):
        return -3
    return nsat * SCORE_ONE // nc


def make_task(nvars: int, nclauses: int, k: int, seed: int) -> bytes:
    """A random k-SAT instance (what a subnet would derive from the block seed)."""
    rng = random.Random(seed)
    out = bytearray(nvars.to_bytes(4, "little") + nclauses.to_bytes(4, "little"))
    for _ in range(nclauses):
        out += k.to_bytes(4, "little")
        for v in rng.sample(range(1, nvars + 1), k):
            out += (v if rng.random() < 0.5 else -v).to_bytes(4, "little", signed=True)
    return bytes(out)


def assignment(bits: list[bool]) -> bytes:
    out = bytearray((len(bits) + 7) // 8)
    for i, b in enumerate(bits):
        if b:
            out[i >> 3] |= 1 << (i & 7)
    return bytes(out)


def vector_cases() -> list[tuple[str, bytes, bytes]]:
    rng = random.Random(11)
    cases: list[tuple[str, bytes, bytes]] = []
    for nv, nc, k, seed in ((20, 85, 3, 1), (100, 420, 3, 2), (50, 500, 5, 3)):
        task = make_task(nv, nc, k, seed)
        for i in range(3):
            cases.append(
                (f"v{nv}-c{nc}-k{k}-random{i}", task, assignment([rng.random() < 0.5 for _ in range(nv)]))
            )
        cases.append((f"v{nv}-c{nc}-k{k}-all-false", task, assignment([False] * nv)))
    t = make_task(9, 10, 2, 4)
    cases += [
        ("padding-bits-ignored", t, bytes([0x00, 0xFE])),
        ("wrong-size", t, bytes(1)),
        ("task-short", b"\x01\0\0", b""),
        ("task-no-vars", bytes(8), b""),
        ("task-no-clauses", (3).to_bytes(4, "little") + bytes(4), b"\0"),
        ("task-trailing", t + b"\0", bytes(2)),
        ("task-truncated", t[:-2], bytes(2)),
        ("task-k-zero", (3).to_bytes(4, "little") + (1).to_bytes(4, "little") + bytes(4), b"\0"),
        (
            "task-lit-zero",
            (3).to_bytes(4, "little") + (1).to_bytes(4, "little") + (1).to_bytes(4, "little") + bytes(4),
            b"\0",
        ),
        (
            "task-lit-out-of-range",
            (3).to_bytes(4, "little")
            + (1).to_bytes(4, "little")
            + (1).to_bytes(4, "little")
            + (4).to_bytes(4, "little"),
            b"\0",
        ),
        (
            "task-lit-int-min",
            (3).to_bytes(4, "little")
            + (1).to_bytes(4, "little")
            + (1).to_bytes(4, "little")
            + (0x80000000).to_bytes(4, "little"),
            b"\0",
        ),
        (
            "single-clause-sat",
            (1).to_bytes(4, "little")
            + (1).to_bytes(4, "little")
            + (1).to_bytes(4, "little")
            + (-1).to_bytes(4, "little", signed=True),
            b"\0",
        ),
    ]
    return cases
