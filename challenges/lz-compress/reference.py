"""Python reference for lz-compress: the same scoring rules as challenge.c, plus a greedy encoder
that miners (and the test vectors) can use to produce valid submissions."""

from __future__ import annotations

SCORE_ONE = 1_000_000_000
MIN_MATCH, MAX_MATCH, MAX_LITERALS, MAX_DIST = 3, 130, 128, 65535


def score(task: bytes, sub: bytes) -> int:
    if not task:
        return -3
    out = 0
    i = 0
    while i < len(sub):
        b = sub[i]
        i += 1
        if b < 0x80:
            n = b + 1
            if n > len(sub) - i:
                return -1
            if n > len(task) - out or sub[i : i + n] != task[out : out + n]:
                return -2
            out += n
            i += n
        else:
            n = (b & 0x7F) + 3
            if len(sub) - i < 2:
                return -1
            d = sub[i] | sub[i + 1] << 8
            i += 2
            if d == 0 or d > out:
                return -1
            if n > len(task) - out:
                return -2
            if any(task[out + k - d] != task[out + k] for k in range(n)):
                return -2
            out += n
    if out != len(task):
        return -2
    if len(sub) >= len(task):
        return 0
    return SCORE_ONE * (len(task) - len(sub)) // len(task)


def encode(data: bytes, window: int = 4096) -> bytes:
    """Greedy LZ77 with a hash of 3-byte prefixes: valid, not optimal (room for miners to do better)."""
    out = bytearray()
    lits = bytearray()
    heads: dict[bytes, int] = {}
    i = 0

    def flush() -> None:
        for k in range(0, len(lits), MAX_LITERALS):
            chunk = lits[k : k + MAX_LITERALS]
            out.append(len(chunk) - 1)
            out.extend(chunk)
        lits.clear()

    while i < len(data):
        best_len = best_d = 0
        key = data[i : i + 3]
        j = heads.get(key) if len(key) == 3 else None
        if j is not None and 0 < i - j <= min(window, MAX_DIST):
            n = 0
            while n < MAX_MATCH and i + n < len(data) and data[j + n] == data[i + n]:
                n += 1
            if n >= MIN_MATCH:
                best_len, best_d = n, i - j
        if len(key) == 3:
            heads[key] = i
        if best_len:
            flush()
            out.append(0x80 | (best_len - 3))
            out += best_d.to_bytes(2, "little")
            for k in range(i + 1, i + best_len):
                if k + 3 <= len(data):
                    heads[data[k : k + 3]] = k
            i += best_len
        else:
            lits.append(data[i])
            i += 1
    flush()
    return bytes(out)


_TEXT = (
    b"Bittensor validators score miners; every validator must reproduce the same score. "
    b"A compression challenge is easy to verify and hard to game: decompress, compare, count bytes. "
)


def vector_cases() -> list[tuple[str, bytes, bytes]]:
    import random

    rng = random.Random(7)
    noise = bytes(rng.randrange(256) for _ in range(600))
    text = _TEXT * 8
    log = b"".join(
        b"2026-11-22T04:%02d:%02d INFO block=%d peers=%d\n" % (i // 60, i % 60, 4000 + i, 7 + i % 3)
        for i in range(60)
    )
    good = encode(text)
    cases = [
        ("text-greedy", text, good),
        ("log-greedy", log, encode(log)),
        ("log-small-window", log, encode(log, window=64)),
        ("noise-literals", noise, encode(noise)),  # incompressible: correct but no saving -> 0
        ("runs", b"a" * 1000 + b"b" * 1000, encode(b"a" * 1000 + b"b" * 1000)),
        ("empty-submission", text, b""),
        ("literal-only", b"hello", bytes([4]) + b"hello"),
        ("wrong-bytes", text, bytes([good[0]]) + b"X" + good[2:]),
        ("truncated-literal", b"hello world", bytes([10]) + b"hello"),
        ("bad-distance", b"abcabc", bytes([2]) + b"abc" + bytes([0x80, 9, 0])),
        ("zero-distance", b"abcabc", bytes([2]) + b"abc" + bytes([0x80, 0, 0])),
        ("match-too-long", b"abcabc", bytes([2]) + b"abc" + bytes([0x85, 3, 0])),
        ("truncated-match", b"abcabc", bytes([2]) + b"abc" + bytes([0x80, 3])),
        ("overlapping-match", b"ababababab", bytes([1]) + b"ab" + bytes([0x85, 2, 0])),
        ("output-too-long", b"abc", bytes([3]) + b"abcd"),
        ("empty-task", b"", b""),
    ]
    return cases
