"""Python reference for seeded-sort: the module's score for every (task, submission, seed).

`seed` is what `platform.seed` returns (`challenge test --seed HEX`); `challenge build` checks the
vectors with the all-zero seed, the sandbox's default. Tests compare other seeds too.
"""

from __future__ import annotations

SCORE_ONE = 1_000_000_000
MAX_COMPARATORS = 128
M64 = (1 << 64) - 1


class SplitMix64:
    """The module's generator, bit for bit."""

    def __init__(self) -> None:
        self.state = 0

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & M64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)


def instances(seed: bytes, n: int, trials: int) -> list[list[int]]:
    """The instances an evaluation draws: the seed's four LE words absorbed, then n bytes a trial."""
    rng = SplitMix64()
    for w in range(0, 32, 8):
        rng.state ^= int.from_bytes(seed[w : w + 8], "little")
        rng.state = rng.next()
    return [[rng.next() & 0xFF for _ in range(n)] for _ in range(trials)]


def score(task: bytes, sub: bytes, seed: bytes = bytes(32)) -> int:
    if len(task) != 2 or not 2 <= task[0] <= 16 or task[1] == 0:
        return -3
    if not sub or len(sub) % 2 or len(sub) > 2 * MAX_COMPARATORS:
        return -1
    n, trials = task[0], task[1]
    pairs = [(sub[k], sub[k + 1]) for k in range(0, len(sub), 2)]
    if any(i >= j or j >= n for i, j in pairs):
        return -2
    sorted_count = 0
    for v in instances(seed, n, trials):
        for i, j in pairs:
            if v[i] > v[j]:
                v[i], v[j] = v[j], v[i]
        sorted_count += all(v[k - 1] <= v[k] for k in range(1, n))
    return SCORE_ONE * sorted_count // trials


def bubble(n: int) -> bytes:
    """A correct (if long) sorting network: bubble sort, n(n-1)/2 comparators."""
    return bytes(b for p in range(n - 1) for i in range(n - 1 - p) for b in (i, i + 1))


def vector_cases() -> list[tuple[str, bytes, bytes]]:
    task = bytes([8, 200])
    return [
        ("bubble-sorts-everything", task, bubble(8)),
        ("missing-last-comparator", task, bubble(8)[:-2]),
        ("one-comparator", task, bytes([0, 1])),
        ("empty", task, b""),
        ("odd-length", task, b"\x00"),
        ("out-of-range", task, bytes([0, 8])),
        ("reversed-pair", task, bytes([1, 0])),
        ("bad-task", b"\x01\x05", bubble(8)),
    ]
