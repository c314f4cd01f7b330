"""Hashes used across the protocol: SHA-256 over canonical bytes."""

from __future__ import annotations

import hashlib

HASH_SIZE = 32


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def short_hex(digest: bytes, n: int = 8) -> str:
    """A short hex prefix for logs; never used for identity."""
    return digest.hex()[:n]
