"""Python reference for tsp-tour: the same rules as tsp.zig, plus a task generator and a 2-opt improver
(what a miner might run) used to make the test vectors."""

from __future__ import annotations

import math
import random

SCORE_ONE = 1_000_000_000
MAX_N = 4096
MAX_COORD = 1 << 20


def _points(task: bytes) -> list[tuple[int, int]] | None:
    if len(task) < 4:
        return None
    n = int.from_bytes(task[:4], "little")
    if n < 2 or n > MAX_N or len(task) != 4 + 8 * n:
        return None
    pts = []
    for i in range(n):
        x = int.from_bytes(task[4 + 8 * i : 8 + 8 * i], "little")
        y = int.from_bytes(task[8 + 8 * i : 12 + 8 * i], "little")
        if x >= MAX_COORD or y >= MAX_COORD:
            return None
        pts.append((x, y))
    return pts


def dist(a: tuple[int, int], b: tuple[int, int]) -> int:
    return math.isqrt((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2)


def tour_length(pts: list[tuple[int, int]], tour: list[int]) -> int:
    return sum(dist(pts[tour[i - 1]], pts[tour[i]]) for i in range(len(tour)))


def nearest_neighbour(pts: list[tuple[int, int]]) -> list[int]:
    n = len(pts)
    seen = [False] * n
    seen[0] = True
    tour = [0]
    cur = 0
    for _ in range(1, n):
        best, best_d = n, None
        for j in range(n):
            if not seen[j]:
                d = dist(pts[cur], pts[j])
                if best_d is None or d < best_d:
                    best, best_d = j, d
        seen[best] = True
        tour.append(best)
        cur = best
    return tour


def score(task: bytes, sub: bytes) -> int:
    pts = _points(task)
    if pts is None:
        return -3
    n = len(pts)
    if len(sub) != 2 * n:
        return -1
    tour = [int.from_bytes(sub[2 * i : 2 * i + 2], "little") for i in range(n)]
    if any(c >= n for c in tour) or len(set(tour)) != n:
        return -2
    length = tour_length(pts, tour)
    base = tour_length(pts, nearest_neighbour(pts))
    if length == 0:
        return SCORE_ONE
    return min(SCORE_ONE, (SCORE_ONE // 2) * base // length)


def make_task(n: int, seed: int, spread: int = MAX_COORD - 1) -> bytes:
    rng = random.Random(seed)
    out = bytearray(n.to_bytes(4, "little"))
    for _ in range(n):
        out += rng.randint(0, spread).to_bytes(4, "little") + rng.randint(0, spread).to_bytes(4, "little")
    return bytes(out)


def encode_tour(tour: list[int]) -> bytes:
    return b"".join(c.to_bytes(2, "little") for c in tour)


def two_opt(pts: list[tuple[int, int]], tour: list[int], rounds: int = 3) -> list[int]:
    tour = list(tour)
    n = len(tour)
    for _ in range(rounds):
        improved = False
        for i in range(n - 1):
            for j in range(i + 2, n if i else n - 1):
                a, b, c, d = pts[tour[i]], pts[tour[i + 1]], pts[tour[j]], pts[tour[(j + 1) % n]]
                if dist(a, c) + dist(b, d) < dist(a, b) + dist(c, d):
                    tour[i + 1 : j + 1] = reversed(tour[i + 1 : j + 1])
                    improved = True
        if not improved:
            break
    return tour


def vector_cases() -> list[tuple[str, bytes, bytes]]:
    cases: list[tuple[str, bytes, bytes]] = []
    for n, seed in ((8, 1), (60, 2), (200, 3)):
        task = make_task(n, seed)
        pts = _points(task)
        assert pts is not None
        nn = nearest_neighbour(pts)
        cases.append((f"n{n}-identity", task, encode_tour(list(range(n)))))
        cases.append((f"n{n}-nearest-neighbour", task, encode_tour(nn)))
        cases.append((f"n{n}-two-opt", task, encode_tour(two_opt(pts, nn))))
    clustered = make_task(30, 9, spread=50)  # many ties in integer distances
    cases.append(("clustered-reversed", clustered, encode_tour(list(range(29, -1, -1)))))
    same = (3).to_bytes(4, "little") + (b"\x05\0\0\0\x05\0\0\0" * 3)
    cases.append(("all-same-point", same, encode_tour([0, 1, 2])))
    t8 = make_task(8, 1)
    cases += [
        ("wrong-size", t8, encode_tour(list(range(7)))),
        ("duplicate-city", t8, encode_tour([0, 1, 2, 3, 4, 5, 6, 6])),
        ("city-out-of-range", t8, encode_tour([0, 1, 2, 3, 4, 5, 6, 8])),
        ("task-one-city", (1).to_bytes(4, "little") + bytes(8), encode_tour([0])),
        ("task-truncated", t8[:-1], encode_tour(list(range(8)))),
        (
            "task-coord-too-big",
            (2).to_bytes(4, "little") + (1 << 20).to_bytes(4, "little") + bytes(12),
            encode_tour([0, 1]),
        ),
        ("task-empty", b"", b""),
    ]
    return cases
